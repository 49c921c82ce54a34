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
The PCA itself is the team's :class:`~linewatch.detectors.pca_monitor.PCAMonitor`, fitted on
the lagged rows. ``statistic="combined"`` (default) returns Yue & Qin's combined index
``φ = T²/T²_lim + SPE/SPE_lim``, where the limits are the ``limit_quantile`` control limits
learned from training data (an F-distribution limit for T², Box's ``g χ²_h`` approximation
for SPE). It is dimensionless, ``≈ 1`` at the limits, and catches both kinds of fault.
``"t2"`` and ``"spe"`` return one statistic alone. :meth:`DynamicPCA.statistics` gives both raw.

Contributions are PCAMonitor's exact decompositions (symmetric-root T² shares and squared
residuals, non-negative, summing to the statistic); ``explain`` adds up the shares of all
lagged copies of a sensor, so it returns ``(n, d)`` and names a sensor, not a lag.

Choosing the components: after the variance rule, components keep being added while the next
eigenvalue stands :data:`NOISE_FLOOR_RATIO` times above the mean of the remaining ones. Lagged
copies of a smooth signal put real dynamics into low-variance directions; left in the
residual they inflate the SPE limit and hide exactly the broken relations DPCA is for.

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

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.detectors.pca_monitor import PCAMonitor
from linewatch.errors import ConfigError, DataError

PCA_DIR = "pca"

#: Control limits at the 99th percentile of normal behaviour, the textbook default for PCA monitoring.
DEFAULT_LIMIT_QUANTILE = 0.99
#: Share of the standardised variance the retained components must explain (when n_components is None).
#: High on purpose: a broken relation between sensors lives in a *small*-variance direction, so
#: the residual (SPE) subspace should hold little more than measurement noise. With lagged,
#: autocorrelated columns a 90 % rule leaves real process variance in the residual and hides
#: such faults (the doctest's delay break is invisible at 0.9 and 0.95, obvious at 0.99).
DEFAULT_EXPLAINED_VARIANCE = 0.99
#: An eigenvalue this many times the mean of the smaller ones is structure, not noise floor: sample
#: eigenvalues of pure noise spread by only (1 ± sqrt(d/n))² (Marchenko-Pastur), far below 10x.
#: Smooth, autocorrelated processes put real dynamics in directions carrying < 1 % of the variance;
#: this rule keeps them out of the SPE subspace, where they would inflate its limit.
NOISE_FLOOR_RATIO = 10.0
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


