"""Hotelling T²: exact limits, Phase I exclusion, MYT terms, explanation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from linewatch.detectors.hotelling import HotellingT2, hotelling_phase1, phase1_ucl, phase2_ucl
from linewatch.errors import DataError, NotFittedError

COV = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.2], [0.3, 0.2, 1.0]])


def test_limits_reduce_to_t_distribution_for_one_variable() -> None:
    m, a = 30, 0.01
    t = stats.t.ppf(1 - a / 2, m - 1)
    assert phase2_ucl(m, 1, a) == pytest.approx((m + 1) / m * t**2)
    # Phase I, p = 1: Beta(1/2, (m-2)/2) = t²/(t² + m - 2) with t ~ t(m-2)
    t = stats.t.ppf(1 - a / 2, m - 2)
    assert phase1_ucl(m, 1, a) == pytest.approx((m - 1) ** 2 / m * t**2 / (t**2 + m - 2))


def test_phase2_limit_holds_its_false_alarm_rate() -> None:
    # The F limit accounts for estimation error: over many small Phase I samples, exactly α of
    # new rows exceed it on average (a plain χ² limit would give far more).
    rng = np.random.default_rng(0)
    alpha, exceed, total = 0.05, 0, 0
    for _ in range(200):
        det = HotellingT2(alpha=alpha, phase1_max_iter=0).fit(rng.multivariate_normal(np.zeros(3), COV, 25))
        new = rng.multivariate_normal(np.zeros(3), COV, 50)
        exceed += int((det.score(new) > det.ucl_).sum())
        total += 50
    assert exceed / total == pytest.approx(alpha, abs=0.01)
    assert stats.chi2.ppf(1 - alpha, 3) < det.ucl_


def test_score_by_hand() -> None:
    X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    det = HotellingT2(phase1_max_iter=0, ridge=0.0).fit(X)
    # mean (1, 1), S = diag(4/3, 4/3): T²((3, 1)) = 4 / (4/3) = 3
    assert det.score(np.array([[3.0, 1.0]]))[0] == pytest.approx(3.0)
    assert det.n_fit_ == 4


def test_phase1_excludes_gross_outliers() -> None:
    rng = np.random.default_rng(1)
    X = rng.multivariate_normal(np.zeros(3), COV, 300)
    X[:6] += 10.0
    mean, _, keep = hotelling_phase1(X)
    assert not keep[:6].any()
    assert np.abs(mean).max() < 0.2
    det = HotellingT2().fit(X)
    assert det.n_fit_ == keep.sum()


def test_myt_terms() -> None:
    rng = np.random.default_rng(2)
    X = rng.multivariate_normal(np.zeros(3), COV, 500)
    det = HotellingT2(phase1_max_iter=0, ridge=0.0).fit(X)
    q = rng.multivariate_normal(np.zeros(3), COV, 5) * 2
    t = det.myt(q)
    var = np.var(X, axis=0, ddof=1)
    np.testing.assert_allclose(t.unconditional, (q - X.mean(axis=0)) ** 2 / var, rtol=1e-9)
    full = det.score(q)
    for j in range(3):
        others = [k for k in range(3) if k != j]
        without = HotellingT2(phase1_max_iter=0, ridge=0.0).fit(X[:, others]).score(q[:, others])
        np.testing.assert_allclose(t.conditional[:, j], full - without, rtol=1e-7)
    assert t.ucl_conditional > t.ucl_unconditional  # fewer residual degrees of freedom


def test_correlation_break_shows_in_conditional_terms() -> None:
    rng = np.random.default_rng(3)
    det = HotellingT2().fit(rng.multivariate_normal(np.zeros(3), COV, 1000))
    x = np.array([[1.5, -1.5, 0.0]])  # 1.5σ each, but the pair correlates at 0.8
    t = det.myt(x)
    assert det.score(x)[0] > det.ucl_
    assert (t.unconditional[0] < t.ucl_unconditional).all()
    assert (t.conditional[0, :2] > t.ucl_conditional).all()
    c = det.explain(x)[0]
    assert c[:2].sum() > 0.9 * c.sum()
    np.testing.assert_allclose(c.sum(), det.score(x)[0])


def test_errors() -> None:
    with pytest.raises(NotFittedError):
        HotellingT2().myt(np.zeros((1, 2)))
    with pytest.raises(DataError, match="more than 4"):
        HotellingT2().fit(np.random.default_rng(0).normal(size=(4, 3)))
