"""The multimodal plant: deterministic, decodable by the live decoders, one part id across SPC and
frames, its schedule as documented, and each fault visible to the trained detectors in the
modalities it claims and not in the others."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from linewatch.plant_models import register_plant_models
from linewatch.producers.plant import produce_plant
from linewatch.schemas.codec import decode, decode_frame, decode_signal
from linewatch.schemas.messages import MachineState, SpcRecord
from linewatch.simulation.plant import (
    FAULT_KINDS,
    DriftEvent,
    IdlePeriod,
    PlantConfig,
    PlantFault,
    simulate_plant,
    training_frames,
    training_signals,
    training_spc,
)
from linewatch.streams.frames_pipeline import decode_image
from tests.simulation.plant_scoring import Row, event_score, plant_score_messages, score_plant, visibility_table

SMALL = PlantConfig(duration_s=900.0, frame_size=64)
#: Recent enough for the agents' event-time window, fixed within a test run.
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def test_the_same_seed_gives_the_same_messages_and_another_seed_others() -> None:
    a = simulate_plant(SMALL, start=NOW).messages()
    b = simulate_plant(SMALL, start=NOW).messages()
    c = simulate_plant(replace(SMALL, seed=1), start=NOW).messages()
    assert [m[:3] for m in a] == [m[:3] for m in b]
    assert [m[2] for m in a] != [m[2] for m in c]


def test_the_default_schedule_has_one_episode_of_each_demo_fault_with_quiet_time_after() -> None:
    sim = simulate_plant(SMALL, start=NOW)
    kinds = {ep.kind: ep for ep in sim.episodes}
    assert set(kinds) == {"bearing_fault", "tool_wear", "cosmetic_defect"}
    assert kinds["bearing_fault"].modalities == ("signals", "spc")
    assert kinds["bearing_fault"].onsets["spc"] > kinds["bearing_fault"].onsets["signals"]  # vibration first
    assert set(kinds["tool_wear"].modalities) == {"spc", "frames"}
    assert kinds["cosmetic_defect"].modalities == ("frames",)
    assert kinds["cosmetic_defect"].culprits == {"frames": ("region",)}
    assert kinds["bearing_fault"].culprits["signals"] == ("vibration.",)
    assert {ep.asset_id for ep in sim.episodes} == set(SMALL.assets)  # spread over the assets
    for ep in sim.episodes:
        assert sim.start + timedelta(seconds=0.1 * SMALL.duration_s) < ep.start
        assert ep.end < sim.end - timedelta(seconds=0.2 * SMALL.duration_s)
    states = [(m.asset_id, m.state) for m in sim.machine_states()]
    assert ("cell-3", "idle") in states and states.count(("cell-3", "running")) == 2
    # Every event of an episode is in the ground truth, and only those.
    assert len(set(sim.truth.values())) == 3


def test_messages_decode_with_the_live_decoders_and_parts_share_their_id() -> None:
    sim = simulate_plant(SMALL, start=NOW)
    msgs = sim.messages()
    assert [m[3] for m in msgs] == sorted(m[3] for m in msgs)  # event-time order
    spc, frames, signals, states = {}, {}, Counter(), []
    for topic, key, value, ts in msgs:
        if topic == "spc":
            rec = SpcRecord.model_validate_json(value)
            spc[rec.part_id] = rec
            assert rec.ts == ts and key == rec.asset_id.encode() and rec.limits
        elif topic == "frames":
            meta, payload = decode_frame(value)
            img = decode_image(meta, payload)
            assert img.shape == (64, 64, 3) and meta.machine_state == "running"
            frames[meta.part_id] = meta
        elif topic == "signals":
            meta, samples = decode_signal(value)
            assert samples.size == meta.n_samples and meta.start == ts
            assert meta.start.microsecond == 0  # whole seconds: the agent's 1 s slots frame them
            signals[(meta.asset_id, meta.machine_state)] += 1
            if meta.kind == "vibration":
                assert meta.speed_hz is not None and 20 < meta.speed_hz < 26
        else:
            states.append(decode(value, MachineState))
    assert set(spc) == set(frames) and len(spc) == len(sim.spc_records())
    for pid, rec in spc.items():
        assert (frames[pid].asset_id, frames[pid].ts, frames[pid].sku) == (rec.asset_id, rec.ts, rec.sku)
    # Idle: no parts, but the signals keep coming, marked idle.
    idle = sim.idle[0]
    lo = sim.start + timedelta(seconds=idle.start_s)
    hi = lo + timedelta(seconds=idle.duration_s)
    assert not [r for r in spc.values() if r.asset_id == idle.asset and lo <= r.ts < hi]
    n_idle = signals[(idle.asset, "idle")]
    assert n_idle == 3 * round(idle.duration_s / SMALL.snapshot_interval_s)
    assert [s.state for s in states if s.asset_id == idle.asset] == ["running", "idle", "running"]


def test_drift_events_step_the_frames_and_the_signals_from_their_time_on() -> None:
    drift = [DriftEvent("cell-1", "lighting_change", 450.0, 1.3),
             DriftEvent("cell-2", "sensor_recalibration", 450.0, 6.0, sensor="temperature")]
    base = simulate_plant(SMALL, faults=[], start=NOW)
    moved = simulate_plant(SMALL, faults=[], drift=drift, start=NOW)
    assert moved.episodes == ()  # drift is not a fault
    cut = NOW + timedelta(seconds=450)
    for before_or_after, ratio in ((False, 1.0), (True, 1.3)):
        pairs = [(a.image.mean(), b.image.mean()) for a, b in zip(base.camera_frames(), moved.camera_frames(),
                                                                   strict=True)
                 if a.asset_id == "cell-1" and (a.ts >= cut) == before_or_after]
        got = np.mean([b / a for a, b in pairs])
        assert got == pytest.approx(ratio, rel=0.05)
    temps = [(a[1][0], b[1][0], a[0].start >= cut) for a, b in zip(base.signal_messages(), moved.signal_messages(),
                                                                     strict=True)
             if a[0].asset_id == "cell-2" and a[0].sensor == "temperature"]
    assert all(abs((b - a) - (6.0 if after else 0.0)) < 1e-3 for a, b, after in temps)


def test_schedules_that_cannot_be_simulated_say_why() -> None:
    with pytest.raises(Exception, match="overlap"):
        simulate_plant(SMALL, faults=[PlantFault("cell-1", "tool_wear", 100, 300),
                                      PlantFault("cell-1", "cosmetic_defect", 200, 100)])
    with pytest.raises(Exception, match="not one of"):
        simulate_plant(SMALL, faults=[PlantFault("press-9", "tool_wear", 100, 300)])
    with pytest.raises(Exception, match="fault kind"):
        PlantFault("cell-1", "gremlins", 0, 1)
    with pytest.raises(Exception, match="state"):
        IdlePeriod("cell-1", 0, 10, state="lunch")


def test_training_data_is_healthy_running_and_the_plants_own_kind() -> None:
    parts = training_spc(SMALL, 300)
    assert len(parts) == 300 and Counter(parts.asset_id) == {a: 100 for a in SMALL.assets}
    images = training_frames(SMALL, 4)
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    wins = training_signals(SMALL, 60.0)
    assert {m.machine_state for m, _ in wins} == {"running"} and len(wins) == 3 * 3 * 6


def test_produce_plant_sends_every_message_to_its_topic_at_the_asked_pace(bootstrap: str) -> None:
    sim = simulate_plant(replace(SMALL, duration_s=60.0), faults=[], idle=[], start=NOW)
    want = Counter(t for t, *_ in sim.messages())
    seen: list[dict[str, int]] = []
    t0 = datetime.now(UTC)
    counts = produce_plant(bootstrap, sim, speed=100.0, progress=seen.append, extra=[("spc", b"not json")])
    took = (datetime.now(UTC) - t0).total_seconds()
    assert counts == {**want, "spc": want["spc"] + 1}
    assert took >= 0.5  # 60 plant seconds at 100x: at least ~0.6 s of pacing
    assert len(seen) > 5 and seen[-1] == counts


# ------------------------------------------------------------------------------------------ detectability
@pytest.fixture(scope="module")
def default_plant(plant_models):
    """The demo's default schedule (40 plant minutes) and every score the live agents' batch functions give it."""
    sim = simulate_plant(replace(PlantConfig(), duration_s=2400.0), start=NOW)
    return sim, plant_score_messages(sim, plant_models)


def _by(rows: list[Row]) -> dict[tuple[str, str, str], Row]:
    return {(r.fault, r.modality, r.detector): r for r in rows}


def test_plant_models_train_fast_and_are_not_provisional(plant_models) -> None:
    assert plant_models.provisional() == []
    assert {b.modality for b in plant_models.bundles()} == {"spc", "signals", "frames"}
    assert any(n.startswith("vibration.env_") for n in plant_models.signals.feature_names)


def test_each_default_fault_shows_in_the_modalities_it_claims_and_not_elsewhere(default_plant) -> None:
    sim, scores = default_plant
    rows = visibility_table(sim, [event_score(s) for s in scores])
    print("\n" + "\n".join(r.line() for r in rows))
    t = _by(rows)
    assert t["bearing_fault", "signals", "dynamic_pca"].share_flagged > 0.7
    assert t["bearing_fault", "spc", "robust_mahalanobis"].share_flagged > 0.6
    assert t["tool_wear", "spc", "robust_mahalanobis"].share_flagged > 0.6
    assert t["tool_wear", "frames", "patchcore"].share_flagged > 0.5
    assert t["cosmetic_defect", "frames", "patchcore"].share_flagged > 0.6
    for r in rows:
        if r.fault in FAULT_KINDS and r.share_top_right is not None and r.share_flagged > 0.5:
            assert r.share_top_right > 0.75, r.line()  # the explanation names the culprit
    # Not where it is not: the faulty asset's other modalities look like normal ones.
    for (fault, modality, _det), r in t.items():
        ep = next((e for e in sim.episodes if e.kind == fault), None)
        if ep is not None and modality not in ep.modalities:
            assert r.share_flagged < 0.05, r.line()
    for det, most in (("robust_mahalanobis", 0.01), ("ewma", 0.01), ("dynamic_pca", 0.02), ("patchcore", 0.03)):
        normal = next(r for r in rows if r.fault == "normal" and r.detector == det)
        assert normal.share_flagged <= most and normal.median_tail > 0.2, normal.line()
    assert next(r for r in rows if r.fault == "idle").share_flagged > 0.5  # what suppression must hold back


def test_the_subtle_fault_is_moderate_in_spc_and_frames_and_invisible_to_univariate_charts(plant_models) -> None:
    faults = [PlantFault("cell-1", "combined_subtle", 600.0, 1200.0)]
    sim = simulate_plant(replace(PlantConfig(), duration_s=2100.0), faults=faults, start=NOW)
    rows = visibility_table(sim, score_plant(sim, plant_models))
    print("\n" + "\n".join(r.line() for r in rows))
    for r in rows:
        if r.fault != "combined_subtle":
            continue
        if r.detector in ("robust_mahalanobis", "patchcore"):
            assert 1e-3 < r.median_tail < 5e-2, r.line()
            assert 0.1 < r.share_flagged < 0.6, r.line()
        else:
            assert r.share_flagged < 0.05, r.line()  # EWMA on each characteristic sees nothing


def test_plant_models_register_a_version_per_model(plant_models, database_url: str, tmp_path) -> None:
    import psycopg

    models = register_plant_models(plant_models, database_url=database_url, model_dir=tmp_path)
    try:
        assert len(models.refs) == 4 and len(models.frames) == 1
        assert {r.modality for r in models.refs} == {"spc", "signals", "frames"}
        assert set(models.seconds) == {"spc", "signals", "frames", "register"}
        with psycopg.connect(database_url) as conn:
            active = conn.execute("SELECT count(*) FROM model_versions WHERE active AND version = ANY(%s)",
                                  ([r.version for r in models.refs],)).fetchone()[0]
        assert active == 4
    finally:
        # These serve every asset of the session database: the agent tests that follow must not see them.
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE model_versions SET active = false WHERE version = ANY(%s)",
                         ([r.version for r in models.refs],))


def test_simulate_plant_writes_the_run_with_its_ground_truth(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from linewatch.cli import app

    result = CliRunner().invoke(app, ["simulate", "plant", "--duration-s", "600", "--frame-size", "64",
                                      "--csv-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "run" / "spc.csv").read_text().splitlines()
    assert len(rows) == 1 + len(list((tmp_path / "run" / "frames").glob("*.png")))
    episodes = json.loads((tmp_path / "run" / "episodes.json").read_text())
    assert {e["kind"] for e in episodes} == {"bearing_fault", "tool_wear", "cosmetic_defect"}
    assert {r.rsplit(",", 1)[1] for r in rows[1:]} >= {"none", "tool_wear"}


def test_the_plants_faults_become_one_alert_each_that_names_the_cause_and_closes(default_plant) -> None:
    """The real detectors' scores of the default plant, fused: one incident per fault, right cause, no false alert."""
    from linewatch.fusion.engine import FusionEngine

    sim, scores = default_plant
    engine = FusionEngine()
    out = engine.ingest(scores)
    out.extend(engine.flush())
    alerts = [a.message for a in out.alerts]
    grace = timedelta(minutes=10)
    for ep in sim.episodes:
        mine = [a for a in alerts if a.asset_id == ep.asset_id and ep.start <= a.opened_at <= ep.end + grace]
        assert len({a.alert_id for a in mine}) == 1, (ep.kind, mine)
        opened = next(a for a in mine if a.state.value == "open")
        top = opened.contributors[0]
        assert top.modality in ep.culprits and top.name.startswith(ep.culprits[top.modality]), (ep.kind, top)
        assert any(a.state.value == "close" and a.ts > ep.end for a in mine), ep.kind
        named = {c.modality for a in mine for c in a.contributors}
        assert set(ep.modalities) <= named, (ep.kind, named)  # the bearing reaches the parts: both are named
    strays = [a for a in alerts if not any(a.asset_id == ep.asset_id and ep.start <= a.opened_at <= ep.end + grace
                                           for ep in sim.episodes)]
    assert not strays, strays
