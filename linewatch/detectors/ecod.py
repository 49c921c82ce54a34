"""ECOD: empirical-CDF outlier scores per feature, summed; the explanation comes for free.

Why ECOD
--------
ECOD (Li, Zhao, Hu, Botta, Ionescu & Chen, 2022; PyOD's ``ECOD``) asks, for every
feature on its own, how deep in the tail of the *training* distribution a value lies,
and adds up ``-log`` tail probabilities across features. It has no parameters to tune,
no distributional assumption (skewed roughness or clipped torque is fine), and its
per-feature "dimensional outlier scores" are exactly the terms of the sum, so the alert
names its culprit honestly. It is blind to correlation breaks (use Hotelling, PCA or
the robust Mahalanobis detector for those).

For feature ``j`` with ``m`` reference values:

- left tail ``U_l = -log((#{ref <= x} + 1) / (m + 1))``, right tail ``U_r`` likewise with ``>=``;
- the skewness-aware tail ``U_s`` is ``U_r`` for right-skewed training data, ``U_l`` for
  left-skewed and ``U_l + U_r`` for symmetric (PyOD's formula, sign of the training skew);
- dimensional score ``O_j = max(U_l, U_r, U_s)``; the row's score is ``Σ_j O_j``.

Difference from PyOD, on purpose: PyOD's ``decision_function`` re-ranks each scored batch
*together with* the training set, so a row's score depends on which rows share its batch
(a burst of faulty parts makes each of them look less extreme), every call costs
``O(n_train log n_train)``, and the model must keep the whole training set. Here the
ECDFs are frozen at ``fit`` (sorted reference columns, ``searchsorted`` per call), which
makes scoring a pure per-row function. For a batch of one row the two agree exactly
(the ``+1`` above is the row itself joining PyOD's ECDF); the unit test checks that
against ``pyod.models.ecod.ECOD``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = ECOD().fit(rng.normal(size=(1000, 3)))
>>> x = np.array([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
>>> s, o = det.score(x), det.explain(x)
>>> bool(s[1] > s[0]), int(o[1].argmax()), bool(np.allclose(o.sum(axis=1), s))
(True, 1, True)
"""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
from scipy import stats

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.errors import ConfigError, DataError

#: Enough reference rows to resolve tail probabilities to 2e-5 while keeping the saved model
#: small (50k x d float64) and scoring at ``O(d log m)`` per row.
DEFAULT_MAX_REFERENCE = 50_000


class ECOD(ParamsMixin):
    """Empirical-CDF outlier detector with frozen training ECDFs; high = anomalous.

    Parameters
    ----------
    max_reference:
        Keep at most this many training rows (a seeded random subset) as the ECDF reference.
    seed:
        Seeds that subset, so refits give identical scores.
    """

    name: ClassVar[str] = "ecod"
    fitted_arrays = ("reference_", "skew_sign_")

    def __init__(self, *, max_reference: int = DEFAULT_MAX_REFERENCE, seed: int = 0) -> None:
        self.max_reference = max_reference
        self.seed = seed
        self.reference_: np.ndarray | None = None
        self.skew_sign_: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Self:
        """Freeze each feature's empirical distribution (and skewness sign) from known-good rows."""
        if self.max_reference < 2:
            raise ConfigError(f"max_reference={self.max_reference!r} must be at least 2")
        X = as_batch(X)
        if X.shape[0] < 2:
            raise DataError("ECOD needs at least 2 training rows")
        skew = np.nan_to_num(stats.skew(X, axis=0))
        if X.shape[0] > self.max_reference:
            rows = np.random.default_rng(self.seed).choice(X.shape[0], self.max_reference, replace=False)
            X = X[np.sort(rows)]
        self.reference_ = np.sort(X, axis=0)
        self.skew_sign_ = np.sign(skew)
        return self

    def explain(self, X: np.ndarray) -> np.ndarray:
        """Dimensional outlier scores ``(n, d)``: non-negative, rows sum to :meth:`score`."""
        check_fitted(self, "reference_")
        ref = self.reference_
        m, d = ref.shape
        X = as_batch(X, n_features=d)
        le = np.empty(X.shape, dtype=np.float64)
        ge = np.empty(X.shape, dtype=np.float64)
        for j in range(d):  # one vectorised binary search per feature
            le[:, j] = np.searchsorted(ref[:, j], X[:, j], side="right")
            ge[:, j] = m - np.searchsorted(ref[:, j], X[:, j], side="left")
        u_l = -np.log((le + 1.0) / (m + 1.0))
        u_r = -np.log((ge + 1.0) / (m + 1.0))
        s = self.skew_sign_
        u_s = u_l * -np.sign(s - 1) + u_r * np.sign(s + 1)
        return np.maximum(np.maximum(u_l, u_r), u_s)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Sum of the dimensional outlier scores."""
        return self.explain(X).sum(axis=1)
