"""What each group role may do (sql/090_least_privilege.sql), tried with real login roles.

A login granted ``linewatch_writer`` (a worker) writes its rows the way the worker does, with
the real COPY writer, and is refused everything that would rewrite history or the model
registry; a ``linewatch_registrar`` login (the trainer) registers and deactivates a model
through the real registration path and can do nothing else; ``linewatch_reader`` only reads.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from linewatch.detectors.bundle import Scope
from linewatch.schemas.rows import ScoreRow, columns
from linewatch.storage.migrations import migrate
from linewatch.storage.writer import BatchWriter
from linewatch.training import train_and_register

pytestmark = pytest.mark.integration

#: The tables the worker fills (COPY, or the staged INSERT ... ON CONFLICT DO NOTHING).
WORKER_TABLES = ("spc_measurements", "scores", "deadletters", "signal_features", "frame_heatmaps",
                 # the fusion agent (sql/140) appends alert lifecycle events, dispositions from the topic,
                 # machine states, suppressed windows and shadow scores
                 "alerts", "dispositions", "machine_states", "alert_suppressions", "shadow_scores")
#: Tables that a worker must not write.
NOT_WORKER_TABLES = ("model_versions", "schema_migrations", "model_promotions", "maintenance_windows")


@pytest.fixture
def login(database_url: str) -> Iterator[Callable[[str], str]]:
    """``login(group)``: a new login role in ``group`` with a password; returns its URL. Dropped afterwards."""
    created: list[str] = []

    def make(group: str) -> str:
        name, password = f"lw_test_{group.removeprefix('linewatch_')}_{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), sql.Literal(password), sql.Identifier(group)))
        created.append(name)
        return make_conninfo(database_url, user=name, password=password)

    yield make
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in created:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _score_row(asset: str) -> tuple:
    now = datetime.now(UTC)
    values = dict(ts=now, event_id=uuid.uuid4(), modality="spc", asset_id=asset, sku="s", part_id="p",
                  detector="d", model_version="v", raw_score=1.0, tail_probability=0.5, calibrated_score=0.3,
                  threshold=3.0, is_anomaly=True, ready=True, top_feature="x", explanation="[]", scored_at=now)
    return tuple(values.get(c) for c in columns(ScoreRow))  # the classifier columns stay NULL


def _refused(conn: psycopg.Connection, statement: str, params: tuple = ()) -> bool:
    """Whether ``statement`` fails for lack of a privilege (rolled back either way)."""
    try:
        with conn.transaction():
            conn.execute(statement, params)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def _can(database_url: str, role: str, table: str, privilege: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)).fetchone()[0]


def test_a_worker_login_appends_rows_and_cannot_rewrite_anything(login, database_url):
    url = login("linewatch_writer")
    asset = f"lp-{uuid.uuid4().hex[:8]}"
    rows = [_score_row(asset) for _ in range(20)]
    writer = BatchWriter(url)
    try:
        assert writer.write({ScoreRow: rows}).inserted["scores"] == 20  # COPY
        assert writer.write({ScoreRow: rows}).inserted["scores"] == 0  # redelivered: temp stage + INSERT
    finally:
        writer.close()
    assert migrate(url).applied == []  # the worker's start-up check runs with these privileges

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM model_versions").fetchone() is not None  # the model cache reads
        assert _refused(conn, "UPDATE model_versions SET artifact_path = '/tmp/evil'")
        assert _refused(conn, "INSERT INTO model_versions (model_id, version, modality, detector, feature_names, "
                              "n_samples, data_hash, calibration, artifact_path) "
                              "VALUES ('x', 'x', 'spc', 'd', '{}', 1, '', '{}', '/tmp/evil')")
        assert _refused(conn, "DELETE FROM scores WHERE asset_id = %s", (asset,))
        assert _refused(conn, "UPDATE scores SET is_anomaly = false WHERE asset_id = %s", (asset,))
        assert _refused(conn, "UPDATE anomalies SET calibrated_score = 0 WHERE asset_id = %s", (asset,))  # a view
        assert _refused(conn, "TRUNCATE scores")
        assert _refused(conn, "INSERT INTO schema_migrations (version, name, variant, checksum) "
                              "VALUES ('999', 'x', 'all', 'x')")
        assert _refused(conn, "UPDATE schema_migrations SET checksum = 'x'")
        assert _refused(conn, "DELETE FROM schema_migrations")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM scores WHERE asset_id = %s AND is_anomaly",
                            (asset,)).fetchone() == (20,)


def test_the_writer_group_has_insert_only_where_workers_write(database_url):
    for table in WORKER_TABLES:
        assert _can(database_url, "linewatch_writer", table, "SELECT"), table
        assert _can(database_url, "linewatch_writer", table, "INSERT"), table
    for table in (*WORKER_TABLES, *NOT_WORKER_TABLES):
        for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
            assert not _can(database_url, "linewatch_writer", table, privilege), (table, privilege)
    for table in NOT_WORKER_TABLES:
        assert not _can(database_url, "linewatch_writer", table, "INSERT"), table
    with psycopg.connect(database_url) as conn:
        views = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm')")]
    assert "anomalies" in views
    for view in views:
        for privilege in ("INSERT", "UPDATE", "DELETE"):
            assert not _can(database_url, "linewatch_writer", view, privilege), (view, privilege)


def test_a_registrar_login_registers_and_deactivates_and_nothing_else(login, database_url, tmp_path):
    url = login("linewatch_registrar")
    X = np.random.default_rng(0).normal(size=(400, 3))
    _, ref = train_and_register(X, feature_names=["a", "b", "c"], database_url=url, model_dir=tmp_path,
                                detector="hotelling", scope=Scope(f"lp-{uuid.uuid4().hex[:8]}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE model_versions SET active = false WHERE model_id = %s AND version = %s",
                     (ref.model_id, ref.version))
        assert conn.execute("SELECT active FROM model_versions WHERE model_id = %s",
                            (ref.model_id,)).fetchone() == (False,)
        assert _refused(conn, "UPDATE model_versions SET artifact_path = '/tmp/evil' WHERE model_id = %s",
                        (ref.model_id,))
        assert _refused(conn, "UPDATE model_versions SET active = true, calibration = '{}' WHERE model_id = %s",
                        (ref.model_id,))
        assert _refused(conn, "DELETE FROM model_versions WHERE model_id = %s", (ref.model_id,))
        assert _refused(conn, "INSERT INTO scores SELECT * FROM scores LIMIT 0")
        assert _refused(conn, "DELETE FROM schema_migrations")


def test_the_reader_group_only_reads(database_url):
    with psycopg.connect(database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')")]
    for table in tables:
        for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not _can(database_url, "linewatch_reader", table, privilege), (table, privilege)