class DynamicPCA(ParamsMixin):
    """PCA T²/SPE monitoring on lag-augmented rows; high = anomalous.

    The PCA itself (subspace, limits, exact contributions) is
    :class:`~linewatch.detectors.pca_monitor.PCAMonitor`, fitted on the lagged rows; this class
    adds the lags, the choice of ``n_components`` for autocorrelated data, the ``history``
    handling and the per-sensor aggregation.

    Parameters
    ----------
    lags:
        Predecessors appended to each row (``0`` = static PCA).
    n_components:
        Retained principal components; ``None`` = the fewest explaining ``explained_variance``,
        extended past any eigenvalue that stands :data:`NOISE_FLOOR_RATIO` times above the rest.
    explained_variance:
        Variance share for the automatic choice of ``n_components``.
    statistic:
        ``"combined"``, ``"t2"`` or ``"spe"`` (see the module docstring).
    limit_quantile:
        Quantile of the T² and SPE control limits that normalise the combined index.
    seed:
        Accepted for the common detector interface; the fit is deterministic (an eigendecomposition).
    """

    name: ClassVar[str] = "dynamic_pca"
    fitted_values = ("n_features_in_",)
    fitted_key = None  # saved next to the parameters (the layout older models have)

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
        self.pca_: PCAMonitor | None = None
        self.n_features_in_: int | None = None

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
    def t2_limit_(self) -> float:
        check_fitted(self, "pca_")
        return float(self.pca_.t2_ucl_)

    @property
    def spe_limit_(self) -> float:
        check_fitted(self, "pca_")
        return float(self.pca_.spe_ucl_ or 0.0)

    def _choose_components(self, ratio: np.ndarray) -> int:
        """Variance rule, then extend over eigenvalues that stand far above the noise floor."""
        D = ratio.size
        k = int(np.searchsorted(np.cumsum(ratio), self.explained_variance - 1e-12) + 1)
        usable = int((ratio > EIG_FLOOR * max(float(ratio[0]), EIG_FLOOR)).sum())
        # Keep going while the next eigenvalue stands clearly above the ones after it: it is
        # process structure, not part of the (roughly flat) noise floor the SPE should watch.
        while k < usable - 1 and ratio[k] > NOISE_FLOOR_RATIO * ratio[k + 1 :].mean():
            k += 1
        return max(1, min(k, D - 1))

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
        alpha = 1.0 - self.limit_quantile
        if self.n_components is not None:
            if not 1 <= self.n_components < max(D, 2):
                raise ConfigError(
                    f"n_components={self.n_components} must be between 1 and {D - 1} for {D} lagged columns"
                )
            k = self.n_components
        else:
            probe = PCAMonitor(n_components=1, alpha=alpha).fit(L)  # for the eigenvalue spectrum
            k = self._choose_components(probe.explained_variance_ratio_)
        self.pca_ = PCAMonitor(n_components=k, alpha=alpha).fit(L)
        self.n_features_in_ = X.shape[1]
        return self

    def _lagged(self, X: np.ndarray, history: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Lagged rows for the rows of ``X`` that have full history, and that mask."""
        check_fitted(self, "pca_")
        d = self.n_features_in_
        X = as_batch(X, n_features=d)
        hist = np.empty((0, d))
        if history is not None and self.lags:
            hist = as_batch(history, n_features=d)[-self.lags :]
        ready = self.ready_mask(X.shape[0], n_history=hist.shape[0])
        L = lagged(np.vstack([hist, X]), self.lags)
        return L[L.shape[0] - int(ready.sum()) :], ready

    def ready_mask(self, n_rows: int, *, n_history: int = 0) -> np.ndarray:
        """Which of ``n_rows`` rows get a real score (the rest are warm-up and score 0)."""
        ready = np.zeros(n_rows, dtype=bool)
        ready[max(self.lags - n_history, 0) :] = True
        return ready

    def statistics(
        self, X: np.ndarray, *, history: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(T², SPE)`` per row (``0`` on warm-up rows)."""
        L, ready = self._lagged(X, history)
        t2, spe = np.zeros(ready.size), np.zeros(ready.size)
        if ready.any():
            st = self.pca_.statistics(L)
            t2[ready], spe[ready] = st.t2, st.spe
        return t2, spe

    def _contrib(self, X: np.ndarray, history: np.ndarray | None) -> np.ndarray:
        L, ready = self._lagged(X, history)
        d = self.n_features_in_
        out = np.zeros((ready.size, d))
        if ready.any():
            if self.statistic == "combined":
                C = self.pca_.explain(L)
            else:
                st = self.pca_.statistics(L)
                C = st.t2_contributions if self.statistic == "t2" else st.spe_contributions
            out[ready] = C.reshape(-1, self.lags + 1, d).sum(axis=1)  # all lagged copies of a sensor
        return out

    def score(self, X: np.ndarray, *, history: np.ndarray | None = None) -> np.ndarray:
        """The configured statistic per row of the ordered batch ``X``; ``history`` = rows before it."""
        return self._contrib(X, history).sum(axis=1)

    def explain(self, X: np.ndarray, *, history: np.ndarray | None = None) -> np.ndarray:
        """Per-sensor shares ``(n, d)`` (summed over lags), non-negative, rows sum to :meth:`score`."""
        return self._contrib(X, history)

    def save(self, path: str | Path) -> None:
        """Parameters in ``metadata.json``; the fitted PCA in its own model directory beside it."""
        check_fitted(self, "pca_")
        super().save(path)
        self.pca_.save(Path(path) / PCA_DIR)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        det = super().load(path)
        det.pca_ = PCAMonitor.load(Path(path) / PCA_DIR)
        return det
