"""The fusion agent through the real broker, the real worker and the real database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import psycopg
import pytest

from linewatch.kafka import Publisher
from linewatch.schemas.codec import decode
from linewatch.schemas.messages import Alert, MachineState
from linewatch.schemas.topics import ALERTS, MACHINE_STATES, SCORES, SHADOW_SCORES
from linewatch.simulation.scores import T0, plant_scores
from tests.conftest import wait_for
from tests.streams.test_spc_agent import _reader

pytestmark = pytest.mark.integration


def _publish(bootstrap: str, topic: str, scores) -> None:
    pub = Publisher(bootstrap)
    pub.publish(topic, [(s.asset_id.encode(), s.model_dump_json().encode()) for s in scores])
    pub.flush()


def _alert_messages(bootstrap: str, asset: str, expected: int, rounds: int = 30) -> list[Alert]:
    """``asset``'s messages on ``alerts``, once ``expected`` have arrived or after ``rounds`` seconds."""
    consumer = _reader(bootstrap, ALERTS.name)
    seen: list[Alert] = []
    for _ in range(rounds):
        for m in consumer.consume(500, 1.0):
            if m.error() is None and m.key() == asset.encode():
                seen.append(decode(m.value(), Alert))
        if expected and len(seen) >= expected:
            break
    consumer.close()
    return seen


def test_a_fault_in_two_modalities_is_one_alert_with_both_contributors(worker, bootstrap, database_url):
    asset = f"fu-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(7)
    n = 120
    tails = {m: rng.uniform(size=n) for m in ("spc", "frames", "signals")}
    tails["spc"][40:60] = 1e-5
    tails["frames"][45:60] = 1e-6
    names = {"spc": "bore_mm", "frames": "region 10,10-30,30", "signals": "vibration.rms"}
    scores = plant_scores(asset, tails, names=names, start=T0 + timedelta(days=1))
    _publish(bootstrap, SCORES.name, scores)
    assert wait_for("SELECT count(*) FROM alerts WHERE asset_id = %s AND state = 'close'", (asset,), 1,
                    database_url) == 1
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT state, alert_id, contributors, route, shadow, jsonb_array_length(scores) "
                            "FROM alerts WHERE asset_id = %s ORDER BY ts, state", (asset,)).fetchall()
    states = [r[0] for r in rows]
    assert states.count("open") == 1 and states[-1] == "close", states
    assert len({r[1] for r in rows}) == 1  # one incident, not one per modality or per part
    last = [r for r in rows if r[0] != "close"][-1]
    assert {c["modality"] for c in last[2][:3]} >= {"spc", "frames"}
    assert not any(r[4] for r in rows) and all(r[5] > 0 for r in rows)
    messages = _alert_messages(bootstrap, asset, len(rows))
    assert [m.state.value for m in messages] == states


def test_shadow_alerts_are_stored_but_never_routed(worker, bootstrap, database_url):
    asset = f"sh-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(8)
    n = 80
    champion = plant_scores(asset, {"spc": rng.uniform(size=n)}, start=T0 + timedelta(days=2))
    tails = rng.uniform(size=n)
    tails[30:50] = 1e-6  # the challenger sees something the champion does not
    shadow = [s.model_copy(update={"shadow": True, "model_version": "v2-challenger"})
              for s in plant_scores(asset, {"spc": tails}, start=T0 + timedelta(days=2))]
    _publish(bootstrap, SHADOW_SCORES.name, shadow)
    _publish(bootstrap, SCORES.name, champion)
    assert wait_for("SELECT count(*) FROM alerts WHERE asset_id = %s AND shadow AND state = 'open'", (asset,), 1,
                    database_url) == 1
    wait_for("SELECT count(*) FROM alerts WHERE asset_id = %s AND shadow AND state = 'close'", (asset,), 1,
             database_url, timeout=10)
    with psycopg.connect(database_url) as conn:
        live = conn.execute("SELECT count(*) FROM alerts WHERE asset_id = %s AND NOT shadow", (asset,)).fetchone()[0]
        versions = conn.execute("SELECT model_versions FROM alerts WHERE asset_id = %s AND shadow LIMIT 1",
                                (asset,)).fetchone()[0]
    assert live == 0 and "v2-challenger" in versions
    # the shadow alert is stored above, so the agent is past it: a few seconds of the topic say enough
    assert _alert_messages(bootstrap, asset, 0, rounds=4) == []


