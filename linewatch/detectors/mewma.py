"""Multivariate EWMA (MEWMA) chart: Hotelling's T² applied to an exponentially smoothed mean.

Why MEWMA
---------
Hotelling's T² looks at one row at a time, so, like a Shewhart chart, it needs a large
shift before it reacts. The MEWMA of Lowry, Woodall, Champ & Rigdon (1992) smooths the
centred rows, ``Z_t = λ (x_t - μ) + (1 - λ) Z_{t-1}``, and charts
``T²_t = Z_t' Σ_Z(t)⁻¹ Z_t`` with the exact time-varying covariance
``Σ_Z(t) = λ/(2-λ) · (1 - (1-λ)^{2t}) · Σ``. Small sustained shifts in any direction of
the joint distribution, a slowly drifting fixture or a tool wearing several dimensions
at once, accumulate and show up far sooner than on T² or on any single chart.

Mean and covariance come from the same Phase I as :class:`~linewatch.detectors.hotelling.HotellingT2`
(rows above the Beta limit excluded iteratively). ``score(X)`` runs the chart over ``X``
as a fresh series that starts on target; ``update(X)`` continues from the carried state
(the live path); the state is saved with the model. The alarm limit ``h`` depends on
``λ``, ``p`` and the in-control ARL wanted (Prabhu & Runger 1997 tabulate it); here the
calibrator sets the threshold from normal data instead, which is equivalent and also
accounts for estimation error.

After a signal (``after_alarm="restart"``, the default) the smoothed vector restarts on target
right after a row whose ``T²`` crosses the chart's own limit ``χ²_p(1 - alpha)`` (the same 3σ-
equivalent ``alpha`` as Phase I; ``T²_t`` is χ²_p under control with the exact covariance), so one
shift yields one alarm episode and a persisting shift is re-detected a few rows later;
``"hold"`` keeps accumulating. See :func:`~linewatch.detectors.chart_math.run_restarting`.

``explain`` decomposes ``T²_t`` into ZCA-cor contributions of the smoothed vector
(non-negative, summing to the score), i.e. which features the accumulated drift is in.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = MEWMA(lam=0.1).fit(rng.normal(size=(500, 3)))
>>> calm = rng.normal(size=(60, 3))
>>> drift = rng.normal(size=(60, 3)) + np.array([0.7, 0.0, 0.0])   # 0.7σ shift in one feature
>>> bool(det.score(drift).max() > det.signal_limit > det.score(calm).max())
True
>>> int(det.explain(drift)[-1].argmax())
0
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from scipy import stats

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.detectors.chart_math import check_after_alarm, ewma_sigma_factor, ewma_statistic, run_restarting
from linewatch.detectors.hotelling import DEFAULT_ALPHA, DEFAULT_PHASE1_MAX_ITER, hotelling_phase1
from linewatch.detectors.robust_mahalanobis import DEFAULT_RIDGE, zca_cor_whitener
from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.errors import ConfigError

#: λ = 0.1 is the usual MEWMA choice for shifts around one σ (Lowry et al. 1992).
DEFAULT_MEWMA_LAMBDA = 0.1


class MEWMA(ParamsMixin):
    """MEWMA chart on ``(n, p)`` rows; score = ``T²_t`` of the smoothed mean, high = anomalous.

    Parameters
    ----------
    lam:
        Smoothing weight in (0, 1]; smaller reacts to smaller shifts, later. ``lam=1`` is Hotelling T².
    alpha, phase1_max_iter, ridge:
        Phase I settings, as for :class:`~linewatch.detectors.hotelling.HotellingT2`; ``alpha`` also
        sets the chart's own signal limit for ``after_alarm``.
    after_alarm:
        ``"restart"`` (default): restart on target after a signal; ``"hold"``: keep the memory.
    """

    name: ClassVar[str] = "mewma"
    fitted_arrays = ("mean_", "covariance_", "state_")

    def __init__(
        self,
        *,
        lam: float = DEFAULT_MEWMA_LAMBDA,
        alpha: float = DEFAULT_ALPHA,
        phase1_max_iter: int = DEFAULT_PHASE1_MAX_ITER,
        ridge: float = DEFAULT_RIDGE,
        after_alarm: str = "restart",
    ) -> None:
        self.lam = lam
        self.alpha = alpha
        self.phase1_max_iter = phase1_max_iter
        self.ridge = ridge
        self.after_alarm = after_alarm
        self.mean_: np.ndarray | None = None
        self.covariance_: np.ndarray | None = None
        self.whitener_: np.ndarray | None = None
        self.state_: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Self:
        """Phase I on known-good rows; the chart state starts on target."""
        if not 0.0 < self.lam <= 1.0:
            raise ConfigError(f"lam={self.lam!r} must be in (0, 1]; 0.05-0.2 suits small sustained shifts")
        check_after_alarm(self.after_alarm)
        mean, cov, _ = hotelling_phase1(
            X, alpha=self.alpha, max_iter=self.phase1_max_iter, ridge=self.ridge
        )
        self.mean_, self.covariance_ = mean, cov
        self.whitener_ = zca_cor_whitener(cov, ridge=self.ridge)
        self.state_ = self._initial_state()
        return self

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        """The whitener is not saved: it follows from the covariance and ``ridge``."""
        super()._restore(arrays, values)
        self.whitener_ = zca_cor_whitener(self.covariance_, ridge=self.ridge)

    def _initial_state(self) -> np.ndarray:
        return np.zeros(self.mean_.shape[0] + 1)  # [Z per feature..., t]

    def reset(self) -> None:
        """Restart the carried state on target (after a confirmed fix, say)."""
        check_fitted(self, "whitener_")
        self.state_ = self._initial_state()

    @property
    def signal_limit(self) -> float:
        """``T²`` beyond which the chart itself signals (and restarts under ``after_alarm="restart"``)."""
        check_fitted(self, "whitener_")
        return float(stats.chi2.ppf(1.0 - self.alpha, self.mean_.shape[0]))

    def _run(self, X: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_fitted(self, "whitener_")
        X = as_batch(X, n_features=self.mean_.shape[0])
        if X.shape[0] == 0:  # an empty batch leaves the chart where it was
            return np.empty((0, X.shape[1])), state
        if self.after_alarm == "hold":
            return self._recursion(X, state)
        limit = self.signal_limit
        return run_restarting(self._recursion, X, state,
                              signals=lambda contrib: contrib.sum(axis=1, keepdims=True) > limit,
                              restart=lambda s, _: self._initial_state())

    def _recursion(self, X: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Contributions to ``T²_t`` continuing from ``state``, and the state after the last row."""
        Z = ewma_statistic(X - self.mean_, lam=self.lam, start=state[:-1])
        t = state[-1] + np.arange(1, X.shape[0] + 1)
        U = rowwise_matmul(Z, self.whitener_.T) / ewma_sigma_factor(t, lam=self.lam)[:, None]
        return U * U, np.concatenate([Z[-1], [t[-1]]])

    def explain(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions ``(n, p)`` to ``T²_t`` for ``X`` as a fresh series."""
        check_fitted(self, "whitener_")
        contrib, _ = self._run(X, self._initial_state())
        return contrib

    def score(self, X: np.ndarray) -> np.ndarray:
        """``T²_t`` of each row, treating ``X`` as a fresh series starting on target."""
        return self.explain(X).sum(axis=1)

    def update(self, X: np.ndarray) -> np.ndarray:
        """``T²_t`` of ``X`` as the continuation of the stream; carries the state forward."""
        check_fitted(self, "whitener_")
        contrib, self.state_ = self._run(X, self.state_)
        return contrib.sum(axis=1)
