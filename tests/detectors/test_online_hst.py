"""Numpy Half-Space Trees: exact parity with River, no learning from flagged rows, drift following."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.online_hst import OnlineHalfSpaceTrees
from linewatch.errors import DataError, NotFittedError


def _river_copy(det: OnlineHalfSpaceTrees):
    """A River HalfSpaceTrees holding exactly our trees and masses."""
    from river.anomaly import HalfSpaceTrees
    from river.tree.padded import PaddedBranch, PaddedLeaf

    n_internal = det.feature_.shape[1]

    def build(t: int, k: int):
        if k >= n_internal:
            return PaddedLeaf(l_mass=det.l_mass_[t, k], r_mass=det.r_mass_[t, k])
        return PaddedBranch(
            build(t, 2 * k + 1),
            build(t, 2 * k + 2),
            feature=int(det.feature_[t, k]),
            threshold=float(det.threshold_[t, k]),
            l_mass=det.l_mass_[t, k],
            r_mass=det.r_mass_[t, k],
        )

    hst = HalfSpaceTrees(n_trees=det.n_trees, height=det.height, window_size=det.window_size)
    hst.trees = [build(t, 0) for t in range(det.n_trees)]
    hst._tree_nodes = [list(t.iter_dfs()) for t in hst.trees]
    hst.counter = det.counter_
    hst._first_window = False
    return hst


def _river_score(hst, det: OnlineHalfSpaceTrees, X: np.ndarray) -> np.ndarray:
    U = (X - det.lo_) / (det.hi_ - det.lo_)
    return np.array([hst.score_one(dict(enumerate(u))) for u in U])


def test_scoring_and_learning_match_river() -> None:
    rng = np.random.default_rng(0)
    det = OnlineHalfSpaceTrees(n_trees=4, height=5, window_size=60, seed=1).fit(rng.normal(size=(150, 3)))
    hst = _river_copy(det)
    q = rng.normal(size=(50, 3)) * 1.5
    np.testing.assert_array_equal(det.score(q), _river_score(hst, det, q))
    # Learn 100 rows (crossing a window pivot) in both, then compare again.
    stream = rng.normal(size=(100, 3)) + 0.5
    ours = det.update(stream, flagged=np.zeros(100, dtype=bool))
    U = (stream - det.lo_) / (det.hi_ - det.lo_)
    theirs = []
    for u in U:
        x = dict(enumerate(u))
        theirs.append(hst.score_one(x))
        hst.learn_one(x)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(det.score(q), _river_score(hst, det, q), rtol=0, atol=1e-12)


def test_flagged_rows_are_not_learned() -> None:
    rng = np.random.default_rng(1)
    det = OnlineHalfSpaceTrees(window_size=100, seed=0).fit(rng.normal(size=(250, 2)))
    before = (det.l_mass_.copy(), det.counter_)
    far = np.full((5, 2), 8.0)
    scores = det.update(far)  # the detector's own cutoff flags them
    assert (scores > det.learn_cutoff_).all()
    np.testing.assert_array_equal(det.l_mass_, before[0])
    assert det.counter_ == before[1]
    det.learn_one(np.zeros(2), flagged=True)  # the caller's verdict wins
    assert det.counter_ == before[1]
    det.learn_one(np.zeros(2))
    assert det.counter_ == before[1] + 1


def test_follows_slow_drift_but_frozen_copy_does_not() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(size=(400, 2))
    live = OnlineHalfSpaceTrees(window_size=100, seed=0).fit(train)
    frozen = OnlineHalfSpaceTrees(window_size=100, seed=0).fit(train)
    drift = rng.normal(size=(1500, 2)) + np.linspace(0, 2.5, 1500)[:, None]  # slow mean drift
    live.update(drift)
    new_normal = rng.normal(size=(200, 2)) + 2.5
    assert live.score(new_normal).mean() < frozen.score(new_normal).mean()


def test_warm_up_is_explicit(tmp_path) -> None:
    det = OnlineHalfSpaceTrees(window_size=100)
    with pytest.raises(NotFittedError):
        det.score_one(np.zeros(2))
    with pytest.raises(NotFittedError):
        det.learn_one(np.zeros(2))
    with pytest.raises(DataError, match="one window"):
        det.fit(np.zeros((99, 2)))
    det.fit(np.random.default_rng(3).normal(size=(130, 2)))
    assert det.ready_ and det.counter_ == 30
    det.save(tmp_path / "m")
    back = OnlineHalfSpaceTrees.load(tmp_path / "m")
    X = np.random.default_rng(4).normal(size=(120, 2))
    np.testing.assert_array_equal(back.update(X), det.update(X))  # mid-window state restored
    assert back.n_windows_ == det.n_windows_ == 2
