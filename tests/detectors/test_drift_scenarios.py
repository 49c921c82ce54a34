"""Drift with the real detectors: a lighting change on camera frames, a sensor recalibration on signals.

Each scenario trains a model on simulated known-good data, streams more known-good data (which
must stay quiet), then the changed data (which must show as drift and end in a retrain
recommendation, and never touch the threshold).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.detectors.drift_tracker import DriftTracker, retrain_alert
from linewatch.detectors.input_drift import InputDriftMonitor
from linewatch.detectors.patchcore import PatchCore
from linewatch.detectors.score_drift import ScoreDriftMonitor, promise_from_report
from linewatch.schemas.messages import AlertKind, Score
from linewatch.signals.framing import training_frames
from linewatch.simulation.frames import render_batch
from linewatch.simulation.signals import simulate_signals

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _scores(bundle: ModelBundle, out, asset: str, start: int) -> list[Score]:
    return [Score(event_id=uuid.uuid5(uuid.NAMESPACE_OID, f"{asset}-{start + i}"), modality=bundle.modality,
                  asset_id=asset, ts=T0 + timedelta(seconds=start + i), detector=bundle.detector_name,
                  model_version=bundle.version, raw_score=float(out.raw[i]),
                  tail_probability=float(out.tail_probability[i]), calibrated_score=float(out.calibrated[i]),
                  threshold=bundle.threshold, is_anomaly=bool(out.is_anomaly[i])) for i in range(len(out.raw))]


def test_a_lighting_change_on_camera_frames_shows_as_score_drift() -> None:
    train, _ = render_batch("bracket-a", n=100, size=128, seed=0)
    test, _ = render_batch("bracket-a", n=400, size=128, seed=0, split="test")
    bundle = ModelBundle.fit(PatchCore(image_size=128, coreset_ratio=0.1, seed=0, provider="cpu"), train,
                             modality="frames", scope=Scope(sku="bracket-a"), target_far=0.05, seed=0)
    threshold = bundle.threshold
    good = bundle.score(test[:150])
    # The lamp ages / the exposure halves: every pixel at half its brightness. (At x0.75 the fast
    # preset's scores move too little to stay drifted for two windows: its features are fairly
    # brightness-robust, which is what one wants of an inspection model.)
    dark = bundle.score((test[150:] * 0.5).round().astype(np.uint8))
    report = bundle.calibration_report
    tracker = DriftTracker(promises={bundle.version: promise_from_report(report, threshold)}, window=150,
                           report_every=25, monitor_params={"min_window": 50})
    calm = tracker.observe(_scores(bundle, good, "cam-line-1", 0))
    assert calm.rows and not any(r.retrain_recommended for r in calm.rows) and not calm.recommendations
    changed = tracker.observe(_scores(bundle, dark, "cam-line-1", 150))
    assert changed.rows[-1].drifted and changed.rows[-1].retrain_recommended
    (rec,) = changed.recommendations
    first = next(i for i, r in enumerate(changed.rows) if r.retrain_recommended)
    assert (first + 1) * 25 <= 2 * 150  # sustained within two windows of the change
    alert = retrain_alert(rec)
    assert alert.kind == AlertKind.RETRAIN_RECOMMENDED and alert.modalities == ["frames"]
    assert bundle.threshold == threshold  # drift recommends retraining; it never moves the threshold


def test_a_vibration_sensor_recalibration_shows_as_input_and_score_drift() -> None:
    sim = simulate_signals(n_machines=1, duration_s=2400 * 30.0, snapshot_interval_s=30.0, faults=[], seed=21,
                           vibration_rate=2000.0, current_rate=500.0)
    change = 1800
    sim.vibration[:, change:] *= 1.4  # the accelerometer's gain is set 40 % high after a recalibration
    features = ["vibration.rms", "vibration.peak", "vibration.crest_factor", "vibration.kurtosis",
                "vibration.band_62.5_125hz", "vibration.band_125_250hz", "vibration.band_250_500hz",
                "vibration.band_500_1000hz"]
    frames = training_frames(sim.signal_messages(), features=features)
    X = frames.X
    assert len(X) == sim.starts.size
    bundle = ModelBundle.fit("hotelling", X[:1200], feature_names=frames.feature_names,
                             modality="signals", target_far=0.01, seed=0)
    assert bundle.input_reference is not None
    inputs = InputDriftMonitor(feature_names=frames.feature_names, reference=bundle.input_reference, window=300,
                               report_every=50)
    before = inputs.update(np.arange(1200, change), X[1200:change])
    assert not any(r.retrain_recommended.any() for r in before)
    after = inputs.update(np.arange(change, len(X)), X[change:])
    moved = {f for f, hit in zip(frames.feature_names, after[-1].retrain_recommended, strict=True) if hit}
    # Gain moves every level feature, never the shape features (kurtosis and crest factor are scale-free).
    assert moved == set(features) - {"vibration.crest_factor", "vibration.kurtosis"}
    assert next(r.ts for r in after if r.retrain_recommended.any()) - change <= 2 * 300

    out = bundle.score(X[1200:])
    scores = ScoreDriftMonitor(promised=promise_from_report(bundle.calibration_report, bundle.threshold),
                               window=300, report_every=50)
    reports = scores.update(np.arange(1200, len(X)), out.tail_probability, out.is_anomaly)
    quiet = [r for r in reports if r.ts < change]
    assert quiet and not any(r.drifted for r in quiet)
    loud = [r for r in reports if r.ts >= change]
    assert loud[-1].alarm_excess and loud[-1].retrain_recommended
    assert sum(r.new_recommendation for r in reports) == 1
