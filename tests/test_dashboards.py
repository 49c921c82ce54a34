"""The generated Grafana files: current, well-formed, six dashboards with the panels the issue lists,
and every query in the registry runs as the read-only role with the columns and types its panel expects."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from linewatch import dashboards as d
from linewatch.cli import app
from linewatch.dashboards.alerting import alert_queries
from linewatch.dashboards.check import check_queries
from linewatch.dashboards.queries import QUERIES, PanelQuery, expand_macros
from linewatch.storage.migrations import discover, select_for
from tests.dashboard_expectations import check_fixture_rows

REPO = Path(__file__).resolve().parents[1]
CHECKED_IN = REPO / "dashboards"
REGENERATE = "run `linewatch dashboards build` and commit the result"

_CREATES = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?(?:VIEW|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)",
    re.IGNORECASE)
# A relation after FROM/JOIN, not a subquery and not a set-returning function call.
_READS = re.compile(r"\b(?:FROM|JOIN)\s+(?:LATERAL\s+)?(?!\(|LATERAL\b)(\w+)\b(?!\s*\()", re.IGNORECASE)


def relations_in_migrations(*, timescale: bool) -> set[str]:
    """Table and view names the migrations create for one database flavour."""
    names: set[str] = set()
    for mig in select_for(discover(REPO / "sql"), timescale=timescale):
        names |= {n.lower() for n in _CREATES.findall(mig.sql)}
    return names


def referenced_relations(sql: str) -> set[str]:
    return {n.lower() for n in _READS.findall(sql)}


def built() -> dict[str, dict[str, Any]]:
    return {uid: spec.build() for uid, spec in d.DASHBOARDS.items()}


def panel_sql(panel: dict[str, Any]) -> str:
    (t,) = panel["targets"]
    return t["rawSql"]


# --- the files ----------------------------------------------------------------------------------


def test_checked_in_files_match_the_generator(tmp_path):
    assert d.main(["--out", str(tmp_path)]) == 0
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert generated == sorted(d.render())
    for rel in generated:
        committed = CHECKED_IN / rel
        assert committed.exists(), f"dashboards/{rel} is missing; {REGENERATE}"
        assert committed.read_text() == (tmp_path / rel).read_text(), f"dashboards/{rel} is stale; {REGENERATE}"


def test_no_stray_files_in_the_generated_directories():
    """A dashboard renamed in code must not leave its old JSON behind for Grafana to keep loading."""
    present = {p.relative_to(CHECKED_IN).as_posix() for p in CHECKED_IN.glob("*.json")}
    present |= {p.relative_to(CHECKED_IN).as_posix() for p in (CHECKED_IN / "provisioning").rglob("*")
                if p.is_file()}
    assert present == set(d.render()), present ^ set(d.render())
    assert d.stray_dashboards(CHECKED_IN) == []


def test_build_command_writes_only_what_changed_and_says_so(tmp_path):
    runner = CliRunner()
    first = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert f"{len(d.render())} of {len(d.render())} files changed" in " ".join(first.output.split())
    (tmp_path / d.SPC_FILE).write_text("{}")
    (tmp_path / "linewatch-old-name.json").write_text("{}")
    second = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path)])
    assert second.exit_code == 0, second.output
    said = " ".join(second.output.split())
    assert d.SPC_FILE in said and "1 of" in said
    assert "linewatch-old-name.json is not generated" in said
    third = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path)])
    assert "up to date" in " ".join(third.output.split())  # rich wraps a long temporary path


def test_six_dashboards_with_stable_uids_and_the_compose_file_names():
    assert list(d.DASHBOARDS) == ["linewatch-overview", "linewatch-asset", "linewatch-spc",
                                  "linewatch-multivariate", "linewatch-drift", "linewatch-pipeline"]
    assert (d.OVERVIEW_FILE, d.SPC_FILE) == ("linewatch-overview.json", "linewatch-spc.json")
    for uid, dash in built().items():
        assert dash["uid"] == uid and len(uid) <= 40
        assert dash["title"].startswith("linewatch / ") and dash["editable"] is False
        assert d.DASHBOARDS[uid].question.endswith("?")
    for rel in (d.DATASOURCE_FILE, d.PROVIDER_FILE, d.RULES_FILE):
        assert yaml.safe_load(d.render()[rel])["apiVersion"] == 1


# --- panels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", list(d.DASHBOARDS))
def test_panels_do_not_overlap_and_use_the_linewatch_datasource(uid):
    dash = d.DASHBOARDS[uid].build()
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        mine = {(pos["x"] + i, pos["y"] + j) for i in range(pos["w"]) for j in range(pos["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["datasource"] == {"type": d.DATASOURCE_TYPE, "uid": d.DATASOURCE_UID}
        assert p["targets"] and all(t["datasource"]["uid"] == d.DATASOURCE_UID for t in p["targets"])
        assert p["description"], f"{p['title']} should tell the reader what it shows"
    for var in dash["templating"].get("list", []):
        assert var["type"] == "custom" or var["datasource"]["uid"] == d.DATASOURCE_UID
    for ann in dash["annotations"].get("list", []):
        assert ann["datasource"]["uid"] == d.DATASOURCE_UID and ann["target"]["rawSql"]


def test_a_row_that_does_not_fill_the_grid_is_refused():
    from linewatch.dashboards.panels import assemble, new_dashboard, tbl

    with pytest.raises(ValueError, match="24 columns"):
        assemble(new_dashboard("x", "x", "x"), [[(tbl("pipeline.model-versions", "t", "d"), 20, 4)]])


def test_every_sql_in_the_json_is_a_registered_query_and_every_query_is_used():
    registered = {q.sql: q for q in QUERIES.values()}
    used: set[str] = set()
    for dash in built().values():
        sources = [t for p in dash["panels"] for t in p["targets"]]
        sources += [a["target"] for a in dash["annotations"].get("list", [])]
        for t in sources:
            q = registered.get(t["rawSql"])
            assert q, f"{dash['uid']}: SQL not in the registry: {t['rawSql'][:80]}"
            assert t["format"] == q.format, q.key
            used.add(q.key)
        for var in dash["templating"].get("list", []):
            if var["type"] == "query":
                used.add(registered[var["query"]].key)
    assert used == set(QUERIES), f"registered but unused: {sorted(set(QUERIES) - used)}"


def test_the_issue_s_panels_exist():
    dashes = built()

    def reads(uid: str, title: str) -> str:
        panels = {p["title"]: p for p in dashes[uid]["panels"]}
        assert title in panels, f"{uid} lacks {title!r}: {sorted(panels)}"
        return panel_sql(panels[title])

    assert "open_alerts" in reads("linewatch-overview", "Open alerts by asset and severity")
    assert {p["type"] for p in dashes["linewatch-overview"]["panels"]} >= {"barchart", "heatmap", "stat", "table"}
    assert "alerts" in referenced_relations(reads("linewatch-overview", "Fused score by asset"))
    incidents = reads("linewatch-overview", "Recent incidents")
    assert "alert_incidents" in incidents and "contributors" in incidents and "verdict" in incidents
    for modality in ("spc", "signals", "frames"):
        sql = reads("linewatch-asset", f"{modality}: calibrated score and threshold")
        assert "calibrated_score" in sql and "threshold" in sql and f"'{modality}'" in sql
    assert "signal_features_1m" in reads("linewatch-asset", "Signal RMS per sensor")
    assert "spc_individuals_chart" in reads("linewatch-asset", "SPC characteristics (z against the control limits)")
    assert "frame_heatmaps" in reads("linewatch-asset", "Frame heat maps")
    frames = next(p for p in dashes["linewatch-asset"]["panels"] if p["title"] == "Frame heat maps")
    assert "${asset}" in json.dumps(frames["fieldConfig"]["overrides"])  # the data link
    (annotation,) = dashes["linewatch-asset"]["annotations"]["list"]
    assert "alert_incidents" in annotation["target"]["rawSql"]
    chart = reads("linewatch-spc", "Individuals chart")
    assert "spc_individuals_chart" in chart and "ucl" in chart and "out_of_control" in chart
    assert "rules_violated" in reads("linewatch-spc", "Rule violations")
    assert "spc_capability_daily" in reads("linewatch-spc", "Capability per day")
    assert "spc_capability_shift" in reads("linewatch-spc", "Capability per shift")
    calibrated = reads("linewatch-multivariate", "Calibrated multivariate scores")
    assert all(det in calibrated for det in d.queries.MULTIVARIATE_DETECTORS)
    assert "hotelling" in reads("linewatch-multivariate", "T² and SPE statistics (raw)")
    assert "explanation" in reads("linewatch-multivariate", "Per-variable contributions over time (${detector})")
    assert "kind = 'score'" in reads("linewatch-drift", "Score drift (PSI) per model version")
    assert "kind = 'input'" in reads("linewatch-drift", "Input drift (PSI) per feature")
    rate = reads("linewatch-drift", "Alarm rate against the calibrated promise")
    assert "promised_far_low" in rate and "promised_far_high" in rate
    assert "drift_latest" in reads("linewatch-drift", "Latest drift check per model version")
    assert "retrain_recommended" in reads("linewatch-drift", "Retrain recommendations")
    assert "champion_challenger" in reads("linewatch-drift", "Shadow vs champion")
    throughput = next(p for p in dashes["linewatch-pipeline"]["panels"]
                      if p["title"] == "Rows per minute per topic's table")
    assert "/health" in throughput["description"] and "lag" in throughput["description"]
    assert "error_type" in reads("linewatch-pipeline", "Dead letters by reason")
    latency = reads("linewatch-pipeline", "Sink latency (p95)")
    assert "scored_at - ts" in latency and "written_at - ts" in latency
    assert "model_versions" in reads("linewatch-pipeline", "Model versions")


def test_time_series_queries_return_time_first_and_order_by_time():
    for q in QUERIES.values():
        if q.format == "time_series":
            assert next(iter(q.columns)) == "time", q.key
            assert re.search(r'AS "time"|\$__timeGroupAlias', q.sql), q.key
            assert re.search(r"ORDER BY (1|bucket|ts)\s*$", q.sql), q.key


@pytest.mark.parametrize("flavour", ["plain", "timescale"])
def test_every_query_reads_only_tables_and_views_the_migrations_create(flavour):
    known = relations_in_migrations(timescale=flavour == "timescale")
    assert {"scores_1m", "spc_individuals_chart", "alert_incidents", "drift_latest", "deadletters"} <= known
    queries = list(QUERIES.values())
    assert len(queries) >= 40
    for q in queries:
        used = referenced_relations(q.sql_for(flavour))
        assert used, q.key
        assert used <= known, f"{q.key} reads {sorted(used - known)}, which no migration creates"


def test_the_relation_parser_sees_unknown_names_and_skips_functions():
    """Guard for the test above: a query on a missing view must be caught, a function call is no view."""
    sql = "SELECT * FROM nope n JOIN LATERAL other o ON true CROSS JOIN LATERAL jsonb_array_elements(x) e"
    assert referenced_relations(sql) == {"nope", "other"}
    assert "nope" not in relations_in_migrations(timescale=False)


# --- macros -------------------------------------------------------------------------------------


def test_macros_expand_like_grafana_and_unknown_ones_are_refused():
    t0 = datetime(2024, 5, 1, 6, tzinfo=UTC)
    t1 = t0 + timedelta(hours=1)
    sql = expand_macros("WHERE $__timeFilter(bucket) AND day >= $__timeFrom()::date AND a = ${asset:sqlstring}",
                        start=t0, end=t1, variables={"asset": "press-1"})
    assert sql == ("WHERE bucket BETWEEN '2024-05-01T06:00:00Z' AND '2024-05-01T07:00:00Z' "
                   "AND day >= '2024-05-01T06:00:00Z'::date AND a = 'press-1'")
    group = "SELECT $__timeGroupAlias(ts, $__interval), $__timeGroup(s.ts, '5m')"
    assert expand_macros(group, start=t0, end=t1, interval_s=30) == (
        'SELECT floor(extract(epoch from ts)/30)*30 AS "time", floor(extract(epoch from s.ts)/300)*300')
    assert expand_macros(group, start=t0, end=t1, interval_s=30, flavour="timescale") == (
        "SELECT time_bucket('30s',ts) AS \"time\", time_bucket('300s',s.ts)")
    with pytest.raises(ValueError, match="macro"):
        expand_macros("SELECT $__unixEpochFilter(ts)", start=t0, end=t0)
    with pytest.raises(ValueError, match="sku"):
        expand_macros("WHERE sku = ${sku:sqlstring}", start=t0, end=t0, variables={})
    with pytest.raises(ValueError, match="format"):
        expand_macros("WHERE a IN (${asset:csv})", start=t0, end=t0, variables={"asset": "x"})


# --- provisioning -------------------------------------------------------------------------------


def test_datasource_comes_from_environment_variables_only():
    text = d.render()[d.DATASOURCE_FILE]
    (ds,) = yaml.safe_load(text)["datasources"]
    assert ds["uid"] == d.DATASOURCE_UID and ds["type"] == d.DATASOURCE_TYPE
    assert ds["jsonData"]["timescaledb"] is True  # Grafana then expands $__timeGroup to time_bucket
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(d.DATASOURCE_ENV)
    assert ds["user"] == "${GRAFANA_PG_USER}" and ds["secureJsonData"]["password"] == "${GRAFANA_PG_PASSWORD}"


def test_dashboard_provider_reads_the_mounted_json():
    (provider,) = yaml.safe_load(d.render()[d.PROVIDER_FILE])["providers"]
    assert provider["options"]["path"] == d.DASHBOARDS_MOUNT and provider["type"] == "file"
    assert provider["folder"] == d.FOLDER


def test_the_build_writes_the_alerting_files_on_the_alerts_table():
    files = d.render(deadletter_burst=25)
    rules = yaml.safe_load(files[d.RULES_FILE])["groups"][0]["rules"]
    assert {r["uid"] for r in rules} == {"linewatch-open-incident", "linewatch-retrain-recommended",
                                         "linewatch-deadletter-burst"}
    burst = next(r for r in rules if r["uid"] == "linewatch-deadletter-burst")
    assert all("open_alerts" in r["data"][0]["model"]["rawSql"] for r in rules if r is not burst)
    assert burst["data"][1]["model"]["conditions"][0]["evaluator"]["params"] == [25]
    assert {"provisioning/alerting/linewatch-contact-points.yaml", "provisioning/alerting/linewatch-policies.yaml",
            "provisioning/alerting/linewatch-mute-timings.yaml"} <= set(files)


# --- against the database -----------------------------------------------------------------------

_MV_EXPLANATION = json.dumps([{"name": "bore", "value": 9.0, "share": 0.7},
                              {"name": "depth", "value": 4.1, "share": 0.3}])


@pytest.fixture
def committed_plant(database_url: str):
    """A few committed rows in every table the dashboards read, for one unique asset (check_queries uses its
    own connection), removed afterwards."""
    asset = f"dash-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC).replace(microsecond=0)
    eids = [uuid.uuid4() for _ in range(30)]
    alert_id, retrain_id = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(database_url) as conn:
        cur = conn.cursor()
        cur.executemany(
            "INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, shift, characteristic, "
            "value, lsl, usl, target) VALUES (%s, %s, %s, 'S1', %s, 'A', 'bore', %s, 9.0, 13.0, 11.0)",
            [(now - timedelta(minutes=30 - i), eid, asset, f"p{i}",
              11.0 + (i % 3) * 0.2 + (3.0 if i == 28 else 0)) for i, eid in enumerate(eids)])
        cur.executemany(
            "INSERT INTO scores (ts, event_id, modality, asset_id, sku, part_id, detector, model_version, "
            "raw_score, tail_probability, calibrated_score, threshold, is_anomaly, ready, top_feature, "
            "explanation, scored_at) "
            "VALUES (%s, %s, %s, %s, 'S1', 'p28', %s, 'v1', 50, 1e-7, 7, 3, true, true, 'bore', %s, %s)",
            [(now - timedelta(minutes=2), eids[28], modality, asset, det, _MV_EXPLANATION, now)
             for modality, det in (("spc", "hotelling"), ("spc", "mewma"), ("signals", "dynamic_pca"),
                                   ("frames", "patchcore"))])
        # the frame's classifier verdict (the Day-30 layer): what the recognised-defects panel counts
        cur.execute("UPDATE scores SET defect_class = 'scratch', defect_confidence = 0.9, defect_route = 'rework' "
                    "WHERE asset_id = %s AND detector = 'patchcore'", (asset,))
        cur.execute(
            "INSERT INTO signal_features (ts, event_id, asset_id, sensor, kind, unit, sample_rate_hz, n_samples, "
            "mean, rms, peak, crest_factor, kurtosis, skewness, features, quality) VALUES "
            "(%s, %s, %s, 'vib-1', 'vibration', 'g', 1000, 1000, 0, 1.2, 4.8, 4, 6.5, 0.1, '{}', '{flatline}')",
            (now - timedelta(minutes=3), uuid.uuid4(), asset))
        cur.execute(
            "INSERT INTO frame_heatmaps (ts, event_id, asset_id, camera, sku, part_id, detector, model_version, "
            "width, height, raw_score, peak_value, threshold, peak_x, peak_y, area_fraction, thumbnail) VALUES "
            "(%s, %s, %s, 'cam-1', 'S1', 'p28', 'patchcore', 'v1', 64, 48, 2.5, 2.4, 1.2, 10, 20, 0.05, %s)",
            (now - timedelta(minutes=2), eids[28], asset, b"\x89PNG\r\n\x1a\n" + bytes(100)))
        for aid, kind, state, shadow in ((alert_id, "anomaly", "open", False),
                                         (retrain_id, "retrain_recommended", "open", False)):
            cur.execute(
                "INSERT INTO alerts (ts, alert_id, state, asset_id, severity, opened_at, score, modalities, "
                "contributors, kind, route, shadow) VALUES (%s, %s, %s, %s, 'critical', %s, 6.5, '{spc,signals}', "
                "%s, %s, 'quality', %s)",
                (now - timedelta(minutes=1), aid, state, asset, now - timedelta(minutes=1),
                 json.dumps([{"name": "bore", "share": 0.8, "modality": "spc"}]), kind, shadow))
        cur.execute("INSERT INTO dispositions (disposition_id, alert_id, verdict, operator, ts) "
                    "VALUES (%s, %s, 'true_defect', 'ana', %s)", (uuid.uuid4(), alert_id, now))
        cur.executemany(
            "INSERT INTO drift (ts, asset_id, modality, detector, model_version, kind, feature, n, psi, "
            "ks_statistic, ks_pvalue, alarm_rate, promised_far, promised_far_low, promised_far_high, drifted, "
            "retrain_recommended) VALUES (%s, %s, 'spc', 'hotelling', 'v1', %s, %s, 500, 0.3, 0.2, 0.001, "
            "%s, 0.001, 0.0005, 0.002, true, true)",
            [(now - timedelta(minutes=5), asset, "score", "", 0.01), (now - timedelta(minutes=5), asset, "input",
                                                                      "bore", None)])
        cur.execute("INSERT INTO deadletters (received_at, source_topic, partition, \"offset\", reason, error_type, "
                    "payload) VALUES (%s, %s, 0, 1, 'not JSON', 'decode', %s)",
                    (now, f"topic-{asset}", b"\xff"))
        cur.execute("INSERT INTO model_versions (model_id, version, modality, scope_asset, detector, feature_names, "
                    "n_samples, data_hash, calibration, artifact_path) VALUES (%s, 'v1', 'spc', %s, 'hotelling', "
                    "'{bore,depth}', 500, 'h', '{}', '/dev/null')", (f"spc:{asset}:*:hotelling", asset))
    yield asset
    with psycopg.connect(database_url) as conn:
        for table, column in (("scores", "asset_id"), ("spc_measurements", "asset_id"),
                              ("signal_features", "asset_id"), ("frame_heatmaps", "asset_id"),
                              ("drift", "asset_id"), ("model_versions", "scope_asset")):
            conn.execute(f"DELETE FROM {table} WHERE {column} = %s", (asset,))
        conn.execute("DELETE FROM dispositions WHERE alert_id IN (%s, %s)", (alert_id, retrain_id))
        conn.execute("DELETE FROM alerts WHERE asset_id = %s", (asset,))
        conn.execute("DELETE FROM deadletters WHERE source_topic = %s", (f"topic-{asset}",))


@pytest.mark.integration
def test_every_query_runs_as_the_read_only_role_with_the_expected_columns(database_url, committed_plant):
    now = datetime.now(UTC)
    # two hours back: the hourly SPC buckets of rows written 1-30 min ago start up to 90 min ago
    results = check_queries(database_url, start=now - timedelta(hours=2), end=now + timedelta(minutes=1),
                            variables={"asset": committed_plant, "sku": "S1", "characteristic": "bore",
                                       "detector": "hotelling"})
    failures = [f"{r.query.where}: {r.error}" for r in results if r.error]
    assert not failures, "\n".join(failures)
    assert {r.query.key for r in results} >= set(QUERIES)
    rows = {r.query.key: r.rows for r in results}
    assert rows["spc.var.characteristic"] == 1
    check_fixture_rows(rows, "on PostgreSQL")


@pytest.mark.integration
def test_the_check_reports_broken_sql_renamed_columns_and_wrong_types(database_url):
    """Guard: a database error, a renamed column and a number that became text must each fail the check."""
    broken = PanelQuery("broken", "SELECT x FROM no_such_view WHERE $__timeFilter(ts)", None, {"x": "number"})
    renamed = PanelQuery("renamed", "SELECT count(*) AS n FROM scores", None, {"events": "number"})
    retyped = PanelQuery("retyped", "SELECT count(*)::text AS n FROM scores", None, {"n": "number"})
    epoch = PanelQuery("epoch", "SELECT $__timeGroupAlias(ts, $__interval), count(*) AS n FROM scores GROUP BY 1",
                       None, {"time": "time", "n": "number"}, "time_series")
    results = {r.query.key: r for r in check_queries(database_url, queries=[broken, renamed, retyped, epoch])}
    assert "no_such_view" in results["broken"].error
    assert "expects ['events']" in results["renamed"].error
    assert "n: text (expected number)" in results["retyped"].error
    assert results["epoch"].error is None  # plain PostgreSQL: Grafana reads the epoch seconds as time


@pytest.mark.integration
def test_the_role_is_quoted_as_an_identifier_not_pasted_into_sql(database_url):
    """``--role`` comes from the command line: a quote in it must not end the identifier and run SQL."""
    evil = 'linewatch_reader"; RESET ROLE; SELECT "'
    results = check_queries(database_url, role=evil)
    assert results and all(r.error and "does not exist" in r.error for r in results), results[0].error


@pytest.mark.integration
def test_check_command_reports_every_query_and_fails_on_a_missing_role(database_url):
    runner = CliRunner()
    ok = runner.invoke(app, ["dashboards", "check", "--database-url", database_url])
    assert ok.exit_code == 0, ok.output
    n = len(QUERIES) + len(alert_queries())
    assert f"{n} of {n} queries ran with the expected columns" in ok.output
    bad = runner.invoke(app, ["dashboards", "check", "--database-url", database_url, "--role", "no_such_role"])
    assert bad.exit_code == 1 and "does not exist" in bad.output and "queries.py" in bad.output


def test_timescale_statements_use_time_bucket_and_no_macro_survives():
    """What a TimescaleDB runner gets: concrete SQL, time_bucket wherever the panel groups by $__interval."""
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    statements = d.queries.expanded_queries(flavour="timescale", start=t0, end=t0 + timedelta(hours=6),
                                            interval_s=120)
    assert len(statements) == len(QUERIES)
    for q, sql in statements:
        assert "$" not in sql, q.key
        assert ("time_bucket('120s'," in sql) == ("$__timeGroup" in q.sql), q.key
