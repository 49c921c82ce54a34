"""Signal simulator: seeded, labelled, and each fault shows up where the physics says it should."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.errors import ConfigError
from linewatch.signals.features import FeatureConfig, extract_features, feature_names
from linewatch.signals.framing import training_frames
from linewatch.simulation.signals import FAULT_KINDS, Fault, simulate_signals

DUR = 1800.0
ONSET = 600.0
SMALL = {"duration_s": DUR, "snapshot_interval_s": 60.0, "vibration_rate": 10_000.0, "current_rate": 2_000.0}


@pytest.fixture(scope="module")
def sim():
    faults = [Fault(machine=m, kind=k, onset_s=ONSET, growth_s=600.0) for m, k in enumerate(FAULT_KINDS)]
    return simulate_signals(n_machines=len(FAULT_KINDS) + 1, faults=faults, seed=7, **SMALL)


def test_shapes_labels_and_ground_truth(sim) -> None:
    m, w = len(FAULT_KINDS) + 1, int(DUR / 60)
    assert sim.vibration.shape == (m, w, 10_000) and sim.vibration.dtype == np.float32
    assert sim.current.shape == (m, w, 2000) and sim.temperature.shape == (m, w, 1)
    assert not sim.labels[-1].any()  # the last machine stays healthy
    for i, kind in enumerate(FAULT_KINDS):
        lab = sim.labels[i]
        assert lab.tolist() == (sim.elapsed > ONSET).tolist()
        assert set(sim.fault_kind[i][lab].tolist()) == {kind}
        sev = sim.severity[i][lab]
        assert (np.diff(sev) >= 0).all() and sev[-1] == pytest.approx(1.0)


def test_seeded_and_deterministic() -> None:
    kw = {"n_machines": 2, "duration_s": 300.0, "snapshot_interval_s": 60.0, "vibration_rate": 2000.0}
    a, b, c = simulate_signals(seed=1, **kw), simulate_signals(seed=1, **kw), simulate_signals(seed=2, **kw)
    np.testing.assert_array_equal(a.vibration, b.vibration)
    np.testing.assert_array_equal(a.temperature, b.temperature)
    assert not np.array_equal(a.vibration, c.vibration)
    assert simulate_signals(faults=[], seed=1, **kw).labels.sum() == 0


def _features(sim, machine: int):
    cfg = FeatureConfig(sample_rate=10_000.0, bearing=sim.bearing, envelope_band=(2000.0, 4500.0))
    F = extract_features(sim.vibration[machine], cfg, shaft_hz=sim.shaft_hz[machine])
    names = feature_names(cfg)
    early = F[sim.elapsed < ONSET].mean(axis=0)
    late = F[-5:].mean(axis=0)
    return {n: late[i] / early[i] for i, n in enumerate(names)}


def test_bearing_faults_light_up_their_envelope_line(sim) -> None:
    outer = _features(sim, FAULT_KINDS.index("outer_race"))
    inner = _features(sim, FAULT_KINDS.index("inner_race"))
    assert outer["env_bpfo"] > 100 and outer["env_bpfo"] > 3 * outer["env_bpfi"]
    assert inner["env_bpfi"] > 50 and inner["env_bpfi"] > 1.5 * inner["env_bpfo"]
    assert outer["kurtosis"] > 2 and outer["crest_factor"] > 1.5


def test_imbalance_and_looseness_show_at_shaft_harmonics(sim) -> None:
    imb = _features(sim, FAULT_KINDS.index("imbalance"))
    loose = _features(sim, FAULT_KINDS.index("looseness"))
    assert imb["band_0_39.0625hz"] > 10  # 1x at ~24.5 Hz
    assert imb["band_39.0625_78.125hz"] < 2  # ... and not 2x
    assert loose["band_78.125_156.25hz"] > 5 and loose["band_156.25_312.5hz"] > 5


def test_temperature_and_current_behave(sim) -> None:
    hot = FAULT_KINDS.index("overheating")
    healthy = len(FAULT_KINDS)
    excess = sim.temperature[hot, -5:, 0].mean() - sim.temperature[healthy, -5:, 0].mean()
    load_gap = 30.0 * (sim.load[hot, -5:].mean() - sim.load[healthy, -5:].mean())
    assert excess - load_gap > 10  # well beyond what load explains


def test_current_follows_load_steps_and_spikes_are_short() -> None:
    long = simulate_signals(
        n_machines=1, duration_s=8 * 3600.0, snapshot_interval_s=60.0, vibration_rate=1000.0,
        current_rate=1000.0, faults=[], seed=3,
    )
    assert np.ptp(long.load[0]) > 0.2  # several load steps in 8 h
    cur = long.current[0].astype(np.float64)
    rms = np.sqrt((cur**2).mean(axis=1))
    calm = ~long.spikes[0]
    assert np.corrcoef(rms[calm], long.load[0][calm])[0, 1] > 0.95
    assert long.spikes[0].any()
    crest = np.abs(cur).max(axis=1) / rms
    assert crest[long.spikes[0]].min() > crest[calm].max()


def test_windows_become_one_frame_per_snapshot_through_the_live_framing(sim) -> None:
    frames = training_frames(sim.signal_messages(), drop_constant=False, include_flagged=True)
    assert len(frames.X) == sim.starts.size * len(sim.machines)
    assert set(frames.assets) == set(sim.machines)
    healthy = sim.signal_messages(known_good_only=True)
    assert 0 < len(healthy) <= len(sim.signal_messages())


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        Fault(machine=0, kind="rust", onset_s=0.0, growth_s=1.0)
    with pytest.raises(ConfigError):
        elsewhere = Fault(machine=3, kind="imbalance", onset_s=0, growth_s=1)
        simulate_signals(n_machines=1, duration_s=100.0, faults=[elsewhere])
    with pytest.raises(ConfigError):
        simulate_signals(window_s=120.0, snapshot_interval_s=60.0)
