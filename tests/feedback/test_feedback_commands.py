"""The operators' commands against the real database and broker: dispositions, proposals, apply, alerts, export."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.errors import DataError
from linewatch.feedback.alerts import hand_made_transitions
from linewatch.feedback.apply import load_registered, serving_model
from linewatch.feedback.maintenance import suppression_windows
from linewatch.kafka import read_to_end
from linewatch.schemas.codec import decode
from linewatch.schemas.messages import Alert, Disposition
from linewatch.schemas.topics import ALERTS, DISPOSITIONS
from tests.feedback.incidents import DETECTOR, insert_alert, register_model

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings, tmp_path):
    return {"LINEWATCH_DATABASE_URL": settings.database_url.get_secret_value(), "LINEWATCH_BROKER_URL":
            settings.broker_url, "LINEWATCH_DATA_DIR": str(tmp_path), "LINEWATCH_OPERATOR": "alice"}


def _asset(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _ok(result):
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def _messages(bootstrap, topic, model):
    """The topic's decodable messages (other tests on the session broker publish bad ones on purpose)."""
    out = []
    for m in read_to_end(bootstrap, topic, group_id=f"t-{uuid.uuid4().hex[:6]}"):
        try:
            out.append(decode(m.value(), model))
        except DataError:
            continue
    return out


def _propose(runner, env, asset, tmp_path):
    out = tmp_path / f"proposals-{uuid.uuid4().hex[:4]}.json"
    _ok(runner.invoke(app, ["thresholds", "propose", "--asset", asset, "--json", str(out)], env=env))
    return json.loads(out.read_text())


def test_a_false_alarm_shows_in_the_next_proposal_and_applying_it_registers_a_new_version(
        env, settings, database_url, bootstrap, tmp_path):
    asset = _asset("fa")
    bundle, ref = register_model(database_url, settings.model_dir, asset)
    assert round(bundle.threshold, 6) == 3.0
    alert_id, _ = insert_alert(database_url, asset, score=3.5, threshold=3.0, version=ref.version)
    runner = CliRunner()
    assert _propose(runner, env, asset, tmp_path) == []

    done = _ok(runner.invoke(app, ["disposition", str(alert_id), "--label", "false_alarm", "--note", "gauge reset"],
                             env=env))
    assert asset in done.output and "spc:bore_mm" in done.output and ref.version in done.output
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT disposition_id, verdict, operator, note FROM dispositions WHERE alert_id = %s",
                              (alert_id,)).fetchall()
    assert [(v, o, n) for _, v, o, n in stored] == [("false_alarm", "alice", "gauge reset")]
    published = [d for d in _messages(bootstrap, DISPOSITIONS.name, Disposition) if d.alert_id == alert_id]
    assert [d.disposition_id for d in published] == [stored[0][0]]
    with psycopg.connect(database_url) as conn:
        details = conn.execute("SELECT verdict, asset_id, detector, calibrated_score, model_id, alert_route "
                               "FROM disposition_details WHERE alert_id = %s", (alert_id,)).fetchall()
    assert details == [("false_alarm", asset, DETECTOR, 3.5, ref.model_id, "quality")]

    [proposal] = _propose(runner, env, asset, tmp_path)
    assert proposal["detector"] == DETECTOR and proposal["action"] == "raise"
    assert proposal["current_threshold"] == 3.0 and proposal["proposed_threshold"] > 3.5
    assert proposal["target_far"] == pytest.approx(10 ** -proposal["proposed_threshold"])
    assert proposal["thin"] and any("thin evidence" in w for w in proposal["warnings"])
    assert proposal["disposition_ids"] == [str(stored[0][0])]

    applied = _ok(runner.invoke(app, ["thresholds", "apply", "--detector", DETECTOR, "--asset", asset,
                                      "--from-proposal", "--actor", "bob"], env=env))
    new_version = applied.stdout.strip().splitlines()[-1]
    assert new_version != ref.version
    with psycopg.connect(database_url) as conn:
        now_serving = serving_model(conn, detector=DETECTOR, asset=asset)
        target = conn.execute("SELECT (calibration->>'target_far')::float, shadow FROM model_versions "
                              "WHERE version = %s", (new_version,)).fetchone()
    assert now_serving.version == new_version and now_serving.model_id == ref.model_id
    assert target == (pytest.approx(10 ** -proposal["proposed_threshold"]), False)
    new = load_registered(database_url, now_serving, cache_dir=tmp_path / "cache")
    assert new.threshold == pytest.approx(proposal["proposed_threshold"])
    change = new.meta["threshold_change"]
    assert change["previous_version"] == ref.version and change["previous_threshold"] == 3.0
    assert change["actor"] == "bob" and change["dispositions"] == [str(stored[0][0])]
    # The score that was a false alarm would not alarm any more; the old version's verdict was an alarm.
    raw = bundle.raw_threshold * 1.0001
    assert bool(bundle.calibrator.is_alarm([raw])[0]) and not bool(new.calibrator.is_alarm([raw])[0])


