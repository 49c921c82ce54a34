"""Grafana alerting provisioning: current files, consistent routing, and rule SQL that runs on the schema."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql as pgsql

from linewatch.dashboards import alerting as a

REPO = Path(__file__).resolve().parents[1]
CHECKED_IN = REPO / "dashboards"
REGENERATE = "run `linewatch dashboards build` and commit the result"
TEXT, FLOAT8 = 25, 701  # PostgreSQL type OIDs


# --- the files ----------------------------------------------------------------------------------


def test_checked_in_alerting_files_match_the_generator(tmp_path):
    written = a.write_provisioning(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(a.render())
    for path in written:
        rel = path.relative_to(tmp_path).as_posix()
        committed = CHECKED_IN / rel
        assert committed.exists(), f"dashboards/{rel} is missing; {REGENERATE}"
        assert committed.read_text() == path.read_text(), f"dashboards/{rel} is stale; {REGENERATE}"


def test_no_stray_files_in_the_alerting_directory():
    """Grafana loads every file there: a renamed file must not leave its old rules behind."""
    present = {p.relative_to(CHECKED_IN).as_posix() for p in (CHECKED_IN / "provisioning" / "alerting").iterdir()}
    assert present == set(a.render()), present ^ set(a.render())


def test_files_are_in_the_directory_compose_mounts_and_parse_as_provisioning():
    compose = (REPO / "docker-compose.yml").read_text()
    assert "./dashboards/provisioning/alerting:/etc/grafana/provisioning/alerting:ro" in compose
    for rel, text in a.render().items():
        assert rel.startswith("provisioning/alerting/") and rel.endswith(".yaml")
        assert yaml.safe_load(text)["apiVersion"] == 1


def test_rules_alert_on_the_alerts_table_with_the_routing_labels():
    (group,) = a.alert_rules()["groups"]
    assert group["folder"] == a.FOLDER and group["interval"] == "1m"
    rules = {r["uid"]: r for r in group["rules"]}
    assert set(rules) == {q.uid for q in a.RULE_QUERIES} and all(len(u) <= 40 for u in rules)
    for q in a.RULE_QUERIES:
        rule = rules[q.uid]
        refs = {d["refId"]: d for d in rule["data"]}
        assert refs[rule["condition"]]["model"]["expression"] == "A"
        assert refs["A"]["model"]["format"] == "table" and refs["A"]["model"]["rawSql"] == q.sql.strip()
        # Grafana expands $VAR in provisioned labels: they must stay literal.
        assert not any("$" in v for v in rule["labels"].values()), q.uid
        routing = set(q.labels) | set(rule["labels"])
        assert {"route", "severity"} <= routing, q.uid
    incident = rules["linewatch-open-incident"]
    assert "FROM open_alerts" in incident["data"][0]["model"]["rawSql"]
    assert "FROM scores" not in incident["data"][0]["model"]["rawSql"]
    assert "$labels.top_contributors" in incident["annotations"]["description"]
    assert "$labels.recognised_classes" in incident["annotations"]["description"]
    assert f"/d/{a.ASSET_DASHBOARD_UID}?var-asset={{{{ $labels.asset_id" in incident["annotations"]["drilldown"]
    assert "retrain_recommended" in rules["linewatch-retrain-recommended"]["data"][0]["model"]["rawSql"]
    burst = rules["linewatch-deadletter-burst"]
    assert burst["labels"]["route"] == "ml"
    assert burst["data"][1]["model"]["conditions"][0]["evaluator"]["params"] == [a.DEFAULT_DEADLETTER_BURST]
    assert a.alert_rules(3)["groups"][0]["rules"][2]["data"][1]["model"]["conditions"][0]["evaluator"][
        "params"] == [3]
    with pytest.raises(ValueError, match="burst"):
        a.alert_rules(-1)


def test_the_policy_routes_every_route_to_a_provisioned_contact_point_grouped_by_asset():
    (tree,) = a.notification_policies()["policies"]
    receivers = {cp["name"] for cp in a.contact_points()["contactPoints"]}
    mutes = {m["name"] for m in a.mute_timings()["muteTimes"]}
    assert tree["receiver"] in receivers
    routed = {}
    for child in tree["routes"]:
        ((label, op, value),) = child["object_matchers"]
        assert (label, op) == ("route", "=") and child["receiver"] in receivers
        assert "asset_id" in child["group_by"]
        assert set(child.get("mute_time_intervals", [])) <= mutes
        routed[value] = child
    assert set(routed) == set(a.ROUTES)
    # the planned slot mutes the line's people, not the pipeline's
    assert routed["maintenance"]["mute_time_intervals"] == routed["quality"]["mute_time_intervals"] == [
        a.PLANNED_MAINTENANCE.name]
    assert "mute_time_intervals" not in routed["ml"]


def test_contact_point_urls_come_from_the_environment_with_placeholders_that_deliver_nowhere():
    text = a.render()[a.CONTACT_POINTS_FILE]
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(a.CONTACT_ENV.values())
    assert all(u.startswith("https://") and ".example.invalid/" in u for u in a.PLACEHOLDER_URLS.values())
    compose = (REPO / "docker-compose.yml").read_text()
    for var, url in a.PLACEHOLDER_URLS.items():
        assert f"{var}: ${{{var}:-{url}}}" in compose, f"docker-compose.yml should pass {var} to grafana"
    doc = yaml.safe_load(text)
    resolved = a.resolve_contact_env(doc, {"GRAFANA_ALERT_QUALITY_URL": "https://hooks.plant/q"})
    urls = {cp["name"]: cp["receivers"][0]["settings"]["url"] for cp in resolved["contactPoints"]}
    assert urls == {"linewatch-maintenance": a.PLACEHOLDER_URLS["GRAFANA_ALERT_MAINTENANCE_URL"],
                    "linewatch-quality": "https://hooks.plant/q",
                    "linewatch-ml": a.PLACEHOLDER_URLS["GRAFANA_ALERT_ML_URL"]}
    rules = a.resolve_contact_env(a.alert_rules(), {})
    assert rules == a.alert_rules(), "only the contact URLs are substituted, never $labels"


def test_the_planned_maintenance_slot_is_configurable_and_validated(tmp_path):
    slot = a.PlannedMaintenance(weekdays=("saturday", "sunday"), start="22:00", end="24:00",
                                location="Europe/Berlin")
    a.write_provisioning(tmp_path, maintenance=slot)
    (mute,) = yaml.safe_load((tmp_path / a.MUTE_TIMINGS_FILE).read_text())["muteTimes"]
    assert mute["time_intervals"] == [{"times": [{"start_time": "22:00", "end_time": "24:00"}],
                                       "weekdays": ["saturday", "sunday"], "location": "Europe/Berlin"}]
    with pytest.raises(ValueError, match="weekdays"):
        a.PlannedMaintenance(weekdays=("sonntag",))
    with pytest.raises(ValueError, match="HH:MM"):
        a.PlannedMaintenance(start="6:00")
    with pytest.raises(ValueError, match="end after"):
        a.PlannedMaintenance(start="10:00", end="10:00")


def test_the_datasource_and_folder_are_the_ones_the_dashboards_provision():
    from linewatch import dashboards

    assert (a.DATASOURCE_UID, a.DATASOURCE_TYPE, a.FOLDER) == (
        dashboards.DATASOURCE_UID, dashboards.DATASOURCE_TYPE, dashboards.FOLDER)


# --- against the database -----------------------------------------------------------------------


def _alert(conn: psycopg.Connection, *, alert_id: uuid.UUID, ts: datetime, state: str, asset: str,
           severity: str, opened_at: datetime, kind: str = "anomaly", route: str = "quality",
           shadow: bool = False, contributors: list[dict] | None = None, versions: list[str] | None = None,
           defect_class: str | None = None) -> None:
    conn.execute(
        "INSERT INTO alerts (ts, alert_id, state, asset_id, severity, opened_at, score, modalities, contributors, "
        "shadow, kind, route, model_versions, defect_class) "
        "VALUES (%s, %s, %s, %s, %s, %s, 5.0, %s, %s, %s, %s, %s, %s, %s)",
        (ts, alert_id, state, asset, severity, opened_at, ["spc"], json.dumps(contributors or []), shadow, kind,
         route, versions or [], defect_class))


@pytest.fixture
def alert_rows(database_url: str):
    """Committed alerts for two unique assets and a dead-letter burst on a unique topic; removed after."""
    tag = uuid.uuid4().hex[:10]
    press, oven, topic = f"alrt-press-{tag}", f"alrt-oven-{tag}", f"alrt-topic-{tag}"
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(minutes=20)
    opening = [{"name": "bore", "value": 12.9, "share": 0.62, "kind": "feature", "modality": "spc"},
               {"name": "spindle_rms", "value": 3.1, "share": 0.25, "kind": "feature", "modality": "signal"},
               {"name": "frame", "value": 0.9, "share": 0.08, "kind": "model"},
               {"name": "fourth", "value": 0.1, "share": 0.05, "kind": "feature", "modality": "spc"}]
    with psycopg.connect(database_url) as conn:
        open_id, closed_id, shadow_id, retrain_id = (uuid.uuid4() for _ in range(4))
        # open, then escalated by an update with other contributors: one instance, opening's causes
        _alert(conn, alert_id=open_id, ts=t0, state="open", asset=press, severity="warning", opened_at=t0,
               route="maintenance", contributors=opening)
        _alert(conn, alert_id=open_id, ts=t0 + timedelta(minutes=5), state="update", asset=press,
               severity="critical", opened_at=t0, route="maintenance",
               contributors=[{"name": "later", "share": 1.0, "modality": "spc"}], defect_class="scratch")
        # closed: must not fire
        _alert(conn, alert_id=closed_id, ts=t0, state="open", asset=oven, severity="warning", opened_at=t0)
        _alert(conn, alert_id=closed_id, ts=t0 + timedelta(minutes=1), state="close", asset=oven,
               severity="warning", opened_at=t0)
        # shadow (a challenger's): never routed
        _alert(conn, alert_id=shadow_id, ts=t0, state="open", asset=oven, severity="critical", opened_at=t0,
               shadow=True)
        _alert(conn, alert_id=retrain_id, ts=t0, state="open", asset=oven, severity="info", opened_at=t0,
               kind="retrain_recommended", route="ml", versions=["spc-v3", "spc-v2", "spc-v3"])
        conn.cursor().executemany(
            "INSERT INTO deadletters (received_at, source_topic, partition, \"offset\", key, reason, error_type, "
            "payload) VALUES (%s, %s, 0, %s, NULL, 'bad json', 'DecodeError', %s)",
            [(now - timedelta(seconds=10 * i), topic, i, f"junk-{i}".encode()) for i in range(12)]
            + [(now - timedelta(hours=1), topic, 99, b"old")])
    yield {"press": press, "oven": oven, "topic": topic}
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM alerts WHERE asset_id = ANY(%s)", ([press, oven],))
        conn.execute("DELETE FROM deadletters WHERE source_topic = %s", (topic,))


def run_as_reader(database_url: str, sql: str) -> tuple[list[tuple], list[tuple[str, int]]]:
    """Run ``sql`` as Grafana's role would: read-only, as ``linewatch_reader``, rolled back."""
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier("linewatch_reader")))
        cur = conn.execute(sql)
        rows = cur.fetchall()
        return rows, [(d.name, d.type_code) for d in cur.description or ()]


