"""Robust multivariate baseline: squared Mahalanobis distance from a Minimum Covariance Determinant fit.

Why this detector exists
------------------------
Most faults on a process line show up as a row that sits far from the cloud of normal
rows *given how the features co-vary* (a pressure that is fine on its own but wrong for
that temperature). The squared Mahalanobis distance measures exactly that, and under a
multivariate normal it is chi-squared with ``d`` degrees of freedom, so it is easy to
reason about. "Known-good" data from a plant is never perfectly clean, though: a few
mislabelled scrap parts or sensor glitches drag a classical mean/covariance towards them
and mask themselves. The Minimum Covariance Determinant (scikit-learn's ``MinCovDet``,
fast-MCD of Rousseeuw & Van Driessen) fits location and scatter on the ``h`` most central
rows, so up to ``1 - support_fraction`` of contamination cannot move the baseline.

Features are standardised internally (median / scaled MAD), so a column in pascals and
one in millimetres weigh the same and the MCD search is numerically well conditioned.
The distance itself is affine invariant, so this does not change the score.

Explanation
-----------
``explain(X)`` uses the ZCA-cor decomposition: with the robust covariance written as
``Σ = D R D`` (``D`` the robust standard deviations, ``R`` the robust correlation),
``W = R^{-1/2} D^{-1}`` whitens the centred row, and the score is ``||W (x - μ)||²``.
Contribution ``j`` is the square of whitened coordinate ``j``. This is non-negative,
sums to the score *exactly* (no clipping or renormalising), and among all whitening
transforms ZCA-cor is the one whose whitened coordinates are most correlated with the
original features (Kessy, Lewis & Strimmer, 2018), so coordinate ``j`` is the honest
"share" of feature ``j``. The naive ``x_c ⊙ Σ⁻¹x_c`` terms can be negative for
correlated features and need clipping, which breaks additivity; ZCA-cor does not.
For a correlation-break fault both features of the broken pair receive a share, which
is what an engineer should look at.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.multivariate_normal([0, 0], [[1.0, 0.9], [0.9, 1.0]], size=500)
>>> det = RobustMahalanobis(seed=0).fit(X)
>>> s = det.score(np.array([[1.0, 1.0], [1.0, -1.0]]))
>>> bool(s[1] > 5 * s[0])          # same magnitudes, but the second breaks the correlation
True
>>> c = det.explain(np.array([[1.0, -1.0]]))
>>> bool(np.allclose(c.sum(axis=1), det.score(np.array([[1.0, -1.0]]))))
True
"""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
from sklearn.covariance import MinCovDet

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.errors import ConfigError, DataError

