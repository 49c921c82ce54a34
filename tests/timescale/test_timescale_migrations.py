"""``sql/`` on a real TimescaleDB: hypertables, continuous aggregates and policies as the files declare.

The embedded PostgreSQL of the rest of the suite has no ``timescaledb`` extension, so these are
the only tests that run ``*.timescale.sql``, refresh a continuous aggregate and read the shared
views over hypertables. Expectations are read from the ``.timescale.sql`` files themselves (and
the names pinned too, so a parse that finds nothing cannot pass).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from linewatch.resources import data_path
from linewatch.storage.migrations import discover
from tests.timescale_harness import (
    PACKAGE_VERSION,
    TimescaleDB,
    TimescaleError,
    TimescaleUnavailable,
    install,
    run_on_timescale,
    timescale_migrations,
)

SQL = data_path("sql")
TIMESCALE_SQL = "\n".join(p.read_text() for p in sorted(SQL.glob("*.timescale.sql")))
#: Far enough in the past for every refresh window, inside every retention period.
BASE = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def _declared(pattern: str) -> list[tuple[str, ...]]:
    found = re.findall(pattern, TIMESCALE_SQL, flags=re.DOTALL)
    assert found, f"no {pattern!r} in sql/*.timescale.sql: the test's parse is out of date"
    return found


def _interval(db: TimescaleDB, literal: str) -> timedelta:
    return db.query("SELECT $1::interval", [literal])[2][0][0]


def _asset() -> str:
    return f"ts-test-{uuid.uuid4().hex[:8]}"


def _insert_scores(db: TimescaleDB, asset: str, rows: list[tuple[datetime, float, bool]]) -> None:
    for ts, score, anomalous in rows:
        db.query("INSERT INTO scores (ts, event_id, modality, asset_id, sku, detector, model_version, raw_score, "
                 "tail_probability, calibrated_score, threshold, is_anomaly, scored_at) "
                 "VALUES ($1, $2, 'spc', $3, 'sku-1', 'hotelling_t2', 'v1', $4, $5, $4, 3.0, $6, $1)",
                 [ts.isoformat(), str(uuid.uuid4()), asset, score, 10 ** -score, anomalous])


def test_the_migrator_s_timescale_selection_applies_and_is_recorded(timescale_db):
    files = timescale_migrations()
    names = [p.name for p in files]
    assert {"010_hypertables.timescale.sql", "020_aggregates.timescale.sql",
            "060_signals_aggregates.timescale.sql"} <= set(names)
    assert not [n for n in names if n.endswith(".plain.sql")]
    shared = {m.path.name for m in discover() if m.variant == "all"}
    assert shared <= set(names) and names == sorted(names)
    recorded = timescale_db.query("SELECT version, variant, checksum FROM schema_migrations ORDER BY version")[2]
    assert [(v, c) for v, _, c in recorded] == [(p.name[:3], hashlib.sha256(p.read_bytes()).hexdigest())
                                               for p in files]
    assert {variant for _, variant, _ in recorded} == {"all", "timescale"}
    assert timescale_db.query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")[2][0][0] \
        .startswith("2.23")


def test_hypertables_have_the_declared_time_column_chunk_interval_and_compression(timescale_db):
    declared = _declared(r"create_hypertable\('(\w+)', by_range\('(\w+)', INTERVAL '([^']+)'\)")
    assert {name for name, _, _ in declared} == {"spc_measurements", "scores", "alerts", "signal_features"}
    live = {name: (column, interval) for name, column, interval in timescale_db.query(
        "SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_schema = 'public'")[2]}
    assert live == {name: (column, _interval(timescale_db, interval)) for name, column, interval in declared}

    segmentby = {name: cols.replace(" ", "").split(",") for name, cols in _declared(
        r"ALTER TABLE (\w+) SET \(timescaledb\.compress, timescaledb\.compress_segmentby = '([^']+)'\)")}
    rows = timescale_db.query("SELECT hypertable_name, attname FROM timescaledb_information.compression_settings "
                              "WHERE segmentby_column_index IS NOT NULL ORDER BY hypertable_name, "
                              "segmentby_column_index")[2]
    live_segmentby: dict[str, list[str]] = {}
    for name, column in rows:
        live_segmentby.setdefault(name, []).append(column)
    assert live_segmentby == segmentby and "alerts" not in segmentby


@pytest.mark.parametrize(("proc", "key", "pattern"), [
    ("policy_compression", "compress_after", r"add_compression_policy\('(\w+)', INTERVAL '([^']+)'"),
    ("policy_retention", "drop_after", r"add_retention_policy\('(\w+)', INTERVAL '([^']+)'"),
], ids=["compression", "retention"])
def test_compression_and_retention_policies_are_the_declared_ones(timescale_db, proc, key, pattern):
    declared = {name: _interval(timescale_db, interval) for name, interval in _declared(pattern)}
    assert set(declared) == {"spc_measurements", "scores", "signal_features"}
    live = dict(timescale_db.query(f"SELECT hypertable_name, (config ->> '{key}')::interval "
                                   "FROM timescaledb_information.jobs WHERE proc_name = $1", [proc])[2])
    assert live == declared


def test_continuous_aggregates_and_their_refresh_policies_are_the_declared_ones(timescale_db):
    views = dict(_declared(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\s+"
                           r"WITH \(timescaledb\.continuous, timescaledb\.materialized_only = (\w+)\)"))
    assert set(views) == {"scores_1m", "spc_1h", "signal_features_1m"}
    live = dict(timescale_db.query("SELECT view_name, materialized_only "
                                   "FROM timescaledb_information.continuous_aggregates")[2])
    assert live == {name: only == "true" for name, only in views.items()}

    policies = _declared(r"add_continuous_aggregate_policy\('(\w+)',\s*start_offset => INTERVAL '([^']+)', "
                         r"end_offset => INTERVAL '([^']+)',\s*schedule_interval => INTERVAL '([^']+)'")
    live_policies = {name: (start, end, every) for name, start, end, every in timescale_db.query(
        "SELECT hypertable_name, (config ->> 'start_offset')::interval, (config ->> 'end_offset')::interval, "
        "schedule_interval FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate'")[2]}
    assert live_policies == {name: tuple(_interval(timescale_db, i) for i in intervals)
                             for name, *intervals in policies}


def _materialized_rows(db: TimescaleDB, view: str, asset: str) -> int:
    table = db.query("SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "
                     "FROM timescaledb_information.continuous_aggregates WHERE view_name = $1", [view])[2][0][0]
    return db.query(f"SELECT count(*) FROM {table} WHERE asset_id = $1", [asset])[2][0][0]


def test_scores_1m_after_a_refresh_and_in_real_time_after_it(timescale_db):
    asset = _asset()
    _insert_scores(timescale_db, asset, [(BASE + timedelta(seconds=5), 1.0, False),
                                         (BASE + timedelta(seconds=40), 4.0, True),
                                         (BASE + timedelta(minutes=1, seconds=2), 2.0, False)])
    timescale_db.execute("CALL refresh_continuous_aggregate('scores_1m', '2026-01-05 09:00+00', '2026-01-05 11:00+00')")
    assert _materialized_rows(timescale_db, "scores_1m", asset) == 2
    _insert_scores(timescale_db, asset, [(BASE + timedelta(minutes=2), 5.0, True)])  # after the refresh
    _, types, rows = run_on_timescale(
        timescale_db, f"SELECT bucket, n_events, n_anomalies, mean_calibrated_score, max_calibrated_score "
                      f"FROM scores_1m WHERE asset_id = '{asset}' ORDER BY bucket")
    assert types == ["timestamptz", "int8", "int8", "float8", "float8"]
    assert rows == [(BASE, 2, 1, 2.5, 4.0), (BASE + timedelta(minutes=1), 1, 0, 2.0, 2.0),
                    (BASE + timedelta(minutes=2), 1, 1, 5.0, 5.0)]  # the last one not materialized: real time
    assert _materialized_rows(timescale_db, "scores_1m", asset) == 2


def test_signal_features_1m_and_spc_1h_refresh_from_their_hypertables(timescale_db):
    asset = _asset()
    for i, (rms, quality) in enumerate([(1.0, "{}"), (3.0, "{clipped}"), (2.0, "{}")]):
        timescale_db.query(
            "INSERT INTO signal_features (ts, event_id, asset_id, sensor, kind, unit, sample_rate_hz, n_samples, "
            "mean, rms, peak, crest_factor, kurtosis, skewness, spectral_centroid_hz, features, quality) "
            "VALUES ($1, $2, $3, 'vib-1', 'vibration', 'g', 1000, 256, 0.1, $4, $5, 2.0, 3.0, 0.0, 120.0, "
            "'{}'::jsonb, $6::text[])",
            [(BASE + timedelta(seconds=10 * i)).isoformat(), str(uuid.uuid4()), asset, rms, 2 * rms, quality])
    for i, value in enumerate([10.0, 10.2, 9.8, 10.4]):
        timescale_db.query("INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, shift, "
                           "characteristic, value) VALUES ($1, $2, $3, 'sku-1', $4, 'A', 'bore_mm', $5)",
                           [(BASE + timedelta(minutes=7 * i)).isoformat(), str(uuid.uuid4()), asset, f"p{i}", value])
    for view in ("signal_features_1m", "spc_1h"):
        timescale_db.execute(f"CALL refresh_continuous_aggregate('{view}', '2026-01-05 00:00+00', "
                             "'2026-01-06 00:00+00')")
        assert _materialized_rows(timescale_db, view, asset) == 1

    _, types, rows = run_on_timescale(
        timescale_db, "SELECT bucket, n_windows, n_samples, n_quality_issues, mean_rms, max_rms, max_peak "
                      f"FROM signal_features_1m WHERE asset_id = '{asset}'")
    assert types == ["timestamptz", "int8", "int8", "int8", "float8", "float8", "float8"]
    assert rows == [(BASE, 3, 768, 1, 2.0, 3.0, 6.0)]
    _, _, rows = run_on_timescale(
        timescale_db, f"SELECT bucket, n, mean, min, max FROM spc_1h WHERE asset_id = '{asset}'")
    assert rows == [(BASE, 4, pytest.approx(10.1), 9.8, 10.4)]


def test_time_bucket_on_a_hypertable_groups_as_a_panel_would(timescale_db):
    asset = _asset()
    _insert_scores(timescale_db, asset, [(BASE + timedelta(minutes=m), float(m), m >= 6) for m in range(10)])
    _, types, rows = run_on_timescale(
        timescale_db, "SELECT time_bucket(INTERVAL '5 minutes', ts) AS time, count(*) AS n, "
                      "count(*) FILTER (WHERE is_anomaly) AS anomalies, max(calibrated_score) AS max_score "
                      f"FROM scores WHERE asset_id = '{asset}' AND ts >= '2026-01-05 10:00+00' "
                      "AND ts < '2026-01-05 11:00+00' GROUP BY 1 ORDER BY 1")
    assert types == ["timestamptz", "int8", "int8", "float8"]
    assert rows == [(BASE, 5, 0, 4.0), (BASE + timedelta(minutes=5), 5, 4, 9.0)]


def test_the_shared_views_answer_the_reader_over_hypertables(timescale_db):
    asset, alert = _asset(), str(uuid.uuid4())
    for state, minutes, severity in [("open", 0, "warning"), ("update", 3, "critical")]:
        timescale_db.query("INSERT INTO alerts (ts, alert_id, state, asset_id, severity, opened_at, score, modalities, "
                           "contributors, route) VALUES ($1, $2, $3, $4, $5, $6, $7, '{spc,signals}', "
                           "'[{\"name\": \"bore_mm\", \"share\": 0.7}]'::jsonb, 'quality')",
                           [(BASE + timedelta(minutes=minutes)).isoformat(), alert, state, asset, severity,
                            BASE.isoformat(), 3.0 + minutes])
    values = [10.0, 10.1, 9.9, 10.0, 10.05, 9.95] * 5
    timescale_db.query("INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, characteristic, value) "
                       "SELECT $1::timestamptz + (i - 1) * INTERVAL '1 second', gen_random_uuid(), $2, 'sku-1', "
                       "'p' || i, 'width_mm', v FROM unnest($3::float8[]) WITH ORDINALITY AS u (v, i)",
                       [BASE.isoformat(), asset, "{" + ",".join(map(str, values)) + "}"])

    _, _, rows = run_on_timescale(timescale_db, "SELECT alert_id::text, last_state, max_severity, max_score, n_events, "
                                                f"modalities FROM open_alerts WHERE asset_id = '{asset}'")
    assert rows == [(alert, "update", "critical", 6.0, 2, ["spc", "signals"])]
    _, _, rows = run_on_timescale(timescale_db, "SELECT opened_at, last_contributors FROM alert_incidents "
                                                f"WHERE asset_id = '{asset}'")
    assert rows == [(BASE, [{"name": "bore_mm", "share": 0.7}])]
    _, types, rows = run_on_timescale(timescale_db, "SELECT seq, in_baseline, center_line, baseline_n "
                                                    f"FROM spc_individuals_chart WHERE asset_id = '{asset}' "
                                                    "ORDER BY seq")
    assert types == ["int8", "bool", "float8", "int8"]
    assert len(rows) == len(values) and rows[-1][1] is False
    assert rows[-1][2] == pytest.approx(sum(values[:25]) / 25) and rows[-1][3] == 25


def test_every_view_answers_on_timescale(timescale_db):
    views = [name for (name,) in timescale_db.query(
        "SELECT format('%I.%I', schemaname, viewname) FROM pg_views "
        "WHERE schemaname IN ('public', 'replay') ORDER BY 1")[2]]
    assert {"public.open_alerts", "public.alert_incidents", "public.spc_individuals_chart",
            "public.drift_latest", "public.champion_challenger"} <= set(views)
    for view in views:
        columns, types, _ = timescale_db.query(f"SELECT * FROM {view} LIMIT 0")
        assert columns and None not in types, view


def test_the_reader_role_cannot_write_and_errors_carry_postgres_text_and_the_sql(timescale_db):
    with pytest.raises(TimescaleError) as denied:
        run_on_timescale(timescale_db, "DELETE FROM scores")
    assert denied.value.sqlstate == "42501" and "permission denied for table scores" in str(denied.value)
    assert "SQL: DELETE FROM scores" in str(denied.value)
    assert timescale_db.query("SELECT current_user")[2] == [("postgres",)]  # the role was reset
    with pytest.raises(TimescaleError, match="permission denied for table model_versions"):  # 090, as written
        run_on_timescale(timescale_db, "UPDATE model_versions SET artifact_path = '/tmp/x'", role="linewatch_writer")
    with pytest.raises(TimescaleError, match=r'column "no_such_column" does not exist \(SQLSTATE 42703\)'):
        timescale_db.query("SELECT no_such_column FROM scores_1m")


def test_a_failing_migration_names_its_file_and_statement_and_a_transactional_one_leaves_nothing(
        timescale_db, tmp_path):
    bad = tmp_path / "900_bad_tx.sql"
    bad.write_text("CREATE TABLE ts_test_half_done (a int);\nSELECT time_bucket('1 minute', 'not a time');\n")
    with pytest.raises(TimescaleError, match=r"in migration 900_bad_tx\.sql") as failed:
        timescale_db.apply([bad])
    assert failed.value.file == "900_bad_tx.sql" and "ts_test_half_done" in failed.value.sql
    assert timescale_db.query("SELECT to_regclass('ts_test_half_done')")[2] == [(None,)]  # rolled back

    split = tmp_path / "901_bad_split.sql"
    split.write_text("-- linewatch: no-transaction\nSELECT 1;\nSELECT * FROM ts_test_no_such_table;\n")
    with pytest.raises(TimescaleError, match=r"ts_test_no_such_table\" does not exist") as failed:
        timescale_db.apply([split])
    assert failed.value.sql == "SELECT * FROM ts_test_no_such_table"
    assert timescale_db.query("SELECT count(*) FROM schema_migrations WHERE version IN ('900', '901')")[2] == [(0,)]


def test_values_load_as_psycopg_loads_them(timescale_db):
    columns, types, rows = timescale_db.query(
        "SELECT 9007199254740993::int8 AS big, 1.25::numeric AS n, '2026-01-05 10:00:00.123456+00'::timestamptz AS t, "
        "ARRAY[1.5, NULL]::float8[] AS a, '{\"k\": [1]}'::jsonb AS j, NULL::text AS missing, 'x'::text AS s")
    assert columns == ["big", "n", "t", "a", "j", "missing", "s"]
    assert types == ["int8", "numeric", "timestamptz", "_float8", "jsonb", "text", "text"]
    assert rows == [(9007199254740993, Decimal("1.25"), BASE.replace(microsecond=123456), [1.5, None],
                     {"k": [1]}, None, "x")]


def test_without_node_or_npm_the_install_says_so_and_the_tests_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(TimescaleUnavailable, match="node is not on PATH"):
        install(tmp_path / "cache")


def test_an_installed_package_without_node_on_path_is_unavailable(tmp_path, monkeypatch):
    (tmp_path / "node_modules" / "@unni-craftsman" / "pglite").mkdir(parents=True)
    (tmp_path / "node_modules" / "@unni-craftsman" / "pglite" / "package.json").write_text(
        json.dumps({"version": PACKAGE_VERSION}))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert install(tmp_path) == tmp_path  # installed: no npm needed
    with pytest.raises(TimescaleUnavailable, match="node is not on PATH"):
        TimescaleDB.start(tmp_path)


def _fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, node: str, npm: str) -> None:
    """``node`` and ``npm`` on PATH that run these shell lines (and nothing else is there but /bin)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, script in (("node", node), ("npm", npm)):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_a_node_older_than_pglite_needs_is_unavailable(tmp_path, monkeypatch):
    _fake_tools(tmp_path, monkeypatch, node="echo v16.20.0", npm="exit 0")
    with pytest.raises(TimescaleUnavailable, match=r"node v16\.20\.0 is too old for PGlite; install Node\.js 18\+"):
        install(tmp_path / "cache")


def test_a_failed_offline_install_is_unavailable_with_npm_s_reason(tmp_path, monkeypatch):
    _fake_tools(tmp_path, monkeypatch, node="echo v20.20.2",
                npm="echo 'npm error code ENOTFOUND registry.npmjs.org' >&2; exit 1")
    with pytest.raises(TimescaleUnavailable, match=r"failed \(exit 1\): npm error code ENOTFOUND"):
        install(tmp_path / "cache")
    assert (tmp_path / "cache" / "package-lock.json").exists()


def test_the_install_command_is_idempotent_and_offline_once_installed():
    try:
        cache = install()  # the real cache: installed by now where the other tests ran
    except TimescaleUnavailable as e:
        pytest.skip(f"no TimescaleDB here: {e}")
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "timescale_harness.py"), "install"],
                          env={"PATH": "/nonexistent", "LINEWATCH_TIMESCALE_NODE_CACHE": str(cache)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "ready in" in done.stdout, done.stderr
