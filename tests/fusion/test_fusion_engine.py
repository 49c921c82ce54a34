"""The fusion engine on synthetic calibrated scores: combination, one alert per problem, suppression, FAR."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from linewatch.fusion.engine import FusionConfig, FusionEngine
from linewatch.simulation.scores import T0, normal_tails, plant_scores, score


def _uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(size=n)


def _run(scores, config: FusionConfig | None = None):
    engine = FusionEngine(config)
    out = engine.ingest(scores)
    out.extend(engine.flush())
    return engine, out


def test_two_moderately_unusual_modalities_alert_where_neither_does_alone() -> None:
    rng = np.random.default_rng(1)
    n = 200
    spc, frames, signals = rng.uniform(size=n), rng.uniform(size=n), rng.uniform(size=n)
    spc[100:110] = frames[100:110] = 0.0012  # -log10 = 2.92: under every detector's threshold of 3
    _, both = _run(plant_scores("cell-1", {"spc": spc, "frames": frames, "signals": signals}))
    opened = [a.message for a in both.alerts if a.message.state == "open"]
    assert len(opened) == 1
    assert {c.modality for c in opened[0].contributors[:2]} == {"spc", "frames"}
    assert not any(s.is_anomaly for s in plant_scores("cell-1", {"spc": spc, "frames": frames}))
    for alone in ("spc", "frames"):
        tails = {"spc": rng.uniform(size=n), "frames": rng.uniform(size=n), "signals": rng.uniform(size=n)}
        tails[alone][100:110] = 0.0012
        _, out = _run(plant_scores("cell-1", tails))
        assert not [a for a in out.alerts if a.message.state == "open"], alone


def test_a_multimodal_fault_is_one_alert_that_names_both_and_closes_after_recovery() -> None:
    rng = np.random.default_rng(2)
    n = 300
    tails = {m: rng.uniform(size=n) for m in ("spc", "frames", "signals")}
    tails["signals"][100:160] = 1e-6  # bearing: vibration first ...
    tails["spc"][130:160] = 1e-5  # ... then the dimensions
    names = {"signals": "vibration.env_bpfo", "spc": "runout_mm", "frames": "region 1,1-5,5"}
    _, out = _run(plant_scores("cell-2", tails, names=names))
    states = [a.message.state.value for a in out.alerts]
    assert states.count("open") == 1 and states.count("close") == 1, states
    assert states[-1] == "close"
    first = out.alerts[0].message
    assert first.contributors[0].name == "vibration.env_bpfo" and first.route.value == "maintenance"
    last_update = [a.message for a in out.alerts if a.message.state.value in ("update", "open")][-1]
    assert {"signals", "spc"} <= {c.modality for c in last_update.contributors}
    assert last_update.severity.value == "critical"  # two modalities flag the same parts on their own
    closed = out.alerts[-1].message
    assert closed.ts > T0 + timedelta(seconds=160 * 10)
    assert {str(r.event_id) for r in closed.scores} and len(closed.event_ids) > 0


def test_idle_and_maintenance_do_not_alert_and_are_recorded_as_suppressed() -> None:
    rng = np.random.default_rng(3)
    n = 200
    tails = {"spc": rng.uniform(size=n), "signals": rng.uniform(size=n)}
    tails["spc"][50:70] = 1e-6
    tails["signals"][50:70] = 1e-6
    states = ["running"] * n
    states[45:75] = ["idle"] * 30
    _, out = _run(plant_scores("cell-3", tails, machine_state=states))
    assert not out.alerts
    assert {s.reason for s in out.suppressed} == {"machine_state"} and len(out.suppressed) >= 20

    engine = FusionEngine()
    engine.set_maintenance([("*", T0 + timedelta(seconds=400), T0 + timedelta(seconds=800), "bearing swap")])
    out = engine.ingest(plant_scores("cell-3", tails))
    assert not out.alerts and {s.reason for s in out.suppressed} == {"maintenance"}


def test_the_data_quality_gate_suppresses_instead_of_alerting() -> None:
    scores = [score("cell-4", "signals", T0 + timedelta(seconds=10 * i), 1e-6,
                    notes=("data quality: vibration flatline",)) for i in range(20)]
    _, out = _run(scores)
    assert not out.alerts and {s.reason for s in out.suppressed} == {"data_quality"}


def test_redelivered_scores_change_nothing_and_alert_ids_are_deterministic() -> None:
    rng = np.random.default_rng(4)
    tails = {"spc": rng.uniform(size=100), "frames": rng.uniform(size=100)}
    tails["frames"][40:50] = 1e-7
    scores = plant_scores("cell-5", tails)
    a = FusionEngine()
    first = a.ingest(scores)
    again = a.ingest(scores)
    assert again.duplicates == len(scores) and not again.alerts
    b = FusionEngine()
    other = b.ingest(scores)
    assert [e.row() for e in first.alerts] == [e.row() for e in other.alerts]


def test_a_part_waits_for_its_frame_but_not_past_the_lateness() -> None:
    engine = FusionEngine(FusionConfig(lateness_s=60))
    ts = T0
    warm = [score("cell-6", m, ts, 0.5, part_id="p0") for m in ("spc", "frames")]
    engine.ingest(warm)
    out = engine.ingest([score("cell-6", "spc", ts + timedelta(seconds=10), 0.5, part_id="p1")])
    assert not [v for v in out.verdicts if v.unit.part_id == "p1"]  # waiting for p1's frame
    out = engine.ingest([score("cell-6", "spc", ts + timedelta(seconds=80), 0.5, part_id="p2")])
    # released without it 60 s later in event time; the camera counts as gone, so p2 is not held either
    assert [v.unit.part_id for v in out.verdicts] == ["p1", "p2"]
    engine.ingest([score("cell-6", m, ts + timedelta(seconds=90), 0.5, part_id="p3") for m in ("spc", "frames")])
    out = engine.ingest([score("cell-6", "spc", ts + timedelta(seconds=100), 0.5, part_id="p4")])
    assert not out.verdicts  # the camera is back: p4 waits for its frame again


@pytest.mark.parametrize("phi", [0.0, 0.8])
def test_the_fused_false_alarm_rate_holds_on_normal_autocorrelated_scores(phi: float) -> None:
    """Units of a normal plant: the share the fusion calls anomalous stays near 10^-threshold, and few alerts open.

    ``phi`` is the autocorrelation of each modality's latent normal score from part to part (charts
    with memory); modalities are correlated 0.1 with each other, as Brown's correction assumes.
    """
    tails = normal_tails(15_000, phi=phi, rho=0.1, seed=5)
    _, out = _run(plant_scores("cell-7", {"spc": tails[:, 0], "frames": tails[:, 1], "signals": tails[:, 2]}))
    parts = [v for v in out.verdicts if v.unit.stream == "parts"]
    realised = np.mean([v.anomalous for v in parts])
    target = 10 ** -FusionConfig().threshold
    assert 0.4 * target <= realised <= 2.5 * target, (realised, target)
    opened = sum(a.message.state == "open" for a in out.alerts)
    # 15,000 parts at one part per 10 s are ~1.7 plant days: at most one false alert per day
    assert opened <= 1, opened


def test_an_alert_carries_the_class_its_scores_recognised_and_its_route() -> None:
    from linewatch.schemas.messages import DefectVerdict

    rng = np.random.default_rng(7)
    n = 120
    tails = {"frames": rng.uniform(size=n)}
    tails["frames"][50:60] = 1e-6
    scores = plant_scores("cell-9", tails)
    labelled = []
    for i, s in enumerate(scores):
        if 50 <= i < 60:  # the classifier saw mostly scratches, one unsure dent, and once nothing it knew
            name, p, route = ("dent", 0.55, "scrap") if i == 52 else ("unknown", 0.4, None) if i == 53 else (
                "scratch", 0.9, "rework")
            s = s.model_copy(update={"defect": DefectVerdict(defect_class=name, confidence=p, route=route,
                                                             classifier_version="c1")})
        labelled.append(s)
    _, out = _run(labelled)
    opened = [a for a in out.alerts if a.message.state == "open"]
    assert len(opened) == 1
    message = opened[0].message
    assert (message.defect_class, message.defect_route.value) == ("scratch", "rework")
    assert opened[0].row()[-2:] == ("scratch", "rework")
    _, plain = _run(scores)  # no classifier: the alert is unclassified, nothing else changes
    first = next(a.message for a in plain.alerts if a.message.state == "open")
    assert first.defect_class is None and first.alert_id == message.alert_id


def test_a_part_waits_for_every_detector_of_the_signals_frame_at_its_own_instant() -> None:
    """A frame at the part's very instant is its context: the part is decided on all of the frame's detectors.

    The worker's signals agent publishes one model's scores of a batch, then the next model's, so the fusion
    agent can hold the frame's first detector and not yet its second; a replay delivers both together. Deciding
    the part on the half frame made live and replay alerts differ (found by the live-equals-replay test).
    """
    ts = T0 + timedelta(seconds=30)
    warm = []
    for i in range(3):  # the asset's parts carry SPC; its signals frames two detectors
        t = T0 + timedelta(seconds=10 * i)
        warm += [score("cell-7", "spc", t, 0.5, part_id=f"w{i}"),
                 score("cell-7", "signals", t, 0.5, detector="pca"),
                 score("cell-7", "signals", t, 0.5, detector="autoencoder")]
    part = score("cell-7", "spc", ts, 0.5, part_id="p1")
    first = score("cell-7", "signals", ts, 0.5, detector="pca")
    second = score("cell-7", "signals", ts, 1e-6, detector="autoencoder")

    apart = FusionEngine()
    apart.ingest(warm)
    early = apart.ingest([part, first])
    assert not [v for v in early.verdicts if v.unit.part_id == "p1"]  # the frame's second detector is missing
    late = apart.ingest([second])
    together = FusionEngine()
    together.ingest(warm)
    at_once = together.ingest([part, first, second])

    def decided(out):
        return [(v.unit.stream, v.unit.part_id, v.p_value, [e.event_id for e in v.unit.evidence()])
                for v in out.verdicts]

    assert decided(early) + decided(late) == decided(at_once)
    p1 = next(v for v in at_once.verdicts if v.unit.part_id == "p1")
    assert p1.unit.context is not None and p1.unit.context.detectors == {"pca", "autoencoder"}


def test_a_signals_detector_released_late_without_is_not_waited_for_again() -> None:
    engine = FusionEngine(FusionConfig(lateness_s=60))
    both = [score("cell-8", "signals", T0, 0.5, detector=d) for d in ("pca", "autoencoder")]
    engine.ingest([*both, score("cell-8", "spc", T0, 0.5, part_id="p0")])
    # the autoencoder is retired: the next frames carry pca only
    for i in range(1, 9):
        t = T0 + timedelta(seconds=10 * i)
        out = engine.ingest([score("cell-8", "signals", t, 0.5, detector="pca"),
                             score("cell-8", "spc", t, 0.5, part_id=f"p{i}")])
    # once one frame was released late without it, the later frames and parts are not held for it
    assert [v.unit.part_id for v in out.verdicts if v.unit.part_id] == ["p8"]


def test_a_signals_window_scored_before_the_part_of_its_instant_is_decided_after_it() -> None:
    """The signals agent can be ahead of the SPC agent live; a replay hands both over together.

    The window must still be decided after the part of its instant (and any earlier part), so the
    lifecycle sees the same sequence either way (found by the live-equals-replay test in CI).
    """
    warm = []
    for i in range(3):
        t = T0 + timedelta(seconds=10 * i)
        warm += [score("cell-9", "spc", t, 0.5, part_id=f"w{i}"), score("cell-9", "signals", t, 0.5)]
    ts = T0 + timedelta(seconds=30)
    window, part = score("cell-9", "signals", ts, 1e-6), score("cell-9", "spc", ts, 0.5, part_id="p1")

    ahead = FusionEngine()
    ahead.ingest(warm)
    early = ahead.ingest([window])
    assert not [v for v in early.verdicts if v.unit.ts == ts]  # the part of that instant may still come
    late = ahead.ingest([part])
    together = FusionEngine()
    together.ingest(warm)
    at_once = together.ingest([part, window])

    def decided(out):
        return [(v.unit.stream, v.unit.part_id, v.p_value) for v in out.verdicts]

    assert decided(early) + decided(late) == decided(at_once)
    assert [v.unit.stream for v in at_once.verdicts if v.unit.ts == ts] == ["parts", "signals"]
