"""Feature drift: PSI/KS against the reference, ADWIN on the stream, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.errors import ConfigError, DataError
from linewatch.signals.drift import FeatureDriftMonitor, psi


def test_psi_hand_check() -> None:
    # Reference uniform over 4 quantile bins; current puts everything in the lowest bin:
    # PSI = (1 - .25) ln(1/.25) + 3 (0 - .25) ln(0/.25) -> dominated by empty bins, large.
    ref = np.arange(1000.0)[:, None]
    same = psi(ref, ref, bins=4)
    assert same[0] == pytest.approx(0.0, abs=1e-12)
    half = np.concatenate([np.arange(0, 500.0, 2), np.arange(0, 500.0, 2)])[:, None]  # all in the low half
    expected = 2 * (0.5 - 0.25) * np.log(0.5 / 0.25) + 2 * (0.0 - 0.25) * np.log(1e-4 / 0.25)
    assert psi(ref, half, bins=4)[0] == pytest.approx(expected, rel=0.01)


def test_stationary_stream_does_not_drift_and_shift_does() -> None:
    rng = np.random.default_rng(0)
    mon = FeatureDriftMonitor(feature_names=["a", "b", "c"], window=400).fit(rng.normal(size=(3000, 3)))
    rep = mon.update(rng.normal(size=(1500, 3)))
    assert not rep.retrain_recommended, (rep.psi, rep.ks_pvalue, rep.adwin_changes)
    shifted = rng.normal(size=(600, 3))
    shifted[:, 2] += 0.8
    rep = mon.update(shifted)
    assert rep.drifted_features() == ["c"]
    assert rep.adwin_changes[2] >= 1 and rep.psi[2] > 0.25 and rep.ks_pvalue[2] < 1e-6
    assert mon.report().adwin_changes.sum() == 0  # counts restart after each report


def test_short_recent_window_reports_nothing_yet() -> None:
    rng = np.random.default_rng(1)
    mon = FeatureDriftMonitor(feature_names=["a"], window=200, min_window=100).fit(rng.normal(size=(500, 1)))
    rep = mon.update(rng.normal(size=(50, 1)) + 5)
    assert rep.n_recent == 50 and rep.psi[0] == 0.0 and rep.ks_pvalue[0] == 1.0


def test_save_load_gives_the_same_report(tmp_path) -> None:
    rng = np.random.default_rng(2)
    mon = FeatureDriftMonitor(feature_names=["a", "b"], window=300).fit(rng.normal(size=(1000, 2)))
    mon.update(rng.normal(size=(500, 2)))
    mon.report()
    mon.save(tmp_path / "drift")
    back = FeatureDriftMonitor.load(tmp_path / "drift")
    nxt = rng.normal(size=(100, 2)) + np.array([0.0, 2.0])
    a, b = mon.update(nxt), back.update(nxt)
    np.testing.assert_allclose(a.psi, b.psi)
    np.testing.assert_allclose(a.ks_pvalue, b.ks_pvalue)
    assert a.drifted.tolist() == b.drifted.tolist() == [False, True]


def test_errors() -> None:
    with pytest.raises(ConfigError):
        FeatureDriftMonitor(feature_names=["a"], window=10, min_window=20)
    with pytest.raises(DataError):
        FeatureDriftMonitor(feature_names=["a"], min_window=100).fit(np.zeros((10, 1)))
    with pytest.raises(DataError):
        psi(np.zeros((10, 2)), np.zeros((10, 3)))
