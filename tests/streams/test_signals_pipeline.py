"""The signals batch processor without Kafka: feature rows, dead letters, frames, quality suppression, state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import numpy as np
import pytest

import linewatch.signals.framing as framing
from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.calibration import make_calibrator
from linewatch.detectors.dynamic_pca import DynamicPCA
from linewatch.errors import ConfigError
from linewatch.schemas.codec import decode, encode_envelope, encode_signal
from linewatch.schemas.ids import event_id
from linewatch.schemas.messages import Score, SignalMeta
from linewatch.schemas.rows import ScoreRow
from linewatch.schemas.signal_rows import SignalFeatureRow
from linewatch.signals.framing import split_feature_name, training_frames
from linewatch.simulation.signals import simulate_signals
from linewatch.streams.messages import RawMessage
from linewatch.streams.signals_pipeline import SignalsState, score_signals_batch

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
COLUMNS = {name: i for i, name in enumerate(SignalFeatureRow.model_fields)}
SCORE = {name: i for i, name in enumerate(ScoreRow.model_fields)}


class Models:
    """A model source that gives every asset the same bundles."""

    def __init__(self, *bundles: ModelBundle) -> None:
        self.bundles = list(bundles)

    def models_for(self, modality: str, asset_id: str, sku: str, camera: str = "*") -> list[ModelBundle]:
        return self.bundles


def meta(sensor: str, start: datetime, n: int, rate: float, asset: str = "m1", kind: str = "other") -> SignalMeta:
    return SignalMeta(asset_id=asset, sensor=sensor, kind=kind, unit="u", start=start, sample_rate_hz=rate,
                      n_samples=n)


def vib(start: datetime, amplitude: float = 1.0, asset: str = "m1", seed: int = 0) -> tuple[SignalMeta, np.ndarray]:
    """A 1 s, 1 kHz window: a 50 Hz tone plus a little noise."""
    t = np.arange(1000) / 1000.0
    x = amplitude * np.sin(2 * np.pi * 50.0 * t) + 0.01 * np.random.default_rng(seed).normal(size=1000)
    return meta("vib", start, 1000, 1000.0, asset, "vibration"), x.astype(np.float32)


def temp(start: datetime, value: float = 40.0, asset: str = "m1") -> tuple[SignalMeta, np.ndarray]:
    return meta("temp", start, 1, 1.0, asset, "temperature"), np.array([value], dtype=np.float32)


def raw(windows: list[tuple[SignalMeta, np.ndarray] | bytes | None], first_offset: int = 0) -> list[RawMessage]:
    out = []
    for i, w in enumerate(windows):
        value = w if isinstance(w, bytes | None) else encode_signal(*w)
        out.append(RawMessage("signals", 0, first_offset + i, b"m1", value))
    return out


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """robust_mahalanobis on vib.rms ~ 0.707 and temp.mean ~ 40."""
    rng = np.random.default_rng(0)
    X = np.column_stack([0.7071 + 0.01 * rng.normal(size=2000), 40.0 + 0.5 * rng.normal(size=2000)])
    return ModelBundle.fit("robust_mahalanobis", X, feature_names=["vib.rms", "temp.mean"], target_far=0.01)


def test_feature_rows_hold_hand_checked_features():
    t = np.arange(1000) / 1000.0
    # A sine plus a whisper of noise: an exactly periodic digital sine repeats its extreme sample
    # every period, which the quality gate's rail-less clipping heuristic rightly calls saturated.
    noise = 1e-4 * np.random.default_rng(0).normal(size=1000)
    sine = (2.0 * np.sin(2 * np.pi * 50.0 * t) + noise).astype(np.float32)
    out = score_signals_batch(raw([(meta("vib", T0, 1000, 1000.0), sine), temp(T0, 41.5)]), Models())
    assert out.counts["windows"] == 2 and out.counts["samples"] == 1001 and out.counts["unscored"] == 2
    assert not out.scores
    features = out.tables[SignalFeatureRow]
    row, slow = features
    assert all(len(r) == len(COLUMNS) for r in features)
    assert row[COLUMNS["ts"]] == T0 and row[COLUMNS["event_id"]] == meta("vib", T0, 1000, 1000.0).event_id
    assert row[COLUMNS["rms"]] == pytest.approx(np.sqrt(2.0), rel=1e-4)  # A / sqrt(2)
    assert row[COLUMNS["peak"]] == pytest.approx(2.0, rel=1e-3)
    assert row[COLUMNS["crest_factor"]] == pytest.approx(np.sqrt(2.0), rel=1e-3)
    assert row[COLUMNS["kurtosis"]] == pytest.approx(1.5, rel=1e-3)  # a sine's kurtosis
    assert row[COLUMNS["mean"]] == pytest.approx(0.0, abs=1e-4)
    assert row[COLUMNS["dominant_hz"]] == pytest.approx(50.0, abs=0.05)
    assert row[COLUMNS["spectral_centroid_hz"]] == pytest.approx(50.0, abs=1.0)
    assert row[COLUMNS["quality"]] == []
    features = json.loads(row[COLUMNS["features"]])
    assert features["rms"] == row[COLUMNS["rms"]] and "band_250_500hz" in features
    # A one-sample thermocouple window: its reading, no spectrum.
    assert slow[COLUMNS["mean"]] == pytest.approx(41.5)
    assert slow[COLUMNS["spectral_centroid_hz"]] is None and slow[COLUMNS["dominant_hz"]] is None


def test_bad_envelopes_become_dead_letters_and_the_batch_goes_on():
    good = vib(T0)
    m, x = vib(T0 + timedelta(seconds=1))
    short_payload = encode_envelope(m, x[:10].tobytes())
    nan = x.copy()
    nan[3] = np.nan
    nan_payload = encode_envelope(m, nan.tobytes())
    out = score_signals_batch(raw([b"\x00garbage", good, short_payload, None, nan_payload, temp(T0)]), Models())
    assert out.counts["windows"] == 2 and len(out.tables[SignalFeatureRow]) == 2
    reasons = [d.reason for d in out.deadletters.items]
    assert [d.offset for d in out.deadletters.items] == [0, 2, 3, 4]
    assert "not a linewatch envelope" in reasons[0]
    assert "header announces 1000 float32 samples" in reasons[1]
    assert "tombstone" in reasons[2]
    assert "NaN or infinite" in reasons[3]
    assert all(d.source_topic == "signals" for d in out.deadletters.items)


def test_features_run_once_per_group_of_equal_length_and_rate(monkeypatch):
    calls: list[tuple[int, int]] = []
    real = framing.extract_features

    def counting(x, cfg, **kw):
        calls.append(x.shape)
        return real(x, cfg, **kw)

    monkeypatch.setattr(framing, "extract_features", counting)
    windows = [vib(T0 + timedelta(seconds=i), seed=i) for i in range(5)]
    windows += [(meta("cur", T0 + timedelta(seconds=i), 400, 400.0), np.ones(400, np.float32) * i) for i in range(3)]
    windows += [temp(T0 + timedelta(seconds=i)) for i in range(4)]  # too short for a spectrum: no call
    out = score_signals_batch(raw(windows), Models())
    assert out.counts["windows"] == 12
    assert sorted(calls) == [(3, 400), (5, 1000)]


def test_a_frame_scores_once_every_sensor_of_its_slot_has_arrived(bundle):
    state = SignalsState()
    first = score_signals_batch(raw([vib(T0)]), Models(bundle), state)
    assert len(first.tables[SignalFeatureRow]) == 1 and not first.scores  # temperature of this slot still missing
    second = score_signals_batch(raw([temp(T0 + timedelta(milliseconds=300))], 1), Models(bundle), state)
    assert len(second.scores) == 1 and second.counts["frames"] == 1
    row = second.scores[0]
    assert row[SCORE["ts"]] == T0 and row[SCORE["modality"]] == "signals"
    assert row[SCORE["event_id"]] == event_id("signal_frame", "m1", T0.isoformat())
    assert row[SCORE["is_anomaly"]] is False and row[SCORE["ready"]] is True
    score = decode(second.score_messages[0][1], Score)
    assert score.event_id == row[SCORE["event_id"]] and score.model_version == bundle.version
    assert {c.name for c in score.explanation} == {"vib.rms", "temp.mean"}
    # A redelivered window of the same slot does not score the frame again.
    again = score_signals_batch(raw([vib(T0)]), Models(bundle), state)
    assert len(again.tables[SignalFeatureRow]) == 1 and not again.scores
    # A loud machine is flagged and its vibration named first.
    t1 = T0 + timedelta(seconds=60)
    loud = score_signals_batch(raw([vib(t1, amplitude=3.0), temp(t1)]), Models(bundle), state)
    assert loud.counts["anomalies"] == 1
    assert loud.scores[0][SCORE["top_feature"]] == "vib.rms"
    assert decode(loud.score_messages[0][1], Score).explanation[0].name == "vib.rms"


def test_a_bad_sensor_suppresses_the_assets_anomaly_flags(bundle):
    state = SignalsState()
    t1 = T0 + timedelta(seconds=60)
    loud = vib(t1, amplitude=3.0 * np.sqrt(2.0))  # rms 3: far above normal, and flagged
    stuck = (meta("vib", T0, 1000, 1000.0, kind="vibration"), np.full(1000, 3.0, dtype=np.float32))  # rms 3, flat
    out = score_signals_batch(raw([stuck, temp(T0), loud, temp(t1)]), Models(bundle), state)
    flat_row, loud_row = out.scores
    features = out.tables[SignalFeatureRow]
    assert features[0][COLUMNS["quality"]] == ["flatline"] and features[2][COLUMNS["quality"]] == []
    assert loud_row[SCORE["is_anomaly"]] is True
    assert flat_row[SCORE["is_anomaly"]] is False and flat_row[SCORE["ready"]] is False
    assert flat_row[SCORE["raw_score"]] == 0.0 and out.counts["suppressed"] == 1 and out.counts["anomalies"] == 1
    assert flat_row[SCORE["top_feature"]] == "data quality: vib flatline"
    assert decode(out.score_messages[0][1], Score).explanation[0].name == "data quality: vib flatline"


def test_a_sensor_that_never_comes_is_reported_missing_and_scored_neutral(bundle):
    state = SignalsState(retention_s=3.0)
    windows = [vib(T0 + timedelta(seconds=i), seed=i) for i in range(8)]
    out = score_signals_batch(raw(windows), Models(bundle), state)
    assert out.scores, "slots older than the retention must be reported"
    assert all(r[SCORE["ready"]] is False and r[SCORE["is_anomaly"]] is False for r in out.scores)
    assert {r[SCORE["top_feature"]] for r in out.scores} == {"data quality: temp missing"}
    assert [r[SCORE["ts"]] for r in out.scores] == [T0 + timedelta(seconds=i) for i in range(len(out.scores))]
    assert all(r[SCORE["raw_score"]] == 0.0 and r[SCORE["tail_probability"]] == 1.0 for r in out.scores)
    assert len(out.scores) == 5  # slots whose windows ended at or before the newest end (8 s) minus 3 s


def test_state_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    X = np.column_stack([0.7071 + 0.01 * rng.normal(size=600), 40.0 + 0.5 * rng.normal(size=600)])
    lagged = ModelBundle.fit(DynamicPCA(lags=1), X, feature_names=["vib.rms", "temp.mean"], target_far=0.01)
    state = SignalsState()
    first = score_signals_batch(raw([vib(T0), temp(T0), vib(T0 + timedelta(seconds=10))]), Models(lagged), state)
    assert [r[SCORE["ready"]] for r in first.scores] == [False]  # the first row has no lagged predecessor
    state.save(tmp_path / "state")
    restored = SignalsState.load(tmp_path / "state")
    out = score_signals_batch(raw([temp(T0 + timedelta(seconds=10))]), Models(lagged), restored)
    # The restored state completes the held frame and continues the lags: the row is ready.
    assert len(out.scores) == 1 and out.scores[0][SCORE["ready"]] is True
    assert out.scores[0][SCORE["ts"]] == T0 + timedelta(seconds=10)


class Spy:
    """A detector that records the rows it is asked to score."""

    name: ClassVar[str] = "spy"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def score(self, X: np.ndarray) -> np.ndarray:
        self.seen.append(X.copy())
        return np.zeros(len(X))


def test_training_rows_are_exactly_the_rows_the_pipeline_scores():
    sim = simulate_signals(n_machines=2, duration_s=300.0, snapshot_interval_s=30.0, vibration_rate=2000.0,
                           current_rate=500.0, faults=[], seed=3)
    messages = sim.signal_messages()
    tf = training_frames(messages)
    assert tf.X.shape == (20, len(tf.feature_names)) and "temperature.mean" in tf.feature_names
    spy = Spy()
    cal = make_calibrator("empirical", 0.1, n_normal=100).fit(np.random.default_rng(0).normal(size=100))
    bundle = ModelBundle(detector=spy, calibrator=cal, feature_names=tf.feature_names, meta={"version": "v"})
    out = score_signals_batch(raw(messages), Models(bundle))
    assert len(out.scores) == 20
    assert np.array_equal(np.vstack(spy.seen), tf.X)  # same assets in the same order, same values


def test_feature_names_split_into_sensor_and_feature():
    assert split_feature_name("vibration.kurtosis") == ("vibration", "kurtosis")
    assert split_feature_name("pump.de.band_39.0625_78.125hz") == ("pump.de", "band_39.0625_78.125hz")
    with pytest.raises(ConfigError, match=r"not '<sensor>\.<feature>'"):
        split_feature_name("bore_diameter_mm")
