"""Hotelling T² chart with exact Phase I / Phase II limits and MYT-style per-variable terms.

Why Hotelling next to the univariate charts
-------------------------------------------
Characteristics of one part are correlated (a bore and its shaft's runout move
together). Charting each on its own either misses a row whose values are individually
fine but jointly impossible (a *correlation break*), or, with ``d`` charts at 3σ each,
raises ``d`` times the false alarms. T² = ``(x - x̄)' S⁻¹ (x - x̄)`` is one statistic
with one exact false-alarm rate.

Limits (individual observations, ``m`` Phase I rows, ``p`` variables; Tracy, Young &
Mason 1992):

- Phase I, a row that was part of the estimate: ``UCL = (m-1)²/m · Beta_{1-α}(p/2, (m-p-1)/2)``;
- Phase II, a new row: ``UCL = p(m+1)(m-1) / (m(m-p)) · F_{1-α}(p, m-p)``.

Phase I drops rows above the Beta limit and re-estimates until none is above it (as the
univariate charts do), so scrap in "known-good" history does not inflate ``S``.

Explanations
------------
``explain`` returns ZCA-cor contributions (see
:mod:`linewatch.detectors.robust_mahalanobis`): non-negative and summing exactly to T².
:meth:`HotellingT2.myt` gives the Mason-Young-Tracy terms engineers read in the
literature: the *unconditional* ``T²_j = (x_j - x̄_j)² / s_jj`` (is variable ``j`` off on
its own?) and the *conditional* ``T²_{j·rest}`` (is ``j`` wrong given all the others?),
each with its own Phase II limit. A large conditional term with a small unconditional
one is the fingerprint of a correlation break. ``T²_{j·rest} = T² - T²_{without j}``,
computed for all ``j`` at once from the precision matrix: ``(S⁻¹x_c)_j² / (S⁻¹)_jj``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.multivariate_normal([0, 0], [[1.0, 0.9], [0.9, 1.0]], size=500)
>>> det = HotellingT2().fit(X)
>>> x = np.array([[1.5, -1.5]])            # each value normal alone, the pair is not
>>> bool(det.score(x)[0] > det.ucl_)
True
>>> t = det.myt(x)
>>> bool((t.unconditional[0] < t.ucl_unconditional).all()), bool((t.conditional[0] > t.ucl_conditional).all())
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy import stats

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.detectors.robust_mahalanobis import DEFAULT_RIDGE, zca_cor_whitener
from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.errors import ConfigError, DataError

#: α of a 3σ Shewhart chart (two-sided normal tail), so T² false-alarms as often as one chart.
DEFAULT_ALPHA = 0.0027
#: Phase I stops after this many exclusion rounds even if rows are still above the limit.
DEFAULT_PHASE1_MAX_ITER = 10


def phase1_ucl(m: int, p: int, alpha: float) -> float:
    """Beta-distribution UCL for a row that was itself used to estimate mean and covariance.

    >>> round(phase1_ucl(50, 2, 0.05), 3)
    5.747
    """
    _check_mp(m, p)
    return (m - 1) ** 2 / m * float(stats.beta.ppf(1.0 - alpha, p / 2.0, (m - p - 1) / 2.0))


def phase2_ucl(m: int, p: int, alpha: float) -> float:
    """F-distribution UCL for a new row, given estimates from ``m`` Phase I rows.

    >>> round(phase2_ucl(50, 2, 0.05), 3)
    6.645
    """
    _check_mp(m, p)
    return p * (m + 1) * (m - 1) / (m * (m - p)) * float(stats.f.ppf(1.0 - alpha, p, m - p))


def _check_mp(m: int, p: int) -> None:
    if m <= p + 1:
        raise DataError(
            f"Hotelling T² with {p} variables needs more than {p + 1} in-control rows, got {m}; "
            "collect more known-good data or drop variables"
        )


def quadratic_terms(Xc: np.ndarray, whitener: np.ndarray) -> np.ndarray:
    """Squared whitened coordinates ``(Xc W')²``: per-feature terms that sum to ``x' Σ⁻¹ x``."""
    U = rowwise_matmul(Xc, whitener.T)
    return U * U


def hotelling_phase1(
    X: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    max_iter: int = DEFAULT_PHASE1_MAX_ITER,
    ridge: float = DEFAULT_RIDGE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and covariance after iteratively excluding rows above the Phase I (Beta) limit.

    Returns ``(mean, covariance, kept_mask)``. Shared by :class:`HotellingT2` and the MEWMA chart.
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha!r} must be in (0, 1), e.g. 0.0027 for 3σ-equivalent limits")
    X = as_batch(X)
    m, p = X.shape
    keep = np.ones(m, dtype=bool)
    for _ in range(max_iter + 1):
        _check_mp(int(keep.sum()), p)
        mean = X[keep].mean(axis=0)
        cov = np.atleast_2d(np.cov(X[keep], rowvar=False))
        t2 = quadratic_terms(X - mean, zca_cor_whitener(cov, ridge=ridge)).sum(axis=1)
        new_keep = keep & (t2 <= phase1_ucl(int(keep.sum()), p, alpha))
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    return mean, cov, keep


@dataclass(frozen=True)
class MYTTerms:
    """Mason-Young-Tracy terms for each row and variable, with their Phase II limits."""

    unconditional: np.ndarray  # (n, p): (x_j - mean_j)² / s_jj
    conditional: np.ndarray  # (n, p): T²_{j · all other variables}
    ucl_unconditional: float
    ucl_conditional: float


class HotellingT2(ParamsMixin):
    """Hotelling T² for individual observations; high = anomalous, ``ucl_`` = Phase II limit.

    Parameters
    ----------
    alpha:
        False-alarm probability per row for the Phase I exclusion and the Phase II ``ucl_``.
    phase1_max_iter:
        Exclusion rounds in Phase I (0 = plain mean/covariance).
    ridge:
        Added to the correlation matrix before inversion, so collinear features do not blow up.
    """

    name: ClassVar[str] = "hotelling"
    fitted_arrays = ("mean_", "covariance_", "n_fit_")

    def __init__(
        self,
        *,
        alpha: float = DEFAULT_ALPHA,
        phase1_max_iter: int = DEFAULT_PHASE1_MAX_ITER,
        ridge: float = DEFAULT_RIDGE,
    ) -> None:
        self.alpha = alpha
        self.phase1_max_iter = phase1_max_iter
        self.ridge = ridge
        self.mean_: np.ndarray | None = None
        self.covariance_: np.ndarray | None = None
        self.whitener_: np.ndarray | None = None
        self.n_fit_: int | None = None
        self.ucl_: float | None = None

    def fit(self, X: np.ndarray) -> Self:
        """Phase I on known-good rows: estimate mean and covariance, excluding out-of-control rows."""
        mean, cov, keep = hotelling_phase1(
            X, alpha=self.alpha, max_iter=self.phase1_max_iter, ridge=self.ridge
        )
        self._set(mean, cov, int(keep.sum()))
        return self

    def _set(self, mean: np.ndarray, cov: np.ndarray, m: int) -> None:
        self.mean_, self.covariance_, self.n_fit_ = mean, cov, m
        self.whitener_ = zca_cor_whitener(cov, ridge=self.ridge)
        self.ucl_ = phase2_ucl(m, mean.shape[0], self.alpha)

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        """The whitener and ``ucl_`` are not saved: they follow from the covariance and ``n_fit_``."""
        super()._restore(arrays, values)
        self._set(self.mean_, self.covariance_, self.n_fit_)

    def _centred(self, X: np.ndarray) -> np.ndarray:
        check_fitted(self, "whitener_")
        return as_batch(X, n_features=self.mean_.shape[0]) - self.mean_

    def score(self, X: np.ndarray) -> np.ndarray:
        """T² of each row against the Phase I estimates."""
        return self.explain(X).sum(axis=1)

    def explain(self, X: np.ndarray) -> np.ndarray:
        """ZCA-cor contributions ``(n, p)``: non-negative, rows sum to T²."""
        return quadratic_terms(self._centred(X), self.whitener_)

    def myt(self, X: np.ndarray) -> MYTTerms:
        """Unconditional and fully conditional MYT terms with Phase II limits (Mason et al. 1995)."""
        Xc = self._centred(X)
        m, p = self.n_fit_, self.mean_.shape[0]
        precision = self.whitener_.T @ self.whitener_
        var = np.diag(self.covariance_)
        unconditional = Xc**2 / np.where(var > 0, var, 1.0)
        conditional = rowwise_matmul(Xc, precision) ** 2 / np.diag(precision)
        # A term with k conditioning variables: (m+1)(m-1)/(m(m-k-1)) F(1, m-k-1); k = 0 and k = p-1.
        f = stats.f.ppf(1.0 - self.alpha, 1, [m - 1, m - p])
        ucl_u = (m + 1) / m * float(f[0])
        ucl_c = (m + 1) * (m - 1) / (m * (m - p)) * float(f[1])
        return MYTTerms(unconditional, conditional, ucl_u, ucl_c)