#: MAD of a standard normal is 0.6745σ; dividing by it makes the MAD a consistent σ estimate.
MAD_TO_SIGMA = 1.4826
#: Ridge added to the robust correlation matrix so a constant or perfectly collinear
#: column cannot make it singular (in correlation units, so it is scale free).
DEFAULT_RIDGE = 1e-6
#: MCD needs more rows than features to define a scatter matrix at all.
MIN_ROWS_PER_FEATURE = 2


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD-based σ per column; a constant column gets scale 1 instead of 0.

    Falls back to the standard deviation when the MAD is zero but the column is not
    constant (e.g. a mostly-constant sensor with a few distinct values).

    >>> c, s = robust_scale(np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]))
    >>> c.tolist(), [round(v, 4) for v in s.tolist()]
    ([2.0, 5.0], [1.4826, 1.0])
    """
    center = np.median(X, axis=0)
    scale = MAD_TO_SIGMA * np.median(np.abs(X - center), axis=0)
    std = X.std(axis=0)
    scale = np.where(scale > 0, scale, std)
    scale = np.where(scale > 0, scale, 1.0)
    return center, scale


def zca_cor_whitener(covariance: np.ndarray, *, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """``W = R^{-1/2} D^{-1}`` for ``Σ = D R D``: whitening that keeps each axis next to its feature.

    Shared by the multivariate detectors that decompose a quadratic form into per-feature
    contributions (``||W x||²`` summed over coordinates equals ``x' Σ⁻¹ x``).

    >>> W = zca_cor_whitener(np.array([[4.0, 0.0], [0.0, 1.0]]), ridge=0.0)
    >>> W.round(3).tolist()
    [[0.5, 0.0], [0.0, 1.0]]
    """
    sd = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    sd = np.where(sd > 0, sd, 1.0)
    corr = covariance / np.outer(sd, sd)
    corr = 0.5 * (corr + corr.T) + ridge * np.eye(corr.shape[0])
    eigval, eigvec = np.linalg.eigh(corr)
    floor = max(ridge, np.finfo(np.float64).eps) * max(1.0, float(eigval.max()))
    eigval = np.clip(eigval, floor, None)
    inv_sqrt = (eigvec / np.sqrt(eigval)) @ eigvec.T
    return inv_sqrt / sd[None, :]


class RobustMahalanobis(ParamsMixin):
    """Squared robust Mahalanobis distance to an MCD baseline; high = anomalous.

    Parameters
    ----------
    support_fraction:
        Share of rows the MCD fits on (``None`` = scikit-learn's default ``(n + d + 1) / 2n``,
        the maximum breakdown point). Use e.g. 0.9 when the training data is known to be
        almost clean and you want more efficiency.
    ridge:
        Added to the robust correlation matrix before inversion (see :data:`DEFAULT_RIDGE`).
    seed:
        Seeds fast-MCD's random subsets, so a refit gives identical scores.
    """

    name: ClassVar[str] = "robust_mahalanobis"
    fitted_arrays = ("center_", "scale_", "location_", "covariance_", "whitener_")

    def __init__(
        self, *, support_fraction: float | None = None, ridge: float = DEFAULT_RIDGE, seed: int = 0
    ) -> None:
        self.support_fraction = support_fraction
        self.ridge = ridge
        self.seed = seed
        self.center_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.location_: np.ndarray | None = None
        self.covariance_: np.ndarray | None = None
        self.whitener_: np.ndarray | None = None

    @property
    def n_features_(self) -> int:
        check_fitted(self, "whitener_")
        return int(self.whitener_.shape[0])

    def fit(self, X: np.ndarray) -> Self:
        """Fit the robust location and scatter on normal rows ``X`` of shape ``(n, d)``."""
        if self.support_fraction is not None and not 0.0 < self.support_fraction <= 1.0:
            raise ConfigError(
                f"support_fraction={self.support_fraction!r} must be in (0, 1], e.g. 0.75, "
                "or None for the maximum-breakdown default"
            )
        X = as_batch(X)
        n, d = X.shape
        if n < MIN_ROWS_PER_FEATURE * d + 1:
            raise DataError(
                f"RobustMahalanobis needs at least {MIN_ROWS_PER_FEATURE * d + 1} normal rows for "
                f"{d} features (got {n}); collect more known-good data or drop features"
            )
        center, scale = robust_scale(X)
        Z = (X - center) / scale
        # A column that never moved in normal data carries no scatter information; MCD would only
        # warn about a singular matrix. It keeps zero variance here, so the ridge makes any later
        # movement of it loud, which is what a stuck-then-moving sensor deserves.
        varying = np.ptp(Z, axis=0) > 0
        location = np.zeros(d)
        covariance = np.zeros((d, d))
        if varying.any():
            mcd = MinCovDet(support_fraction=self.support_fraction, random_state=self.seed).fit(Z[:, varying])
            location[varying] = mcd.location_
            covariance[np.ix_(varying, varying)] = mcd.covariance_
        self.center_, self.scale_ = center, scale
        self.location_, self.covariance_ = location, covariance
        self.whitener_ = zca_cor_whitener(self.covariance_, ridge=self.ridge)
        return self

    def _whitened(self, X: np.ndarray) -> np.ndarray:
        check_fitted(self, "whitener_")
        X = as_batch(X, n_features=self.whitener_.shape[0])
        Z = (X - self.center_) / self.scale_ - self.location_
        return rowwise_matmul(Z, self.whitener_.T)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Squared robust Mahalanobis distance of each row, shape ``(n,)``."""
        U = self._whitened(X)
        return np.einsum("ij,ij->i", U, U)

    def explain(self, X: np.ndarray) -> np.ndarray:
        """Per-feature ZCA-cor contributions, ``(n, d)``, non-negative, rows sum to :meth:`score`."""
        U = self._whitened(X)
        return U * U
