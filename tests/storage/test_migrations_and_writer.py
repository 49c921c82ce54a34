"""Migrations and the COPY writer against the real embedded PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from linewatch.errors import InfrastructureError
from linewatch.schemas.drift_rows import DriftRow
from linewatch.schemas.frame_rows import FrameHeatmapRow, UnscoredFrameRow
from linewatch.schemas.rows import ROW_TYPES, ScoreRow, columns
from linewatch.schemas.signal_rows import SignalFeatureRow
from linewatch.storage.migrations import discover, migrate, select_for
from linewatch.storage.writer import BatchWriter

pytestmark = pytest.mark.integration


def test_migrations_run_twice_without_error(database_url):
    first = migrate(database_url)
    second = migrate(database_url)
    assert not first.applied and not second.applied  # the session fixture already migrated
    assert set(second.already) == {m.path.name for m in select_for(discover(), timescale=False)}
    assert not second.changed and second.timescale is False


def test_plain_and_timescale_variants_cover_the_same_versions():
    all_migrations = discover()
    plain = [m.version for m in select_for(all_migrations, timescale=False)]
    ts = [m.version for m in select_for(all_migrations, timescale=True)]
    assert plain == ts


@pytest.mark.parametrize("row_type", (*ROW_TYPES, SignalFeatureRow, FrameHeatmapRow, UnscoredFrameRow, DriftRow),
                         ids=lambda t: t.__table__)
def test_row_models_match_table_columns(database_url, row_type):
    with psycopg.connect(database_url) as conn:
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (row_type.__table__,))}
    assert set(columns(row_type)) <= cols, set(columns(row_type)) - cols


def test_views_exist_for_readers(database_url):
    with psycopg.connect(database_url) as conn:
        for view in ("anomalies", "anomaly_contributors", "deadletter_summary", "scores_1m", "spc_1h",
                     "signal_features_1m"):
            conn.execute(f"SELECT * FROM {view} LIMIT 1")
        can = conn.execute("SELECT has_table_privilege('linewatch_reader', 'anomalies', 'SELECT'), "
                           "has_table_privilege('linewatch_reader', 'scores', 'INSERT')").fetchone()
    assert can == (True, False)


def _score_row(eid: uuid.UUID) -> tuple:
    now = datetime.now(UTC)
    values = dict(ts=now, event_id=eid, modality="spc", asset_id="w1", sku="s", part_id="p", detector="d",
                  model_version="v", raw_score=1.0, tail_probability=0.5, calibrated_score=0.3, threshold=3.0,
                  is_anomaly=False, ready=True, top_feature="x",
                  explanation='[{"name": "x", "value": 1.0, "share": 1.0}]', scored_at=now)
    return tuple(values.get(c) for c in columns(ScoreRow))  # the classifier columns stay NULL


def test_writer_is_idempotent_on_natural_keys(database_url):
    rows = [_score_row(uuid.uuid4()) for _ in range(100)]
    writer = BatchWriter(database_url)
    first = writer.write({ScoreRow: rows})
    again = writer.write({ScoreRow: rows})  # a redelivered batch
    writer.close()
    assert first.inserted["scores"] == 100 and again.inserted["scores"] == 0
    assert again.offered["scores"] == 100


def test_writer_gives_up_loudly_when_the_database_is_gone():
    sleeps: list[float] = []
    writer = BatchWriter("postgresql://postgres@127.0.0.1:1/none", retry_delays=(0.1, 0.2), sleep=sleeps.append)
    with pytest.raises(InfrastructureError, match="database unavailable after 3 attempts"):
        writer.write({ScoreRow: [_score_row(uuid.uuid4())]})
    assert sleeps == [0.1, 0.2]


def test_dead_letters_at_a_reused_offset_are_kept_and_redeliveries_are_not(database_url):
    from linewatch.schemas.rows import DeadLetterRow

    topic = f"t-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    first = (now, topic, 0, 5, None, "bad", "DataError", b"one")
    other = (now, topic, 0, 5, None, "bad", "DataError", b"two")  # same offset after a broker reset
    writer = BatchWriter(database_url)
    writer.write({DeadLetterRow: [first]})
    writer.write({DeadLetterRow: [first, other]})
    writer.close()
    with psycopg.connect(database_url) as conn:
        payloads = {bytes(r[0]) for r in conn.execute(
            "SELECT payload FROM deadletters WHERE source_topic = %s", (topic,))}
    assert payloads == {b"one", b"two"}
