"""Dynamic PCA monitoring: Hotelling T² and SPE on lagged copies of an asset's sensors.

Why this detector exists
------------------------
The sensors of one machine move together: current follows load, temperature follows
current a few minutes later, vibration follows speed. Principal component analysis
learns that correlation structure from normal data and monitors two things (MacGregor &
Kourti, 1995):

- **T²**, the Mahalanobis distance *inside* the model's principal subspace: "all sensors
  still agree with each other, but the operating point is unusual";
- **SPE** (squared prediction error, Q), the distance *off* that subspace: "the usual
  relation between sensors is broken" - the typical signature of a fault or a bad sensor.

Static PCA treats every sample as independent, but process signals are autocorrelated and
relations are often delayed. *Dynamic* PCA (Ku, Storer & Georgakis, 1995) augments each
row with its ``lags`` predecessors, ``[x_t, x_{t-1}, …, x_{t-l}]``, so the model captures
the dynamics too and its SPE catches a relation that broke in time (a temperature that no
longer lags the current). ``lags=0`` is ordinary static PCA.

Score
-----
``statistic="combined"`` (default) returns Yue & Qin's combined index
``φ = T²/T²_lim + SPE/SPE_lim``, where the limits are the ``limit_quantile`` control limits
learned from training data (an F-distribution limit for T², Box's ``g χ²_h`` approximation
for SPE). It is dimensionless, ``≈ 1`` at the limits, and catches both kinds of fault.
``"t2"`` and ``"spe"`` return one statistic alone. :meth:`DynamicPCA.statistics` gives both raw.

Every score is a quadratic form ``z' M z`` of the standardised lagged row ``z``; writing
``M = W²`` with the symmetric square root ``W``, ``(W z)_j²`` is column ``j``'s share, non-negative
and summing to the score exactly (the complete decomposition of Alcala & Qin, 2009).
``explain`` adds up the shares of all lagged copies of a sensor, so it returns ``(n, d)``.

Ordered input
-------------
``score(X)`` treats the rows of ``X`` as consecutive in time. Row ``t`` needs the ``lags``
rows before it: pass them as ``history`` (the agent keeps the tail of the previous batch),
otherwise the first ``lags`` rows are warm-up, score ``0`` (neutral) and ``ready_mask`` says so.

>>> import numpy as np
>>> from scipy.signal import lfilter
>>> rng = np.random.default_rng(0)
>>> x1 = lfilter([1.0], [1.0, -0.9], rng.normal(size=2000))    # an autocorrelated process variable
>>> x2 = np.roll(x1, 2) + 0.1 * rng.normal(size=2000)           # a second sensor follows it 2 rows later
>>> X = np.column_stack([x1, x2])[5:]
>>> test = X[1500:].copy()
>>> test[300:, 1] = test[300:, 0] + 0.1 * rng.normal(size=195)  # the delay disappears: a broken relation
>>> dyn = DynamicPCA(lags=2).fit(X[:1500]).score(test, history=X[1498:1500])
>>> static = DynamicPCA(lags=0).fit(X[:1500]).score(test)
>>> bool(np.median(dyn[300:]) > 10 * np.median(dyn[:300]))    # dynamic PCA sees it
True
>>> bool(np.median(static[300:]) > 2 * np.median(static[:300]))  # static PCA does not
False
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from linewatch.detectors.base import as_batch, check_fitted, load_state, register, save_state
from linewatch.errors import ConfigError, DataError

#: Control limits at the 99th percentile of normal behaviour, the textbook default for PCA monitoring.
DEFAULT_LIMIT_QUANTILE = 0.99
#: Share of the standardised variance the retained components must explain (when n_components is None).
#: High on purpose: a broken relation between sensors lives in a *small*-variance direction, so
#: the residual (SPE) subspace should hold little more than measurement noise. With lagged,
#: autocorrelated columns a 90 % rule leaves real process variance in the residual and hides
#: such faults (the doctest's delay break is invisible at 0.9 and 0.95, obvious at 0.99).
DEFAULT_EXPLAINED_VARIANCE = 0.99
#: Eigenvalues below this share of the largest are numerical noise, not variance.
EIG_FLOOR = 1e-10


def lagged(X: np.ndarray, lags: int) -> np.ndarray:
    """Rows ``[x_t, x_{t-1}, …, x_{t-lags}]`` for ``t = lags .. n-1``: shape ``(n - lags, d (lags + 1))``.

    >>> lagged(np.arange(8.0).reshape(4, 2), 1).tolist()
    [[2.0, 3.0, 0.0, 1.0], [4.0, 5.0, 2.0, 3.0], [6.0, 7.0, 4.0, 5.0]]
    """
    n, d = X.shape
    if n <= lags:
        return np.empty((0, d * (lags + 1)))
    win = sliding_window_view(X, (lags + 1, d))[:, 0]  # (n - lags, lags + 1, d), oldest first
    return np.ascontiguousarray(win[:, ::-1, :]).reshape(n - lags, d * (lags + 1))


def _sym_sqrt(M: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (M + M.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


@register("dynamic_pca")
class DynamicPCA:
    """PCA T²/SPE monitoring on lag-augmented rows; high = anomalous.

    Parameters
    ----------
    lags:
        Predecessors appended to each row (``0`` = static PCA).
    n_components:
        Retained principal components; ``None`` = the fewest explaining ``explained_variance``.
    explained_variance:
        Variance share for the automatic choice of ``n_components``.
    statistic:
        ``"combined"``, ``"t2"`` or ``"spe"`` (see the module docstring).
    limit_quantile:
        Quantile of the T² and SPE control limits that normalise the combined index.
    seed:
        Accepted for the common detector interface; the fit is deterministic (an eigendecomposition).
    """

    name: ClassVar[str]

    def __init__(
        self,
        *,
        lags: int = 2,
        n_components: int | None = None,
        explained_variance: float = DEFAULT_EXPLAINED_VARIANCE,
        statistic: Literal["combined", "t2", "spe"] = "combined",
        limit_quantile: float = DEFAULT_LIMIT_QUANTILE,
        seed: int = 0,
    ) -> None:
        self.lags = lags
        self.n_components = n_components
        self.explained_variance = explained_variance
        self.statistic = statistic
        self.limit_quantile = limit_quantile
        self.seed = seed
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # (D, k) loadings
        self.eigenvalues_: np.ndarray | None = None  # (k,) retained variances
        self.t2_limit_: float | None = None
        self.spe_limit_: float | None = None
        self.weight_: np.ndarray | None = None  # symmetric square root of the score's quadratic form

    def _validate(self) -> None:
        if self.lags < 0:
            raise ConfigError(f"lags={self.lags!r} must be >= 0 (0 = static PCA)")
        if self.statistic not in ("combined", "t2", "spe"):
            raise ConfigError(f"statistic={self.statistic!r}; use 'combined', 't2' or 'spe'")
        if not 0.0 < self.explained_variance <= 1.0 or not 0.5 < self.limit_quantile < 1.0:
            raise ConfigError(
                "explained_variance must be in (0, 1] and limit_quantile in (0.5, 1), e.g. 0.99 and 0.99"
            )

    @property
    def n_features_(self) -> int:
        check_fitted(self, "weight_")
        return self.mean_.size // (self.lags + 1)

    def fit(self, X: np.ndarray) -> Self:
        """Learn the principal subspace and control limits from consecutive normal rows ``(n, d)``."""
        self._validate()
        X = as_batch(X)
        L = lagged(X, self.lags)
        n, D = L.shape
        if n < D + 2:
            raise DataError(
                f"dynamic PCA with {X.shape[1]} sensors and lags={self.lags} needs at least "
                f"{D + 2 + self.lags} consecutive normal rows (got {X.shape[0]}); "
                "give more data or fewer lags"
            )
        mean = L.mean(axis=0)
        scale = L.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        Z = (L - mean) / scale
        eigval, eigvec = np.linalg.eigh(Z.T @ Z / (n - 1))
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
        # Fix each eigenvector's sign (largest loading positive) so refits give identical loadings.
        signs = np.sign(eigvec[np.argmax(np.abs(eigvec), axis=0), np.arange(D)])
        eigvec = eigvec * np.where(signs == 0, 1.0, signs)
        usable = int((eigval > EIG_FLOOR * max(eigval[0], EIG_FLOOR)).sum())
        if self.n_components is not None:
            k = self.n_components
            if not 1 <= k < D:
                raise ConfigError(f"n_components={k} must be between 1 and {D - 1} for {D} lagged columns")
        else:
            share = np.cumsum(eigval) / max(eigval.sum(), EIG_FLOOR)
            k = int(np.searchsorted(share, self.explained_variance - 1e-12) + 1)
        k = max(1, min(k, usable, D - 1)) if D > 1 else 1
        P, lam = eigvec[:, :k], eigval[:k]
        rest = eigval[k:]
        q = self.limit_quantile
        t2_lim = k * (n - 1) * (n + 1) / (n * (n - k)) * float(stats.f.ppf(q, k, max(n - k, 1)))
        theta1, theta2 = float(rest.sum()), float((rest**2).sum())
        spe_lim = theta2 / theta1 * float(stats.chi2.ppf(q, theta1**2 / theta2)) if theta2 > 0 else 0.0
        t2_form = (P / lam) @ P.T
        spe_form = np.eye(D) - P @ P.T
        if self.statistic == "t2":
            M = t2_form
        elif self.statistic == "spe":
            M = spe_form
        else:
            M = t2_form / t2_lim + (spe_form / spe_lim if spe_lim > 0 else 0.0)
        self.mean_, self.scale_, self.components_, self.eigenvalues_ = mean, scale, P, lam
        self.t2_limit_, self.spe_limit_ = t2_lim, spe_lim
        self.weight_ = _sym_sqrt(M)
        return self

    def _lagged_z(self, X: np.ndarray, history: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Standardised lagged rows for the rows of ``X`` that have full history, and that mask."""
        check_fitted(self, "weight_")
        d = self.n_features_
        X = as_batch(X, n_features=d)
        if history is None:
            hist = np.empty((0, d))
        else:
            hist = as_batch(history, n_features=d)[-self.lags :] if self.lags else np.empty((0, d))
        seq = np.vstack([hist, X])
        ready = np.zeros(X.shape[0], dtype=bool)
        first = max(self.lags - hist.shape[0], 0)
        ready[first:] = True
        L = lagged(seq, self.lags)[hist.shape[0] + first - self.lags :] if ready.any() else np.empty((0, 0))
        return (L - self.mean_) / self.scale_ if ready.any() else L, ready

    def ready_mask(self, n_rows: int, *, n_history: int = 0) -> np.ndarray:
        """Which of ``n_rows`` rows get a real score (the rest are warm-up and score 0)."""
        ready = np.zeros(n_rows, dtype=bool)
        ready[max(self.lags - n_history, 0) :] = True
        return ready

    def statistics(
        self, X: np.ndarray, *, history: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(T², SPE)`` per row (``0`` on warm-up rows)."""
        Z, ready = self._lagged_z(X, history)
        t2, spe = np.zeros(ready.size), np.zeros(ready.size)
        if ready.any():
            T = Z @ self.components_
            t2[ready] = np.einsum("ij,ij->i", T / self.eigenvalues_, T)
            R = Z - T @ self.components_.T
            spe[ready] = np.einsum("ij,ij->i", R, R)
        return t2, spe

    def _contrib(self, X: np.ndarray, history: np.ndarray | None) -> np.ndarray:
        Z, ready = self._lagged_z(X, history)
        d = self.n_features_
        out = np.zeros((ready.size, d))
        if ready.any():
            U = Z @ self.weight_
            out[ready] = (U * U).reshape(-1, self.lags + 1, d).sum(axis=1)
        return out

    def score(self, X: np.ndarray, *, history: np.ndarray | None = None) -> np.ndarray:
        """The configured statistic per row of the ordered batch ``X``; ``history`` = rows before it."""
        return self._contrib(X, history).sum(axis=1)

    def explain(self, X: np.ndarray, *, history: np.ndarray | None = None) -> np.ndarray:
        """Per-sensor shares ``(n, d)`` (summed over lags), non-negative, rows sum to :meth:`score`."""
        return self._contrib(X, history)

    def save(self, path: str | Path) -> None:
        check_fitted(self, "weight_")
        params = {
            "lags": self.lags,
            "n_components": self.n_components,
            "explained_variance": self.explained_variance,
            "statistic": self.statistic,
            "limit_quantile": self.limit_quantile,
            "seed": self.seed,
        }
        arrays = {
            "mean": self.mean_,
            "scale": self.scale_,
            "components": self.components_,
            "eigenvalues": self.eigenvalues_,
            "limits": np.array([self.t2_limit_, self.spe_limit_]),
            "weight": self.weight_,
        }
        save_state(path, kind=self.name, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        params, arrays = load_state(path, kind=cls.name)
        det = cls(**params)
        det.mean_, det.scale_ = arrays["mean"], arrays["scale"]
        det.components_, det.eigenvalues_ = arrays["components"], arrays["eigenvalues"]
        det.t2_limit_, det.spe_limit_ = (float(v) for v in arrays["limits"])
        det.weight_ = arrays["weight"]
        return det
