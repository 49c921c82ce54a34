"""Every dashboard panel's and alert rule's query on a real TimescaleDB, as the read-only role.

``tests/test_dashboards.py`` runs them on the embedded PostgreSQL (plain flavour); here the same
registry is expanded for the ``timescale`` flavour (``time_bucket`` for ``$__timeGroupAlias``,
``timescale_sql`` where a query has one) and run over hypertables and real-time continuous
aggregates (``scores_1m``, ``signal_features_1m``, ``spc_1h`` are answered from raw rows not yet
materialized, as they would be between two refresh-policy runs). Columns and their types must be
the registry's, and the panels that read the fixture's rows must find them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from linewatch.dashboards.alerting import alert_queries
from linewatch.dashboards.queries import KIND_OF_OID, QUERIES, column_problems, expanded_queries
from tests.dashboard_expectations import check_fixture_rows
from tests.timescale_harness import TimescaleDB, TimescaleError, result_as, run_on_timescale

_EVENT = uuid.uuid4()  # the part (p28) every modality scored as anomalous
_EXPLANATION = json.dumps([{"name": "bore", "value": 9.0, "share": 0.7}, {"name": "depth", "value": 4.1, "share": 0.3}])


def _load_plant(db: TimescaleDB, asset: str, now: datetime) -> None:
    """A few rows in every table the dashboards read, for one asset (the plain suite's fixture, in SQL)."""
    db.query("INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, shift, characteristic, value, "
             "lsl, usl, target) SELECT $1::timestamptz - (30 - i) * INTERVAL '1 minute', "
             "CASE WHEN i = 28 THEN $3::uuid ELSE gen_random_uuid() END, $2, 'S1', 'p' || i, 'A', 'bore', "
             "11.0 + (i % 3) * 0.2 + CASE WHEN i = 28 THEN 3.0 ELSE 0 END, 9.0, 13.0, 11.0 "
             "FROM generate_series(0, 29) AS i", [now.isoformat(), asset, str(_EVENT)])
    for modality, detector in (("spc", "hotelling"), ("spc", "mewma"), ("signals", "dynamic_pca"),
                               ("frames", "patchcore")):
        db.query("INSERT INTO scores (ts, event_id, modality, asset_id, sku, part_id, detector, model_version, "
                 "raw_score, tail_probability, calibrated_score, threshold, is_anomaly, ready, top_feature, "
                 "explanation, scored_at) VALUES ($1::timestamptz - INTERVAL '2 minutes', $2, $3, $4, 'S1', 'p28', "
                 "$5, 'v1', 50, 1e-7, 7, 3, true, true, 'bore', $6::jsonb, $1)",
                 [now.isoformat(), str(_EVENT), modality, asset, detector, _EXPLANATION])
    db.query("UPDATE scores SET defect_class = 'scratch', defect_confidence = 0.9, defect_route = 'rework' "
             "WHERE asset_id = $1 AND detector = 'patchcore'", [asset])
    db.query("INSERT INTO signal_features (ts, event_id, asset_id, sensor, kind, unit, sample_rate_hz, n_samples, "
             "mean, rms, peak, crest_factor, kurtosis, skewness, features, quality) VALUES "
             "($1::timestamptz - INTERVAL '3 minutes', gen_random_uuid(), $2, 'vib-1', 'vibration', 'g', 1000, "
             "1000, 0, 1.2, 4.8, 4, 6.5, 0.1, '{}', '{flatline}')", [now.isoformat(), asset])
    db.query("INSERT INTO frame_heatmaps (ts, event_id, asset_id, camera, sku, part_id, detector, model_version, "
             "width, height, raw_score, peak_value, threshold, peak_x, peak_y, area_fraction, thumbnail) VALUES "
             "($1::timestamptz - INTERVAL '2 minutes', $2, $3, 'cam-1', 'S1', 'p28', 'patchcore', 'v1', 64, 48, "
             "2.5, 2.4, 1.2, 10, 20, 0.05, decode('89504e470d0a1a0a' || repeat('00', 100), 'hex'))",
             [now.isoformat(), str(_EVENT), asset])
    alert = str(uuid.uuid4())
    for alert_id, kind in ((alert, "anomaly"), (str(uuid.uuid4()), "retrain_recommended")):
        db.query("INSERT INTO alerts (ts, alert_id, state, asset_id, severity, opened_at, score, modalities, "
                 "contributors, kind, route, shadow) VALUES ($1::timestamptz - INTERVAL '1 minute', $2, 'open', $3, "
                 "'critical', $1::timestamptz - INTERVAL '1 minute', 6.5, '{spc,signals}', $4::jsonb, $5, "
                 "'quality', false)",
                 [now.isoformat(), alert_id, asset, json.dumps([{"name": "bore", "share": 0.8, "modality": "spc"}]),
                  kind])
    db.query("INSERT INTO dispositions (disposition_id, alert_id, verdict, operator, ts) "
             "VALUES (gen_random_uuid(), $1, 'true_defect', 'ana', $2)", [alert, now.isoformat()])
    for kind, feature, alarm_rate in (("score", "", 0.01), ("input", "bore", None)):
        db.query("INSERT INTO drift (ts, asset_id, modality, detector, model_version, kind, feature, n, psi, "
                 "ks_statistic, ks_pvalue, alarm_rate, promised_far, promised_far_low, promised_far_high, drifted, "
                 "retrain_recommended) VALUES ($1::timestamptz - INTERVAL '5 minutes', $2, 'spc', 'hotelling', "
                 "'v1', $3, $4, 500, 0.3, 0.2, 0.001, $5, 0.001, 0.0005, 0.002, true, true)",
                 [now.isoformat(), asset, kind, feature, alarm_rate])
    db.query("INSERT INTO deadletters (received_at, source_topic, partition, \"offset\", reason, error_type, "
             "payload) VALUES ($1, $2, 0, 1, 'not JSON', 'decode', '\\xff'::bytea)",
             [now.isoformat(), f"topic-{asset}"])
    db.query("INSERT INTO model_versions (model_id, version, modality, scope_asset, detector, feature_names, "
             "n_samples, data_hash, calibration, artifact_path) VALUES ($1, 'v1', 'spc', $2, 'hotelling', "
             "'{bore,depth}', 500, 'h', '{}', '/dev/null')", [f"spc:{asset}:*:hotelling", asset])


def test_every_panel_and_alert_query_runs_on_timescale_with_the_registry_s_columns(timescale_db):
    asset, now = f"tsdash-{uuid.uuid4().hex[:10]}", datetime.now(UTC).replace(microsecond=0)
    _load_plant(timescale_db, asset, now)
    queries = [*QUERIES.values(), *alert_queries()]
    statements = expanded_queries(flavour="timescale", start=now - timedelta(hours=1), end=now + timedelta(minutes=1),
                                  variables={"asset": asset, "sku": "S1", "characteristic": "bore",
                                             "detector": "hotelling"}, queries=queries)
    failures, rows = [], {}
    for q, sql in statements:
        try:
            result = result_as(timescale_db, sql)
        except TimescaleError as e:
            failures.append(f"{q.where}: {e}")
            continue
        kinds = tuple(KIND_OF_OID.get(oid, f"oid {oid}") for oid in result.type_oids)
        if problem := column_problems(q, tuple(result.columns), kinds, "timescale"):
            failures.append(f"{q.where}: {problem}")
        rows[q.key] = len(result.rows)
    assert not failures, "\n".join(failures)
    assert set(rows) >= set(QUERIES)
    check_fixture_rows(rows, "on TimescaleDB")


def test_a_grouped_panel_buckets_with_time_bucket_on_timescale(timescale_db):
    grouped = [(q, sql) for q, sql in expanded_queries(flavour="timescale", start=datetime(2026, 1, 1, tzinfo=UTC),
                                                       end=datetime(2026, 1, 2, tzinfo=UTC), interval_s=300)
               if "$__timeGroup" in q.sql_for("timescale")]
    assert grouped, "no panel groups by $__timeGroupAlias any more: this test has nothing to check"
    for q, sql in grouped:
        assert "time_bucket('300s'," in sql, q.key
        columns, types, _ = run_on_timescale(timescale_db, sql)
        assert columns[0] == "time" and types[0] == "timestamptz", q.key  # plain PostgreSQL gives epoch numbers