def test_idle_machines_do_not_alert(worker, bootstrap, database_url):
    asset = f"id-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(9)
    n = 80
    start = T0 + timedelta(days=3)
    tails = {"spc": rng.uniform(size=n), "signals": rng.uniform(size=n)}
    tails["spc"][20:40] = tails["signals"][20:40] = 1e-7
    pub = Publisher(bootstrap)
    states = [MachineState(asset_id=asset, ts=start + timedelta(seconds=150), state="idle", reason="no orders"),
              MachineState(asset_id=asset, ts=start + timedelta(seconds=450), state="running")]
    pub.publish(MACHINE_STATES.name, [(asset.encode(), s.model_dump_json().encode()) for s in states])
    pub.flush()
    _publish(bootstrap, SCORES.name, plant_scores(asset, tails, start=start))
    assert wait_for("SELECT count(*) FROM alert_suppressions WHERE asset_id = %s AND reason = 'machine_state'",
                    (asset,), 15, database_url) >= 15
    assert wait_for("SELECT count(*) FROM machine_states WHERE asset_id = %s", (asset,), 2, database_url) == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM alerts WHERE asset_id = %s", (asset,)).fetchone()[0] == 0


def test_an_undecodable_score_is_a_dead_letter_and_fusion_goes_on(worker, bootstrap, database_url):
    asset = f"dl-{uuid.uuid4().hex[:6]}"
    pub = Publisher(bootstrap)
    pub.publish(SCORES.name, [(asset.encode(), b"\x00\xffnot a score " + asset.encode()),
                              (asset.encode(), b'{"schema_version": 1, "asset_id": "' + asset.encode() + b'"}')])
    pub.flush()
    assert wait_for("SELECT count(*) FROM deadletters WHERE source_topic = 'scores' AND key = %s",
                    (asset.encode(),), 2, database_url) == 2


def test_a_moved_baseline_is_drift_and_a_retrain_alert_never_a_new_threshold(worker, bootstrap, database_url):
    asset = f"dr-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(10)
    n = 1500
    tails = rng.uniform(size=n)
    tails[500:] = tails[500:] ** 3  # e.g. a lighting change: every frame now looks a little unusual
    scores = plant_scores(asset, {"frames": tails}, start=T0 + timedelta(days=4))
    with psycopg.connect(database_url) as conn:
        versions_before = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    _publish(bootstrap, SCORES.name, scores)
    assert wait_for("SELECT count(*) FROM alerts WHERE asset_id = %s AND kind = 'retrain_recommended'", (asset,), 1,
                    database_url) >= 1
    with psycopg.connect(database_url) as conn:
        first_drift = conn.execute("SELECT min(ts) FROM drift WHERE asset_id = %s AND drifted", (asset,)).fetchone()[0]
        clean = conn.execute("SELECT count(*) FROM drift WHERE asset_id = %s AND drifted AND ts < %s",
                             (asset, scores[500].ts)).fetchone()[0]
        route = conn.execute("SELECT route FROM alerts WHERE asset_id = %s AND kind = 'retrain_recommended'",
                             (asset,)).fetchone()[0]
        versions_after = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    assert first_drift >= scores[500].ts and clean == 0 and route == "ml"
    assert versions_after == versions_before  # no threshold moved by itself: the alert says retrain


def test_evidence_only_the_combination_of_two_modalities_shows_is_alerted(worker, bootstrap, database_url):
    """SPC and the image of the same parts each at a tail of 0.0012 (under every detector's 1e-3 threshold).

    Each asset ends with a strong fault (parts 80-100) as a marker: its alert proves the earlier parts
    were fused, so "no alert for parts 20-30" is an observation, not a race.
    """
    start = T0 + timedelta(days=5)
    rng = np.random.default_rng(11)
    n = 110
    assets = {}
    for case, where in (("both", ("spc", "frames")), ("spc", ("spc",)), ("frames", ("frames",))):
        asset = f"cb-{case}-{uuid.uuid4().hex[:6]}"
        tails = {m: rng.uniform(0.05, 1.0, size=n) for m in ("spc", "frames", "signals")}
        for m in where:
            tails[m][20:30] = 0.0012
        scores = plant_scores(asset, tails, start=start)
        assert not any(s.is_anomaly for s in scores)  # no detector flags any of them on its own
        tails["spc"][80:100] = 1e-8
        _publish(bootstrap, SCORES.name, plant_scores(asset, tails, start=start))
        assets[case] = asset
    marker = start + timedelta(seconds=80 * 10)
    for case, asset in assets.items():
        # (for "both" the marker re-opens the earlier alert within its cool-down: an open row at the marker)
        assert wait_for("SELECT count(*) FROM alerts WHERE asset_id = %s AND state = 'open' AND ts >= %s",
                        (asset, marker), 1, database_url) >= 1, case
    with psycopg.connect(database_url) as conn:
        early = {case: conn.execute("SELECT count(*) FROM alerts WHERE asset_id = %s AND state = 'open' "
                                    "AND ts < %s", (asset, marker)).fetchone()[0]
                 for case, asset in assets.items()}
    assert early == {"both": 1, "spc": 0, "frames": 0}
