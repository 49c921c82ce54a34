"""The generated Grafana files: current, well-formed, and their SQL runs on the migrated schema."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml

from linewatch import dashboards as d
from linewatch.storage.migrations import discover, select_for

REPO = Path(__file__).resolve().parents[1]
CHECKED_IN = REPO / "dashboards"
REGENERATE = "run `python -m linewatch.dashboards --out dashboards/` and commit the result"

_CREATES = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?(?:VIEW|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)",
    re.IGNORECASE)
_READS = re.compile(r"\b(?:FROM|JOIN)\s+(?:LATERAL\s+)?(?!\()(\w+)", re.IGNORECASE)


def relations_in_migrations(*, timescale: bool) -> set[str]:
    """Table and view names the migrations create for one database flavour."""
    names: set[str] = set()
    for mig in select_for(discover(REPO / "sql"), timescale=timescale):
        names |= {n.lower() for n in _CREATES.findall(mig.sql)}
    return names


def referenced_relations(sql: str) -> set[str]:
    return {n.lower() for n in _READS.findall(sql)}


# --- the files ----------------------------------------------------------------------------------


def test_checked_in_files_match_the_generator(tmp_path):
    assert d.main(["--out", str(tmp_path)]) == 0
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert generated == sorted(d.render())
    for rel in generated:
        committed = CHECKED_IN / rel
        assert committed.exists(), f"dashboards/{rel} is missing; {REGENERATE}"
        fresh = (tmp_path / rel).read_text()
        assert committed.read_text() == fresh, f"dashboards/{rel} is stale; {REGENERATE}"


def test_no_stray_files_in_the_generated_directories():
    """A dashboard renamed in code must not leave its old JSON behind for Grafana to keep loading."""
    present = {p.relative_to(CHECKED_IN).as_posix() for p in CHECKED_IN.glob("*.json")}
    present |= {p.relative_to(CHECKED_IN).as_posix() for p in (CHECKED_IN / "provisioning").rglob("*")
                if p.is_file()}
    assert present == set(d.render()), present ^ set(d.render())


def test_files_parse_and_name_what_the_brief_names():
    files = d.render()
    overview, spc = json.loads(files[d.OVERVIEW_FILE]), json.loads(files[d.SPC_FILE])
    assert (overview["title"], spc["title"]) == ("linewatch / overview", "linewatch / SPC")
    assert overview["uid"] != spc["uid"] and all(len(x["uid"]) <= 40 for x in (overview, spc))
    for rel in (d.DATASOURCE_FILE, d.PROVIDER_FILE, d.ALERTS_FILE):
        assert yaml.safe_load(files[rel])["apiVersion"] == 1


# --- panels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [d.overview_dashboard, d.spc_dashboard], ids=["overview", "spc"])
def test_panels_are_laid_out_without_overlap_and_use_the_linewatch_datasource(build):
    dash = build()
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
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == d.DATASOURCE_UID


def test_the_brief_s_panels_exist():
    overview = {p["title"]: p for p in d.overview_dashboard()["panels"]}
    assert "scores_1m" in overview["Anomalies per asset per minute"]["targets"][0]["rawSql"]
    assert "top feature" in overview["Latest anomalies"]["targets"][0]["rawSql"]
    assert any("deadletters" in p["targets"][0]["rawSql"] for p in overview.values())
    spc = {p["title"]: p for p in d.spc_dashboard()["panels"]}
    chart_sql = spc["Individuals chart"]["targets"][0]["rawSql"]
    assert "spc_individuals_chart" in chart_sql and "ucl" in chart_sql and "lcl" in chart_sql
    assert "spc_capability_daily" in spc["Capability per day"]["targets"][0]["rawSql"]


def test_time_series_queries_return_a_time_column_and_order_by_time():
    for q in d.iter_queries():
        if q.fmt == "time_series":
            assert re.search(r'AS "time"', q.sql), q.where
            assert re.search(r"ORDER BY (1|bucket|ts)\s*$", q.sql), q.where


@pytest.mark.parametrize("flavour", ["plain", "timescale"])
def test_every_query_reads_only_tables_and_views_the_migrations_create(flavour):
    known = relations_in_migrations(timescale=flavour == "timescale")
    assert {"scores_1m", "spc_individuals_chart", "anomalies_with_context", "deadletters"} <= known
    queries = list(d.iter_queries())
    assert len(queries) >= 20
    for q in queries:
        used = referenced_relations(q.sql)
        assert used, q.where
        assert used <= known, f"{q.where} reads {sorted(used - known)}, which no migration creates"


def test_the_relation_parser_sees_unknown_names():
    """Guard for the test above: a query on a missing view must be caught."""
    assert referenced_relations("SELECT * FROM nope n JOIN LATERAL other o ON true") == {"nope", "other"}
    assert "nope" not in relations_in_migrations(timescale=False)


# --- macros -------------------------------------------------------------------------------------


def test_macros_expand_like_grafana_and_unknown_ones_are_refused():
    t0 = datetime(2024, 5, 1, 6, tzinfo=UTC)
    sql = d.expand_macros(
        "WHERE $__timeFilter(bucket) AND day >= $__timeFrom()::date AND a = ${asset:sqlstring}",
        time_from=t0, time_to=t0 + timedelta(hours=1), variables={"asset": "press-1"})
    assert sql == ("WHERE bucket BETWEEN '2024-05-01T06:00:00Z' AND '2024-05-01T07:00:00Z' "
                   "AND day >= '2024-05-01T06:00:00Z'::date AND a = 'press-1'")
    with pytest.raises(ValueError, match="macro"):
        d.expand_macros("SELECT $__timeGroup(ts, '1m')", time_from=t0, time_to=t0)
    with pytest.raises(ValueError, match="sku"):
        d.expand_macros("WHERE sku = ${sku:sqlstring}", time_from=t0, time_to=t0, variables={})
    with pytest.raises(ValueError, match="format"):
        d.expand_macros("WHERE a IN (${asset:csv})", time_from=t0, time_to=t0, variables={"asset": "x"})


# --- provisioning -------------------------------------------------------------------------------


def test_datasource_comes_from_environment_variables_only():
    text = d.render()[d.DATASOURCE_FILE]
    (ds,) = yaml.safe_load(text)["datasources"]
    assert ds["uid"] == d.DATASOURCE_UID and ds["type"] == d.DATASOURCE_TYPE
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(d.DATASOURCE_ENV)
    assert ds["user"] == "${GRAFANA_PG_USER}" and ds["secureJsonData"]["password"] == "${GRAFANA_PG_PASSWORD}"


def test_dashboard_provider_reads_the_mounted_json():
    (provider,) = yaml.safe_load(d.render()[d.PROVIDER_FILE])["providers"]
    assert provider["options"]["path"] == d.DASHBOARDS_MOUNT and provider["type"] == "file"
    assert provider["folder"] == d.FOLDER


def test_alert_rules_are_well_formed_and_follow_the_threshold():
    doc = yaml.safe_load(d.render(anomaly_threshold=25)[d.ALERTS_FILE])
    (group,) = doc["groups"]
    assert group["folder"] == d.FOLDER and group["interval"] == "1m"
    rules = {r["uid"]: r for r in group["rules"]}
    assert all(len(uid) <= 40 for uid in rules)
    burst = rules["linewatch-anomaly-burst"]
    refs = {x["refId"]: x for x in burst["data"]}
    assert burst["condition"] in refs
    query, condition = refs["A"], refs[burst["condition"]]
    assert query["datasourceUid"] == d.DATASOURCE_UID and query["relativeTimeRange"] == {"from": 300, "to": 0}
    assert query["model"]["format"] == "table" and "GROUP BY asset_id" in query["model"]["rawSql"]
    assert condition["model"]["expression"] == "A"
    assert condition["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [25]}
    assert "$labels.asset_id" in burst["annotations"]["summary"]
    for rule in rules.values():
        # Grafana expands $VAR in provisioned labels (not in annotations or queries): keep them literal.
        assert not any("$" in v for v in rule["labels"].values()), rule["uid"]
    with pytest.raises(ValueError):
        d.alert_rules(-1)


# --- against the database -----------------------------------------------------------------------


@pytest.fixture
def committed_series(database_url: str):
    """A committed SPC series and one anomaly (check_queries uses its own connection), removed afterwards."""
    asset = f"dash-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC).replace(microsecond=0)
    eids = [uuid.uuid4() for _ in range(30)]
    with psycopg.connect(database_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, shift, characteristic, "
            "value, lsl, usl, target) VALUES (%s, %s, %s, 'S1', %s, 'A', 'bore', %s, 9.0, 13.0, 11.0)",
            [(now - timedelta(minutes=30 - i), eid, asset, f"p{i}",
              11.0 + (i % 3) * 0.2 + (3.0 if i == 28 else 0)) for i, eid in enumerate(eids)])
        conn.execute(
            "INSERT INTO scores (ts, event_id, modality, asset_id, sku, part_id, detector, model_version, "
            "raw_score, tail_probability, calibrated_score, threshold, is_anomaly, ready, top_feature, "
            "explanation, scored_at) "
            "VALUES (%s, %s, 'spc', %s, 'S1', 'p28', 'robust_mahalanobis', 'v1', 50, 1e-7, 7, 3, true, true, "
            "'bore', '[{\"name\": \"bore\", \"value\": 9.0, \"share\": 0.9}]', %s)",
            (now - timedelta(minutes=2), eids[28], asset, now))
    yield asset
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM scores WHERE asset_id = %s", (asset,))
        conn.execute("DELETE FROM spc_measurements WHERE asset_id = %s", (asset,))


@pytest.mark.integration
def test_every_query_runs_as_the_read_only_role(database_url, committed_series):
    results = d.check_queries(database_url, variables={"asset": committed_series, "sku": "S1",
                                                       "characteristic": "bore"})
    failures = [f"{r.query.where}: {r.error}" for r in results if r.error]
    assert not failures, "\n".join(failures)
    by_where = {r.query.where: r for r in results}
    for r in results:
        if r.query.fmt == "time_series":
            assert "time" in r.columns, r.query.where
    chart = by_where["linewatch / SPC / Individuals chart"]
    assert chart.rows == 30 and chart.columns[:5] == ("time", "value", "centre line", "UCL", "LCL")
    assert by_where["linewatch / SPC / Capability per day"].rows >= 1
    assert by_where["linewatch / SPC / variable characteristic"].rows == 1
    assert by_where["linewatch / overview / Latest anomalies"].rows >= 1
    burst = by_where["alert rule linewatch-anomaly-burst"]
    assert burst.columns == ("asset_id", "anomalies") and burst.rows >= 1


@pytest.mark.integration
def test_the_query_check_reports_broken_sql(database_url, monkeypatch):
    """Guard: check_queries must surface a database error rather than pass silently."""
    broken = d.Query("broken panel", "SELECT x FROM no_such_view WHERE $__timeFilter(ts)", "table")
    monkeypatch.setattr(d, "iter_queries", lambda *a, **k: iter([broken]))
    (result,) = d.check_queries(database_url)
    assert result.error and "no_such_view" in result.error


@pytest.mark.integration
def test_the_role_is_quoted_as_an_identifier_not_pasted_into_sql(database_url):
    """``--role`` comes from the command line: a quote in it must not end the identifier and run SQL."""
    evil = 'linewatch_reader"; RESET ROLE; SELECT "'
    results = d.check_queries(database_url, role=evil)
    assert results and all(r.error and "does not exist" in r.error for r in results), results[0].error
