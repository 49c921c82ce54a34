"""Signals backtest: windowing, causal alarm mapping, metrics, delays, blamed sensor."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.backtest.signals import run_signals_backtest, window_features
from linewatch.errors import ConfigError, DataError

KEYS = {"precision", "recall", "f1", "far", "mar", "auroc", "tp", "fp", "tn", "fn"}
KEYS |= {"detector", "n_train", "n_test"}


def _series(n: int, seed: int) -> np.ndarray:
    """Three coupled sensors: load, current follows load, temperature follows current slowly."""
    rng = np.random.default_rng(seed)
    load = np.convolve(rng.normal(size=n + 30), np.ones(30) / 30, mode="valid")[:n] * 5
    current = 10 + 2 * load + 0.1 * rng.normal(size=n)
    temp = 40 + np.convolve(current - 10, np.ones(10) / 10, mode="same") + 0.1 * rng.normal(size=n)
    return np.column_stack([load, current, temp])


@pytest.fixture(scope="module")
def data():
    train = _series(4000, 0)
    test = _series(3000, 1)
    labels = np.zeros(3000, dtype=bool)
    test[2000:2300, 2] += 3.0  # a temperature fault
    labels[2000:2300] = True
    return train, test, labels


def test_window_features_by_hand() -> None:
    ramp = np.column_stack([np.arange(6.0), np.full(6, 2.0)])
    starts, F, names = window_features(ramp, ["r", "c"], window=4, stride=2)
    assert starts.tolist() == [0, 2]
    assert names == [f"{s}.{k}" for s in ("r", "c") for k in ("mean", "std", "min", "max", "slope")]
    np.testing.assert_allclose(F[1, :5], [3.5, np.sqrt(1.25), 2.0, 5.0, 1.0])
    np.testing.assert_allclose(F[1, 5:], [2.0, 0.0, 2.0, 2.0, 0.0], atol=1e-12)
    _, F1, n1 = window_features(ramp, ["r", "c"], window=1, stride=1)
    assert n1 == ["r.mean", "c.mean"] and F1.shape == (6, 2)


def test_fault_is_found_with_its_sensor_and_delay(data) -> None:
    train, test, labels = data
    r = run_signals_backtest(
        train, test, labels, ["load", "current", "temp"],
        window=20, stride=5, detector="dynamic_pca", target_far=0.01, timestamps=None,
    )
    assert set(r) >= KEYS
    assert r["detector"] == "dynamic_pca" and r["n_train"] == 4000
    assert r["n_events"] == 1 and r["n_detected"] == 1
    ev = r["events"][0]
    assert ev["blamed_feature"] == "temp" and ev["delay"] <= 25 and r["delay_unit"] == "rows"
    assert r["auroc"] > 0.9 and r["recall"] > 0.8
    assert r["far"] < 0.05
    # Causal mapping: rows before the first window ends are not evaluated.
    assert r["n_test"] <= 3000 - 19


def test_delay_in_seconds_with_datetime_timestamps(data) -> None:
    train, test, labels = data
    ts = np.datetime64("2026-01-01T00:00:00") + np.arange(3000) * np.timedelta64(10, "s")
    r = run_signals_backtest(
        train[:2500], test, labels, ["load", "current", "temp"],
        window=20, stride=5, detector="robust_mahalanobis", target_far=0.01, timestamps=ts,
    )
    ev = r["events"][0]
    assert r["delay_unit"] == "s" and ev["detected"] and ev["delay"] % 10 == 0
    assert r["false_alarms_per_hour"] is not None


# The univariate online model sees only the +3 level (about 1.5 sigma of the load-driven swings),
# not the broken current/temperature relation the multivariate models see: it ranks the fault
# (AUROC) but, at an honest 1 % false-alarm threshold, does not alarm on it; the first release's
# in-sample-like calibration did, by alarming on normal windows too.
@pytest.mark.parametrize(("detector", "min_auroc", "detects"), [("online_residual", 0.65, False),
                                                              ("autoencoder", 0.8, True)])
def test_other_detectors_run_through_the_same_path(data, detector: str, min_auroc: float, detects: bool) -> None:
    train, test, labels = data
    r = run_signals_backtest(
        train, test, labels, ["load", "current", "temp"],
        window=20, stride=10, detector=detector, target_far=0.01, timestamps=None,
    )
    assert r["auroc"] > min_auroc and r["far"] <= 0.02 and not r["calibration_report"]["provisional"]
    assert r["n_detected"] == int(detects)


def test_far_on_normal_data_is_near_the_target() -> None:
    train = _series(6000, 2)
    test = _series(6000, 3)
    r = run_signals_backtest(
        train, test, np.zeros(6000, dtype=bool), ["a", "b", "c"],
        window=10, stride=1, detector="auto", target_far=0.01, timestamps=None,
    )
    assert r["detector"] == "dynamic_pca"
    assert r["tp"] == 0 and r["fn"] == 0 and r["n_events"] == 0
    assert r["far"] < 0.05 and r["auroc"] is None


def test_bad_input() -> None:
    x = np.zeros((100, 2))
    y = np.zeros(100, dtype=bool)
    kw = {"window": 10, "stride": 1, "detector": "dynamic_pca", "target_far": 0.01, "timestamps": None}
    with pytest.raises(ConfigError):
        run_signals_backtest(x, x, y, ["a"], **kw)
    with pytest.raises(DataError, match="labels"):
        run_signals_backtest(x, x, y[:5], ["a", "b"], **kw)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        run_signals_backtest(bad, x, y, ["a", "b"], **kw)
    with pytest.raises(ConfigError):
        run_signals_backtest(x, x, y, ["a", "b"], **{**kw, "stride": 0})
    with pytest.raises(KeyError, match="unknown detector"):
        run_signals_backtest(x, x, y, ["a", "b"], **{**kw, "detector": "nope"})
