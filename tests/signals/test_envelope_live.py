"""Bearing envelope features live: a known shaft speed adds them, a missing one leaves the frame unscored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from linewatch.config import Settings
from linewatch.detectors.bundle import ModelBundle
from linewatch.errors import ConfigError
from linewatch.schemas.codec import decode, encode_signal
from linewatch.schemas.messages import Score, SignalMeta
from linewatch.schemas.rows import ScoreRow
from linewatch.signals.framing import BearingEnvelope, featurize_windows, training_frames, window_feature_names
from linewatch.simulation.signals import NOMINAL_SHAFT_HZ, Fault, simulate_signals
from linewatch.streams.messages import RawMessage
from linewatch.streams.signals_pipeline import SignalsState, score_signals_batch

SCORE = {name: i for i, name in enumerate(ScoreRow.model_fields)}
ENV = ("env_bpfo", "env_bpfi", "env_bsf", "env_ftf")
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Models:
    def __init__(self, *bundles: ModelBundle) -> None:
        self.bundles = list(bundles)

    def models_for(self, modality: str, asset_id: str, sku: str, camera: str = "*") -> list[ModelBundle]:
        return self.bundles


def _sim(faults: list[Fault], seed: int, n: int = 60):
    return simulate_signals(n_machines=1, duration_s=n * 60.0, snapshot_interval_s=60.0, vibration_rate=10_000.0,
                            current_rate=1_000.0, faults=faults, seed=seed)


def _with_speed(messages: list[tuple[SignalMeta, np.ndarray]], speed: float | None):
    return [(m.model_copy(update={"speed_hz": speed}) if m.kind == "vibration" else m, x) for m, x in messages]


def _vibration_only(messages):
    return [(m, x) for m, x in messages if m.kind == "vibration"]


def test_a_vibration_window_with_a_speed_gets_envelope_features_and_others_do_not():
    msgs = _sim([], seed=1, n=2).signal_messages()
    plain = featurize_windows(msgs)
    assert not any(n.startswith("env_") for w in plain for n in w.names)
    timed = featurize_windows(_with_speed(msgs, NOMINAL_SHAFT_HZ))
    by_kind = {w.meta.kind: w.names for w in timed}
    assert set(ENV) <= set(by_kind["vibration"])
    assert not any(n.startswith("env_") for n in by_kind["current"] + by_kind["temperature"])
    assert by_kind["vibration"] == window_feature_names(10_000.0, 10_000, envelope=True)
    # The configured nominal speed of the asset does the same for windows that carry none.
    configured = featurize_windows(msgs, envelope=BearingEnvelope(asset_speed_hz={"machine-01": NOMINAL_SHAFT_HZ}))
    vib = next(w for w in configured if w.meta.kind == "vibration")
    vib_timed = next(w for w in timed if w.meta.kind == "vibration")
    assert np.array_equal(vib.values, vib_timed.values)
    # A window's own speed wins over the configured one.
    other = featurize_windows(_with_speed(msgs, 20.0), envelope=BearingEnvelope(asset_speed_hz={"machine-01": 30.0}))
    assert not np.array_equal(next(w for w in other if w.meta.kind == "vibration").values, vib_timed.values)


def test_the_outer_race_fault_lights_up_the_bpfo_envelope_energy():
    healthy = featurize_windows(_with_speed(_vibration_only(_sim([], seed=2, n=5).signal_messages()), 24.5))
    faulty = featurize_windows(_with_speed(_vibration_only(
        _sim([Fault(0, "outer_race", onset_s=-60.0, growth_s=1.0, max_severity=0.3)], seed=2, n=5)
        .signal_messages()), 24.5))
    i = healthy[0].names.index("env_bpfo")
    assert min(w.values[i] for w in faulty) > max(w.values[i] for w in healthy) + 1.0  # log10: > 10x the energy


def test_a_model_needing_envelope_features_leaves_a_frame_without_speed_unscored(tmp_path):
    train = _with_speed(_sim([], seed=3, n=150).signal_messages(known_good_only=True), NOMINAL_SHAFT_HZ)
    tf = training_frames(train)
    assert any(n.startswith("vibration.env_") for n in tf.feature_names)  # the default model uses them
    bundle = ModelBundle.fit("robust_mahalanobis", tf.X, feature_names=tf.feature_names, target_far=0.05)
    later = [(m.model_copy(update={"start": m.start + timedelta(days=1)}), x)
             for m, x in _sim([], seed=4, n=3).signal_messages()]
    state = SignalsState()
    out = score_signals_batch([RawMessage("signals", 0, i, None, encode_signal(*w)) for i, w in enumerate(later)],
                              Models(bundle), state)
    assert len(out.scores) == 3 and not out.deadletters
    assert all(r[SCORE["ready"]] is False and r[SCORE["is_anomaly"]] is False for r in out.scores)
    note = decode(out.score_messages[0][1], Score).explanation[0].name
    assert note.startswith("unscored: vibration: no shaft speed") and "speed_hz" in note
    assert state.frames.counters()["no_speed"] == 3
    state.save(tmp_path / "state")
    state = SignalsState.load(tmp_path / "state")
    assert state.frames.counters()["no_speed"] == 3
    # The same windows with their speed are scored, after the restart too.
    timed = [(m.model_copy(update={"start": m.start + timedelta(hours=1)}), x) for m, x in _with_speed(later, 24.7)]
    out = score_signals_batch([RawMessage("signals", 0, 10 + i, None, encode_signal(*w))
                               for i, w in enumerate(timed)], Models(bundle), state)
    assert len(out.scores) == 3 and all(r[SCORE["ready"]] is True for r in out.scores)


def test_speed_hz_travels_in_the_envelope_and_the_settings_configure_it(tmp_path):
    msgs = _with_speed(_sim([], seed=5, n=1).signal_messages(), 24.5)
    from linewatch.schemas.codec import decode_signal

    meta, _ = decode_signal(encode_signal(*msgs[0]))
    assert meta.speed_hz == 24.5
    with pytest.raises(ValueError, match="speed_hz"):
        SignalMeta(asset_id="a", sensor="v", kind="vibration", unit="g", start=T0, sample_rate_hz=1e3,
                   n_samples=10, speed_hz=-1.0)
    s = Settings(data_dir=tmp_path, asset_speed_hz={"press-7": 24.75}, bearing_geometry=(8, 6.0, 30.0, 0.0))
    env = BearingEnvelope.from_settings(s.asset_speed_hz, s.bearing_geometry)
    assert env.asset_speed_hz == {"press-7": 24.75} and env.bearing.n_elements == 8
    with pytest.raises(ValueError, match="asset_speed_hz"):
        Settings(data_dir=tmp_path, asset_speed_hz={"press-7": 0.0})
    with pytest.raises(ConfigError, match="pitch_diameter"):
        BearingEnvelope.from_settings({}, (9, 40.0, 30.0, 0.0))
