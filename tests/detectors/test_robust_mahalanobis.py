"""Robust Mahalanobis: robustness to contamination, exact explanation, units, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.robust_mahalanobis import RobustMahalanobis, robust_scale, zca_cor_whitener
from linewatch.errors import ConfigError, DataError, NotFittedError

COV = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 1.0]])


def _normal(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(np.zeros(3), COV, size=n)


def test_score_matches_classical_mahalanobis_on_clean_data() -> None:
    X = _normal(3000)
    det = RobustMahalanobis(support_fraction=0.95, seed=0).fit(X)
    q = np.array([[2.0, -2.0, 0.0], [0.5, 0.5, 0.5]])
    classical = np.einsum("ij,jk,ik->i", q, np.linalg.inv(COV), q)
    # MCD with reweighting is consistent at the normal: within sampling error of the truth.
    np.testing.assert_allclose(det.score(q), classical, rtol=0.15)


def test_contamination_does_not_mask_outliers() -> None:
    X = _normal(1000)
    X[:100] = np.array([6.0, 6.0, 6.0]) + 0.1 * np.random.default_rng(1).normal(size=(100, 3))
    det = RobustMahalanobis(seed=0).fit(X)
    # The contaminating cluster stays far away (classical covariance would pull it to ~ chi2 median).
    assert det.score(np.array([[6.0, 6.0, 6.0]]))[0] > 50.0
    assert np.median(det.score(X[100:])) < 4.0


def test_explain_is_nonnegative_and_sums_to_score() -> None:
    X = _normal(800)
    det = RobustMahalanobis(seed=0).fit(X)
    q = _normal(50, seed=3) * 3.0
    c = det.explain(q)
    assert c.shape == (50, 3)
    assert (c >= 0).all()
    np.testing.assert_allclose(c.sum(axis=1), det.score(q), rtol=1e-10)


def test_explain_points_at_the_shifted_feature() -> None:
    det = RobustMahalanobis(seed=0).fit(_normal(2000))
    c = det.explain(np.array([[0.0, 0.0, 6.0]]))
    assert int(np.argmax(c[0])) == 2


def test_units_do_not_matter() -> None:
    X = _normal(300)
    q = _normal(20, seed=5) * 2
    units = np.array([1000.0, 0.001, 7.0])
    a = RobustMahalanobis(seed=0).fit(X).score(q)
    b = RobustMahalanobis(seed=0).fit(X * units + 50.0).score(q * units + 50.0)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_constant_column_does_not_break_fit() -> None:
    X = np.column_stack([_normal(300)[:, :2], np.full(300, 4.2)])
    det = RobustMahalanobis(seed=0).fit(X)
    assert np.isfinite(det.score(X)).all()
    # The stuck column moving is loud; the others still score on their own scale.
    moved = X[:1].copy()
    moved[0, 2] += 0.01
    assert det.score(moved)[0] > 100 * det.score(X[:1])[0]


def test_save_load_roundtrip(tmp_path) -> None:
    X = _normal(400)
    det = RobustMahalanobis(support_fraction=0.8, seed=2).fit(X)
    det.save(tmp_path / "m")
    back = RobustMahalanobis.load(tmp_path / "m")
    assert back.support_fraction == 0.8 and back.seed == 2
    np.testing.assert_array_equal(back.score(X), det.score(X))


def test_errors_are_clear() -> None:
    with pytest.raises(NotFittedError):
        RobustMahalanobis().score(np.zeros((2, 3)))
    with pytest.raises(DataError, match="normal rows"):
        RobustMahalanobis().fit(np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="support_fraction"):
        RobustMahalanobis(support_fraction=1.5).fit(_normal(100))
    det = RobustMahalanobis().fit(_normal(100))
    with pytest.raises(DataError, match="3 features"):
        det.score(np.zeros((2, 2)))


def test_helpers_by_hand() -> None:
    c, s = robust_scale(np.array([[0.0], [1.0], [2.0], [3.0], [100.0]]))
    assert c[0] == 2.0 and s[0] == pytest.approx(1.4826)
    W = zca_cor_whitener(np.array([[1.0, 0.0], [0.0, 9.0]]), ridge=0.0)
    np.testing.assert_allclose(W, [[1.0, 0.0], [0.0, 1.0 / 3.0]])
