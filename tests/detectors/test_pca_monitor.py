"""PCA monitor: component choice, exact decompositions, limits that hold their rate, SPE for breaks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from linewatch.detectors.pca_monitor import PCAMonitor, spe_limit, t2_limit
from linewatch.errors import ConfigError, DataError


def _two_factor(n: int, seed: int) -> np.ndarray:
    """Five sensors driven by two latent factors plus 10 % noise."""
    rng = np.random.default_rng(seed)
    loadings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.8], [0.7, 0.7]])
    return rng.normal(size=(n, 2)) @ loadings.T + 0.1 * rng.normal(size=(n, 5))


def test_component_count_from_explained_variance() -> None:
    mon = PCAMonitor(explained_variance=0.9).fit(_two_factor(2000, 0))
    assert mon.n_components_ == 2
    assert mon.explained_variance_ratio_[:2].sum() >= 0.9
    assert PCAMonitor(n_components=3).fit(_two_factor(200, 0)).n_components_ == 3
    assert PCAMonitor(explained_variance=1.0).fit(_two_factor(200, 0)).n_components_ == 4  # capped at d - 1


def test_statistics_by_definition() -> None:
    X = _two_factor(1000, 1)
    mon = PCAMonitor().fit(X)
    q = _two_factor(20, 2) * 1.5
    Z = (q - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    T = mon.transform(q)
    st = mon.statistics(q)
    np.testing.assert_allclose(st.t2, (T**2 / mon.eigenvalues_).sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(st.spe, ((Z - T @ mon.components_) ** 2).sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(st.t2_contributions.sum(axis=1), st.t2, rtol=1e-9)
    np.testing.assert_allclose(st.spe_contributions.sum(axis=1), st.spe, rtol=1e-9)
    assert (st.t2_contributions >= 0).all()
    np.testing.assert_allclose(mon.explain(q).sum(axis=1), mon.score(q), rtol=1e-12)


def test_limits_by_hand() -> None:
    # Equal residual eigenvalues make Box's approximation exact: 2 * χ²₃.
    assert spe_limit(np.array([2.0, 2.0, 2.0]), 0.01) == pytest.approx(2 * stats.chi2.ppf(0.99, 3))
    m, k = 100, 2
    assert t2_limit(m, k, 0.05) == pytest.approx(k * (m**2 - 1) / (m * (m - k)) * stats.f.ppf(0.95, k, m - k))


def test_limits_hold_their_false_alarm_rate() -> None:
    mon = PCAMonitor(alpha=0.01).fit(_two_factor(3000, 3))
    st = mon.statistics(_two_factor(20000, 4))
    assert 0.005 < (st.t2 > mon.t2_ucl_).mean() < 0.02
    assert 0.005 < (st.spe > mon.spe_ucl_).mean() < 0.02


def test_correlation_break_goes_to_spe_and_names_the_sensor() -> None:
    X = _two_factor(2000, 5)
    mon = PCAMonitor().fit(X)
    row = X[:1].copy()
    row[0, 1] = -row[0, 0]  # sensor 1 stops following sensor 0 but stays in its normal range
    st = mon.statistics(row)
    assert st.spe[0] > 3 * mon.spe_ucl_
    assert int(st.spe_contributions[0].argmax()) in (0, 1)
    assert abs(row[0, 1]) < 3 * X[:, 1].std()


def test_unstandardized_keeps_units_and_save_load(tmp_path) -> None:
    X = _two_factor(500, 6) * np.array([1.0, 1.0, 100.0, 100.0, 1.0])
    mon = PCAMonitor(standardize=False, n_components=1).fit(X)
    assert np.abs(mon.components_[0, 2:4]).sum() > 1.3  # the large-unit sensors dominate PC1
    mon.save(tmp_path / "m")
    back = PCAMonitor.load(tmp_path / "m")
    np.testing.assert_array_equal(back.score(X[:50]), mon.score(X[:50]))
    assert back.t2_ucl_ == mon.t2_ucl_ and back.n_components_ == 1


def test_one_feature_has_no_spe() -> None:
    mon = PCAMonitor().fit(np.random.default_rng(0).normal(size=(100, 1)))
    assert mon.spe_ucl_ is None
    assert np.isfinite(mon.score(np.array([[3.0]]))).all()


def test_errors() -> None:
    with pytest.raises(ConfigError, match="n_components"):
        PCAMonitor(n_components=5).fit(_two_factor(100, 0))
    with pytest.raises(ConfigError, match="explained_variance"):
        PCAMonitor(explained_variance=0.0).fit(_two_factor(100, 0))
    with pytest.raises(DataError, match="constant"):
        PCAMonitor().fit(np.ones((10, 3)))