def test_a_true_defect_between_threshold_and_false_alarm_makes_the_rule_say_it_cannot_clear_both(
        env, settings, database_url, tmp_path):
    asset = _asset("overlap")
    _, ref = register_model(database_url, settings.model_dir, asset)
    fa, _ = insert_alert(database_url, asset, score=3.5, version=ref.version)
    td, _ = insert_alert(database_url, asset, score=3.2, version=ref.version)
    runner = CliRunner()
    _ok(runner.invoke(app, ["disposition", str(fa), "--label", "false_alarm"], env=env))
    _ok(runner.invoke(app, ["disposition", str(td), "--label", "true_defect", "--class", "porosity"], env=env))
    [p] = _propose(runner, env, asset, tmp_path)
    assert p["conflict"] and p["n_false_alarms"] == 1 and p["n_true_defects"] == 1
    assert any("cannot clear both" in w for w in p["warnings"])
    assert p["action"] == "keep" and p["proposed_threshold"] == 3.0  # a missed defect costs 10 false alarms
    cheap_defects = _propose_with_ratio(runner, env, asset, tmp_path, 0.5)
    assert cheap_defects["action"] == "raise" and cheap_defects["defects_missed"] == 1
    assert any("would miss 1 confirmed defect" in w for w in cheap_defects["warnings"])
    refused = runner.invoke(app, ["thresholds", "apply", "--detector", DETECTOR, "--asset", asset,
                                  "--from-proposal"], env=env)
    assert refused.exit_code != 0 and "nothing to apply" in str(refused.exception)
    challenger = _ok(runner.invoke(app, ["thresholds", "apply", "--detector", DETECTOR, "--asset", asset,
                                         "--threshold", "3.6", "--shadow", "--actor", "dan"], env=env))
    shadow_version = challenger.stdout.strip().splitlines()[-1]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT shadow, (calibration->>'target_far')::float FROM model_versions "
                            "WHERE version = %s", (shadow_version,)).fetchone() == (True, pytest.approx(10 ** -3.6))
        assert serving_model(conn, detector=DETECTOR, asset=asset).version == ref.version  # the champion stays


def _propose_with_ratio(runner, env, asset, tmp_path, ratio):
    out = tmp_path / "ratio.json"
    _ok(runner.invoke(app, ["thresholds", "propose", "--asset", asset, "--cost-ratio", str(ratio), "--json",
                            str(out)], env=env))
    return json.loads(out.read_text())[0]


def test_a_disposition_of_an_unknown_alert_says_where_alert_ids_are(env):
    runner = CliRunner()
    missing = runner.invoke(app, ["disposition", str(uuid.uuid4()), "--label", "false_alarm"], env=env)
    assert missing.exit_code != 0 and "linewatch alerts list" in str(missing.exception)
    bad_label = runner.invoke(app, ["disposition", str(uuid.uuid4()), "--label", "maybe"], env=env)
    assert bad_label.exit_code != 0 and "true_defect" in str(bad_label.exception)


def test_an_event_level_disposition_joins_the_events_scores(env, database_url):
    asset = _asset("event")
    _, event = insert_alert(database_url, asset, score=4.0)
    done = _ok(CliRunner().invoke(app, ["disposition", "--event", str(event), "--label", "acceptable_variation"],
                                  env=env))
    assert f"event {event}" in done.output and f"{DETECTOR}@v1" in done.output
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT verdict, detector, calibrated_score, asset_id FROM disposition_details "
                            "WHERE disposition_event_id = %s", (event,)).fetchall()
    assert rows == [("acceptable_variation", DETECTOR, 4.0, asset)]