@pytest.mark.integration
@pytest.mark.parametrize("query", a.RULE_QUERIES, ids=lambda q: q.uid)
def test_every_rule_query_runs_as_the_reader_and_returns_labels_and_one_value(database_url, alert_rows, query):
    (uid, sql), = [(u, s) for u, s in a.iter_rule_sql() if u == query.uid]
    rows, columns = run_as_reader(database_url, sql)
    # Grafana's SQL-table rule: text columns are the instance labels, exactly one number its value.
    assert columns == [(c, TEXT) for c in query.labels] + [(query.value, FLOAT8)], uid
    assert rows, f"{uid} found nothing in the fixture"


@pytest.mark.integration
def test_an_open_incident_fires_once_per_asset_route_and_worst_severity(database_url, alert_rows):
    rows, _ = run_as_reader(database_url, a.OPEN_INCIDENT_SQL)
    mine = [r for r in rows if r[0] in (alert_rows["press"], alert_rows["oven"])]
    # the class the classifier recognised by the latest event names the incident in the notification
    assert mine == [(alert_rows["press"], "maintenance", "critical",
                     "bore (spc, 62%), spindle_rms (signal, 25%), frame (model, 8%)", "scratch", 1.0)]


@pytest.mark.integration
def test_a_retrain_recommendation_names_its_model_versions(database_url, alert_rows):
    rows, _ = run_as_reader(database_url, a.RETRAIN_SQL)
    mine = [r for r in rows if r[0] in (alert_rows["press"], alert_rows["oven"])]
    assert mine == [(alert_rows["oven"], "ml", "info", "spc-v2, spc-v3", 1.0)]


@pytest.mark.integration
def test_dead_letters_count_only_the_recent_window(database_url, alert_rows):
    rows, _ = run_as_reader(database_url, a.DEADLETTER_SQL)
    assert (alert_rows["topic"], 12.0) in rows
    assert a.DEFAULT_DEADLETTER_BURST < 12, "the fixture must be a burst for the rule's threshold"
