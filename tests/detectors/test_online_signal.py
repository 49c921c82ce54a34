"""Online residual detector: warm-up, no learning from flagged rows, drift following, exact persistence."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.base import OnlineDetector
from linewatch.detectors.online_signal import OnlineResidual
from linewatch.detectors.table import get_detector
from linewatch.errors import DataError, NotFittedError


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(60.0, 0.5, n), rng.normal(3.0, 0.1, n)])


def test_residual_hand_check_and_explain() -> None:
    det = OnlineResidual(half_life=1e9, warmup=1).fit(np.array([[0.0, 10.0], [2.0, 14.0]]))
    # Equal weights (infinite half-life): mean (1, 12), variance (1, 4).
    np.testing.assert_allclose(det.mean_, [1.0, 12.0], rtol=1e-6)
    np.testing.assert_allclose(det.var_, [1.0, 4.0], rtol=1e-6)
    x = np.array([[3.0, 12.0], [1.0, 18.0]])
    np.testing.assert_allclose(det.explain(x), [[4.0, 0.0], [0.0, 9.0]], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(det.score(x), [4.0, 9.0], rtol=1e-6)


def test_residual_warm_up_is_neutral() -> None:
    det = OnlineResidual(warmup=50).fit(_rows(10))
    assert not det.ready and det.score_one(np.array([100.0, 100.0])) == 0.0
    for row in _rows(40, seed=1):
        det.learn_one(row)
    assert det.ready and det.score_one(np.array([100.0, 100.0])) > 100


def test_residual_never_learns_flagged_rows_but_follows_slow_drift() -> None:
    det = OnlineResidual(half_life=200, warmup=10).fit(_rows(500))
    mean_before = det.mean_.copy()
    for _ in range(20):
        det.learn_one(np.array([75.0, 3.0]))  # a 30-sigma step: flagged every time
    np.testing.assert_array_equal(det.mean_, mean_before)
    assert det.n_skipped_ == 20
    drift = _rows(3000, seed=2)
    drift[:, 0] += np.linspace(0.0, 5.0, 3000)  # 10 sigma over 3000 rows: a slow baseline change
    s = det.update(drift)
    assert np.quantile(s[-500:], 0.99) < 25 and det.n_skipped_ - 20 < 30
    assert det.score_one(np.array([det.mean_[0] + 10.0, 3.0])) > 100  # abrupt is still caught


def test_residual_calibrated_threshold_is_the_guard() -> None:
    det = OnlineResidual(warmup=1).fit(_rows(300))
    det.set_threshold(4.0)
    det.learn_one(np.array([det.mean_[0] + 3 * np.sqrt(det.var_[0]), 3.0]))  # z^2 = 9 > 4: flagged
    assert det.n_skipped_ == 1


def test_residual_save_load_continues_identically(tmp_path) -> None:
    det = OnlineResidual(half_life=50).fit(_rows(200))
    det.update(_rows(100, seed=3))
    det.save(tmp_path / "r")
    back = OnlineResidual.load(tmp_path / "r")
    nxt = _rows(100, seed=4)
    np.testing.assert_array_equal(back.update(nxt), det.update(nxt))
    assert back.n_seen_ == det.n_seen_


def test_registered_online_detector_and_contract() -> None:
    assert get_detector("online_residual") is OnlineResidual
    assert isinstance(OnlineResidual(), OnlineDetector)
    with pytest.raises(NotFittedError):
        OnlineResidual().score(np.zeros((2, 2)))
    with pytest.raises(DataError):
        OnlineResidual().fit(np.zeros((1, 2)))
    det = OnlineResidual().fit(_rows(50))
    with pytest.raises(DataError, match="features"):
        det.score(np.zeros((2, 3)))
