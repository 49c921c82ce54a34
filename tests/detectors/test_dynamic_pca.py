"""Dynamic PCA: T²/SPE against a hand computation, lags, history, exact contributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from linewatch.detectors.dynamic_pca import DynamicPCA, lagged
from linewatch.detectors.table import get_detector
from linewatch.errors import ConfigError, DataError, NotFittedError


def _process(n: int, seed: int = 0) -> np.ndarray:
    """x1 autocorrelated, x2 follows x1 two rows later, x3 = x1 + x2 (a mass balance)."""
    rng = np.random.default_rng(seed)
    x1 = lfilter([1.0], [1.0, -0.9], rng.normal(size=n + 10))[10:]
    x2 = np.roll(x1, 2) + 0.1 * rng.normal(size=n)
    x3 = x1 + x2 + 0.1 * rng.normal(size=n)
    return np.column_stack([x1, x2, x3])[5:]


def test_static_statistics_match_a_hand_pca() -> None:
    rng = np.random.default_rng(0)
    X = rng.multivariate_normal([1, 2, 3, 4], np.diag([4.0, 1.0, 0.25, 0.01]) + 0.1, size=2000)
    det = DynamicPCA(lags=0, n_components=2).fit(X)
    Z = (X - X.mean(0)) / X.std(0, ddof=1)
    lam, V = np.linalg.eigh(np.cov(Z, rowvar=False))
    lam, V = lam[::-1][:2], V[:, ::-1][:, :2]
    q = (X[:10] - X.mean(0)) / X.std(0, ddof=1)
    T = q @ V
    t2, spe = det.statistics(X[:10])
    np.testing.assert_allclose(t2, (T**2 / lam).sum(axis=1), rtol=1e-8)
    np.testing.assert_allclose(spe, ((q - T @ V.T) ** 2).sum(axis=1), rtol=1e-8, atol=1e-12)


def test_lagged_layout() -> None:
    X = np.arange(12.0).reshape(6, 2)
    L = lagged(X, 2)
    assert L.shape == (4, 6)
    assert L[0].tolist() == [4.0, 5.0, 2.0, 3.0, 0.0, 1.0]


def test_combined_index_is_about_one_at_the_limit_on_normal_data() -> None:
    X = _process(4000)
    det = DynamicPCA(lags=2).fit(X[:3000])
    s = det.score(X[3000:], history=X[2998:3000])
    assert np.mean(s > 2.0) < 0.02  # both terms are below their 99 % limits nearly always
    assert 0.1 < np.median(s) < 1.0


def test_dynamic_fault_needs_the_lags() -> None:
    X = _process(3000)
    test = X[2000:].copy()
    test[500:, 1] = test[500:, 0]  # the two-row delay disappears; every value stays in range
    dyn = DynamicPCA(lags=2).fit(X[:2000])
    s = dyn.score(test, history=X[1998:2000])
    assert np.median(s[500:]) > 10 * np.median(s[:500])
    c = dyn.explain(test[600:700], history=test[598:600]).sum(axis=0)
    assert int(np.argmax(c)) in (0, 1)  # the broken pair, not the mass balance's third sensor


def test_contributions_are_exact_and_name_the_sensor() -> None:
    X = _process(3000)
    det = DynamicPCA(lags=1).fit(X[:2000])
    q = X[2000:2100].copy()
    q[50:, 2] += 3.0  # sensor 3 reads high: breaks the mass balance
    c = det.explain(q, history=X[1999:2000])
    assert (c >= 0).all()
    np.testing.assert_allclose(c.sum(axis=1), det.score(q, history=X[1999:2000]), rtol=1e-10)
    assert (np.argmax(c[51:], axis=1) == 2).mean() > 0.9


def test_history_makes_chunked_scoring_equal_to_one_pass() -> None:
    X = _process(2500)
    det = DynamicPCA(lags=3).fit(X[:2000])
    whole = det.score(X[2000:], history=X[1997:2000])
    a = det.score(X[2000:2200], history=X[1997:2000])
    b = det.score(X[2200:], history=X[2000:2200])
    np.testing.assert_allclose(np.concatenate([a, b]), whole, rtol=1e-12)
    cold = det.score(X[2000:2010])
    assert (cold[:3] == 0).all() and (cold[3:] > 0).all()
    assert det.ready_mask(10).tolist() == [False] * 3 + [True] * 7


def test_save_load_and_t2_spe_modes(tmp_path) -> None:
    X = _process(1500)
    for stat in ("combined", "t2", "spe"):
        det = DynamicPCA(lags=2, statistic=stat).fit(X[:1000])
        det.save(tmp_path / stat)
        back = DynamicPCA.load(tmp_path / stat)
        np.testing.assert_array_equal(back.score(X[1000:]), det.score(X[1000:]))
    t2, spe = det.statistics(X[1000:])
    t2_only = DynamicPCA(lags=2, statistic="t2").fit(X[:1000])
    np.testing.assert_allclose(t2_only.score(X[1000:]), t2, rtol=1e-9)
    np.testing.assert_allclose(det.score(X[1000:]), spe, rtol=1e-9, atol=1e-12)


def test_contract_errors() -> None:
    with pytest.raises(NotFittedError):
        DynamicPCA().score(np.zeros((5, 2)))
    with pytest.raises(DataError, match="consecutive normal rows"):
        DynamicPCA(lags=3).fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ConfigError):
        DynamicPCA(statistic="q").fit(_process(200))
    with pytest.raises(ConfigError):
        DynamicPCA(lags=0, n_components=3).fit(_process(200))
    assert get_detector("dynamic_pca") is DynamicPCA
