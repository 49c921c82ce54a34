"""PCA process monitoring: Hotelling T² inside the principal subspace and SPE (Q) outside it.

Why PCA monitoring
------------------
With many correlated sensors (an asset's vibration, current, temperature and pressure
features, or dozens of SPC characteristics) the covariance is near-singular and plain
Hotelling T² becomes unstable. PCA keeps the ``k`` directions that carry the normal
variation and watches two things (Jackson & Mudholkar 1979; MacGregor & Kourti 1995):

- **T²** on the ``k`` scores: the row moved *along* normal directions, but too far
  (a larger-than-usual version of normal variation);
- **SPE / Q** = squared residual off the subspace: the row broke the correlation
  structure (a new kind of variation the normal process never shows). A correlation
  break between two sensors lands here, even when each sensor stays within range.

API (general on purpose: any ``(n, d)`` feature matrix, not just SPC)
---------------------------------------------------------------------
``PCAMonitor(n_components=None, explained_variance=0.9, standardize=True, alpha=0.01)``

- ``fit(X)``: centre (and scale to unit variance when ``standardize``), eigen-decompose,
  keep ``n_components`` or else the fewest components whose cumulative explained
  variance reaches ``explained_variance`` (at most ``d - 1``, so SPE stays defined);
  sets ``n_components_``, ``components_ (k, d)``, ``eigenvalues_ (k,)``,
  ``explained_variance_ratio_ (d,)``, ``t2_ucl_`` and ``spe_ucl_``.
- ``transform(X) -> (n, k)`` principal scores.
- ``statistics(X) -> PCAStatistics`` with ``t2``, ``spe`` ``(n,)`` and their per-feature
  contributions ``(n, d)`` (non-negative, each summing exactly to its statistic).
- ``score(X) = T²/t2_ucl_ + SPE/spe_ucl_`` (the combined index of Yue & Qin 2001 with
  each statistic in units of its own limit), ``explain(X)`` = the matching sum of the
  normalised contributions, which again sums exactly to the score.

Limits: ``t2_ucl_`` is the Phase II F limit ``k(m²-1)/(m(m-k)) F_{1-α}(k, m-k)``;
``spe_ucl_`` is Box's ``g χ²_h`` approximation with ``g = θ₂/θ₁``, ``h = θ₁²/θ₂`` from the
residual eigenvalues (Nomikos & MacGregor 1995), which unlike Jackson-Mudholkar never
fails for a flat residual spectrum. T² contributions use the symmetric root
``V Λ^{-1/2} V'`` so each feature's share is non-negative and they add up exactly.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> latent = rng.normal(size=(500, 1))
>>> X = np.hstack([latent, latent, latent]) + 0.1 * rng.normal(size=(500, 3))
>>> mon = PCAMonitor().fit(X)
>>> mon.n_components_
1
>>> st = mon.statistics(np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]]))
>>> bool(st.spe[0] < mon.spe_ucl_), bool(st.spe[1] > mon.spe_ucl_), int(st.spe_contributions[1].argmax())
(True, True, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy import stats

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.errors import ConfigError, DataError

#: Keep components until 90 % of the normal variance is explained: a common, conservative default.
DEFAULT_EXPLAINED_VARIANCE = 0.9
#: Per-row false-alarm probability for the T² and SPE limits.
DEFAULT_ALPHA = 0.01
#: Floor for eigenvalues and the SPE limit, relative to the total variance: keeps exact
#: collinearity (a duplicated sensor) from producing a zero divisor.
_EIG_FLOOR = 1e-12


@dataclass(frozen=True)
class PCAStatistics:
    """T² and SPE of each row, with exact per-feature decompositions of both."""

    t2: np.ndarray  # (n,)
    spe: np.ndarray  # (n,)
    t2_contributions: np.ndarray  # (n, d), rows sum to t2
    spe_contributions: np.ndarray  # (n, d), rows sum to spe


def spe_limit(residual_eigenvalues: np.ndarray, alpha: float) -> float:
    """Box's ``g χ²_h`` upper limit for SPE given the discarded eigenvalues.

    >>> round(spe_limit(np.array([1.0, 1.0]), 0.05), 3)      # two unit residual axes: χ²₂
    5.991
    """
    lam = np.asarray(residual_eigenvalues, dtype=np.float64)
    theta1, theta2 = float(lam.sum()), float((lam**2).sum())
    if theta1 <= 0 or theta2 <= 0:
        return 0.0
    g, h = theta2 / theta1, theta1**2 / theta2
    return g * float(stats.chi2.ppf(1.0 - alpha, h))


def t2_limit(m: int, k: int, alpha: float) -> float:
    """Phase II F limit for T² on ``k`` scores estimated from ``m`` rows."""
    if m <= k:
        raise DataError(f"PCA T² with {k} components needs more than {k} training rows, got {m}")
    return k * (m * m - 1) / (m * (m - k)) * float(stats.f.ppf(1.0 - alpha, k, m - k))


class PCAMonitor(ParamsMixin):
    """PCA T² + SPE monitor; high = anomalous. See the module docstring for the full API."""

    name: ClassVar[str] = "pca_monitor"
    fitted_arrays = ("mean_", "scale_", "components_", "eigenvalues_", "explained_variance_ratio_")
    fitted_values = ("n_components_", "n_fit_", "t2_ucl_", "spe_ucl_")

    def __init__(
        self,
        *,
        n_components: int | None = None,
        explained_variance: float = DEFAULT_EXPLAINED_VARIANCE,
        standardize: bool = True,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        self.n_components = n_components
        self.explained_variance = explained_variance
        self.standardize = standardize
        self.alpha = alpha
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.eigenvalues_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None
        self.n_components_: int | None = None
        self.n_fit_: int | None = None
        self.t2_ucl_: float | None = None
        self.spe_ucl_: float | None = None
        self._t2_root: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Self:
        """Learn the normal subspace and the two control limits from known-good rows."""
        if not 0.0 < self.explained_variance <= 1.0:
            raise ConfigError(f"explained_variance={self.explained_variance!r} must be in (0, 1], e.g. 0.9")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha={self.alpha!r} must be in (0, 1), e.g. 0.01")
        X = as_batch(X)
        m, d = X.shape
        if m < 3:
            raise DataError(f"PCA monitoring needs at least 3 training rows, got {m}")
        mean = X.mean(axis=0)
        scale = X.std(axis=0, ddof=1) if self.standardize else np.ones(d)
        scale = np.where(scale > 0, scale, 1.0)
        Z = (X - mean) / scale
        # Eigen-decomposition of the covariance via SVD of the data: stable and sorted.
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        eig = np.zeros(d)
        eig[: s.size] = s**2 / (m - 1)
        vecs = np.zeros((d, d))
        vecs[: vt.shape[0]] = vt
        total = float(eig.sum())
        if total <= 0:
            raise DataError("every feature is constant in the training data; PCA has nothing to model")
        ratio = eig / total
        k_max = max(1, d - 1)
        if self.n_components is not None:
            if not 1 <= self.n_components <= k_max:
                raise ConfigError(
                    f"n_components={self.n_components} must be between 1 and {k_max} for {d} features "
                    "(at least one direction must stay in the residual for SPE)"
                )
            k = self.n_components
        else:
            k = int(np.searchsorted(np.cumsum(ratio), self.explained_variance - 1e-12) + 1)
            k = min(k, k_max)
        floor = _EIG_FLOOR * total
        self.mean_, self.scale_ = mean, scale
        self.components_ = vecs[:k]
        self.eigenvalues_ = np.maximum(eig[:k], floor)
        self.explained_variance_ratio_ = ratio
        self.n_components_, self.n_fit_ = k, m
        self.t2_ucl_ = t2_limit(m, k, self.alpha)
        self.spe_ucl_ = max(spe_limit(eig[k:], self.alpha), floor) if d > 1 else None
        self._finish()
        return self

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        super()._restore(arrays, values)
        self._finish()

    def _finish(self) -> None:
        """The symmetric T² root is derived, not saved: ``V' Λ^{-1/2} V`` from components and eigenvalues."""
        V = self.components_
        self._t2_root = (V.T / np.sqrt(self.eigenvalues_)) @ V  # V' Λ^{-1/2} V, symmetric (d, d)

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        check_fitted(self, "components_")
        X = as_batch(X, n_features=self.mean_.shape[0])
        return (X - self.mean_) / self.scale_

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Principal scores ``(n, k)`` of the rows."""
        return rowwise_matmul(self._standardized(X), self.components_.T)

    def statistics(self, X: np.ndarray) -> PCAStatistics:
        """T², SPE and their per-feature contributions for each row."""
        Z = self._standardized(X)
        U = rowwise_matmul(Z, self._t2_root)
        residual = Z - rowwise_matmul(rowwise_matmul(Z, self.components_.T), self.components_)
        t2c, spec = U * U, residual * residual
        return PCAStatistics(
            t2=t2c.sum(axis=1), spe=spec.sum(axis=1), t2_contributions=t2c, spe_contributions=spec
        )

    def t2(self, X: np.ndarray) -> np.ndarray:
        """Hotelling T² on the retained components."""
        return self.statistics(X).t2

    def spe(self, X: np.ndarray) -> np.ndarray:
        """Squared prediction error (Q): squared distance to the normal subspace."""
        return self.statistics(X).spe

    def explain(self, X: np.ndarray) -> np.ndarray:
        """``t2_contributions/t2_ucl_ + spe_contributions/spe_ucl_``; rows sum to :meth:`score`."""
        st = self.statistics(X)
        out = st.t2_contributions / self.t2_ucl_
        if self.spe_ucl_ is not None:
            out = out + st.spe_contributions / self.spe_ucl_
        return out

    def score(self, X: np.ndarray) -> np.ndarray:
        """Combined index ``T²/t2_ucl_ + SPE/spe_ucl_`` (each statistic in units of its limit)."""
        return self.explain(X).sum(axis=1)