def test_alerts_are_acknowledged_closed_and_listed_with_their_disposition(env, database_url, bootstrap):
    asset = _asset("ack")
    alert_id, _ = insert_alert(database_url, asset, score=5.0)
    runner = CliRunner()
    _ok(runner.invoke(app, ["alerts", "ack", str(alert_id), "--actor", "carol"], env=env))
    [listed] = [json.loads(line) for line in _ok(runner.invoke(
        app, ["alerts", "list", "--asset", asset, "--json"], env=env)).stdout.splitlines()]
    assert listed["last_state"] == "acknowledge" and listed["acknowledged_by"] == "carol"
    assert listed["closed_at"] is None
    _ok(runner.invoke(app, ["disposition", str(alert_id), "--label", "true_defect", "--class", "scratch"], env=env))
    _ok(runner.invoke(app, ["alerts", "close", str(alert_id), "--note", "tool changed"], env=env))
    assert _ok(runner.invoke(app, ["alerts", "list", "--open", "--asset", asset, "--json"], env=env)).stdout == ""
    table = _ok(runner.invoke(app, ["alerts", "list", "--asset", asset], env=env)).stdout
    assert str(alert_id) in table and "true_defect (scratch)" in table and "spc:bore_mm" in table
    with psycopg.connect(database_url) as conn:
        incident = conn.execute("SELECT last_state, closed_by, verdict, defect_class, duration > interval '0', "
                                "n_events, max_severity FROM alert_incidents WHERE alert_id = %s",
                                (alert_id,)).fetchone()
    assert incident == ("close", "alice", "true_defect", "scratch", True, 3, "warning")
    again = runner.invoke(app, ["alerts", "close", str(alert_id)], env=env)
    assert again.exit_code != 0 and "already closed" in str(again.exception)
    states = [(a.state.value, a.actor) for a in _messages(bootstrap, ALERTS.name, Alert) if a.alert_id == alert_id]
    assert states == [("acknowledge", "carol"), ("close", "alice")]
    with psycopg.connect(database_url) as conn:
        made = [(s, a) for i, s, _, a in hand_made_transitions(conn, since=datetime(2026, 1, 1, tzinfo=UTC))
                if i == alert_id]
    assert made == [("acknowledge", "carol"), ("close", "alice")]


def test_a_maintenance_window_is_declared_once_and_listed(env, database_url):
    asset = _asset("mw")
    runner = CliRunner()
    args = ["maintenance", "add", "--asset", asset, "--from", "2026-03-01T06:00:00Z", "--to", "2026-03-01T08:00:00Z",
            "--reason", "bearing swap"]
    _ok(runner.invoke(app, args, env=env))
    assert "already declared" in _ok(runner.invoke(app, args, env=env)).output
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*), min(created_by) FROM maintenance_windows WHERE asset_id = %s",
                            (asset,)).fetchone() == (1, "alice")
    listed = _ok(runner.invoke(app, ["maintenance", "list", "--asset", asset], env=env)).stdout
    assert "bearing swap" in listed
    with psycopg.connect(database_url) as conn:
        windows = suppression_windows(conn, since=datetime(2026, 3, 1, 7, 0, tzinfo=UTC))
        assert (asset, datetime(2026, 3, 1, 6, 0, tzinfo=UTC), datetime(2026, 3, 1, 8, 0, tzinfo=UTC),
                "bearing swap") in windows
        assert not [w for w in suppression_windows(conn, since=datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
                    if w[0] == asset]
    backwards = runner.invoke(app, ["maintenance", "add", "--asset", asset, "--from", "2026-03-01T08:00:00Z",
                                    "--to", "2026-03-01T06:00:00Z"], env=env)
    assert backwards.exit_code != 0 and "swap --from and --to" in str(backwards.exception)
    naive = runner.invoke(app, ["maintenance", "add", "--asset", asset, "--from", "2026-03-01T08:00:00",
                                "--to", "2026-03-01T09:00:00Z"], env=env)
    assert naive.exit_code != 0 and "no time zone" in str(naive.exception)


def test_the_labelled_set_has_one_row_per_dispositioned_event_with_its_features(env, database_url, tmp_path):
    asset = _asset("export")
    defect, defect_event = insert_alert(database_url, asset, score=6.0)
    fine, fine_event = insert_alert(database_url, asset, score=3.4)
    runner = CliRunner()
    _ok(runner.invoke(app, ["disposition", str(defect), "--label", "true_defect", "--class", "burr"], env=env))
    _ok(runner.invoke(app, ["disposition", str(fine), "--label", "false_alarm"], env=env))
    out = tmp_path / "labelled.csv"
    _ok(runner.invoke(app, ["dispositions", "export", str(out)], env=env))
    rows = {r["event_id"]: r for r in csv.DictReader(out.open()) if r["asset_id"] == asset}
    assert set(rows) == {str(defect_event), str(fine_event)}
    d = rows[str(defect_event)]
    assert (d["verdict"], d["defect_class"], d["alert_id"]) == ("true_defect", "burr", str(defect))
    assert d["modality"] == "spc"
    assert d["model_versions"] == f"{DETECTOR}@v1" and float(d["bore_mm"]) == pytest.approx(25.06)
    assert float(d["runout_um"]) == 3.0 and d["part_id"].startswith("P-")
    only = tmp_path / "defects.csv"
    _ok(runner.invoke(app, ["dispositions", "export", str(only), "--verdict", "true_defect"], env=env))
    assert {r["verdict"] for r in csv.DictReader(only.open())} == {"true_defect"}
    wrong = runner.invoke(app, ["dispositions", "export", str(tmp_path / "x.xlsx")], env=env)
    assert wrong.exit_code != 0 and ".csv or .parquet" in str(wrong.exception)
