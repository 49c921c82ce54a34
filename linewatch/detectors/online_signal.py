"""Online detector for slow signals: it keeps learning from the stream, never from what it flags.

Why online
----------
Temperatures, pressures and slow per-window features drift for good reasons - the season,
a new batch of material, a re-tensioned belt - and a model frozen on last month's data
alarms on all of it. An online detector follows the slow baseline while still catching
what is abrupt. Two rules keep it honest (STYLE.md):

- **no learning from flagged rows**: :meth:`learn_one` scores the row first and skips the
  update when it is above the guard (the calibrated threshold once :meth:`set_threshold` is
  called, a conservative built-in guard before that), so a fault cannot teach the model
  that it is normal;
- **explicit warm-up**: until the model has seen ``warmup`` rows, :meth:`score_one` returns
  ``0.0`` (neutral) and :attr:`ready` is ``False``; nothing raises on the first message.

The detector
------------
``online_residual`` (:class:`OnlineResidual`): an exponentially weighted mean and variance per
feature; the score is the sum of squared standardised residuals ``z_j² = (x_j - m_j)² / v_j``
(≈ χ² with ``d`` degrees of freedom on normal data) and ``explain`` gives each ``z_j²``. The
state is two vectors, so it saves exactly and scores a batch vectorised. It suits slow,
unimodal signals (temperatures, pressures, per-window RMS) whose level wanders.

For multi-modal or non-Gaussian slow signals use ``half_space_trees``
(:mod:`linewatch.detectors.online_hst`): River's Half-Space Trees algorithm, re-implemented
in numpy (vectorised over rows and trees, npz persistence instead of pickle).

What online models cannot do: a fault that grows slowly enough looks like drift, and the
baseline follows it. The guard only stops learning from rows that are already flagged. Pair
them with a frozen model (``dynamic_pca``, ``autoencoder``) for slowly growing faults; the
signal quality benchmark shows the difference.

It also offers ``update(X)``: score-then-learn over an ordered batch, which is exactly what
the live agent does row by row.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(20.0, 0.5, size=(500, 2))
>>> det = OnlineResidual(half_life=100, warmup=50).fit(X)
>>> round(det.score_one(np.array([20.0, 20.0])), 2) < 1.0, det.score_one(np.array([20.0, 26.0])) > 50
(True, True)
>>> det.learn_one(np.array([20.0, 26.0]))     # flagged: not learned
>>> det.n_skipped_
1
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.errors import ConfigError, DataError

#: Before a calibrated threshold is set, a row with any |z| above this is "flagged" and not learned
#: (6 σ: essentially never on normal data, so the guard never starves the model of normal rows).
DEFAULT_GUARD_Z = 6.0
#: Variance floor as a share of the training variance: a column that was nearly constant in
#: training must not turn every rounding wiggle into a huge z-score.
VAR_FLOOR_SHARE = 1e-4


def _as_row(x: Any, d: int) -> np.ndarray:
    return as_batch(np.asarray(x, dtype=np.float64).reshape(1, -1), n_features=d)[0]


class OnlineResidual(ParamsMixin):
    """Exponentially weighted standardised residuals; score = Σ z², high = anomalous.

    Parameters
    ----------
    half_life:
        Rows after which an observation's weight in the mean/variance halves: the memory of
        the baseline (e.g. 1 day of 1-minute rows = 1440).
    warmup:
        Rows to see (``fit`` counts) before scores are real.
    guard_z:
        Learning guard before :meth:`set_threshold`: rows with any ``|z|`` above it are not learned.
    seed:
        Accepted for the common interface; nothing here is random.
    """

    name: ClassVar[str] = "online_residual"
    fitted_arrays = ("mean_", "var_", "var_floor_")
    #: The learning counters and the guard move with the stream, so they are saved with it.
    fitted_values = ("n_seen_", "n_skipped_", "threshold_")
    fitted_key = "state"

    def __init__(
        self, *, half_life: float = 500.0, warmup: int = 30, guard_z: float = DEFAULT_GUARD_Z, seed: int = 0
    ) -> None:
        self.half_life = half_life
        self.warmup = warmup
        self.guard_z = guard_z
        self.seed = seed
        self.mean_: np.ndarray | None = None
        self.var_: np.ndarray | None = None
        self.var_floor_: np.ndarray | None = None
        self.n_seen_: int = 0
        self.n_skipped_: int = 0
        self.threshold_: float | None = None

    @property
    def alpha(self) -> float:
        if not self.half_life > 0:
            raise ConfigError(f"half_life={self.half_life!r} must be a positive number of rows")
        return 1.0 - 0.5 ** (1.0 / self.half_life)

    @property
    def ready(self) -> bool:
        """Warm-up is over: scores are real."""
        return self.mean_ is not None and self.n_seen_ >= self.warmup

    def fit(self, X: np.ndarray) -> Self:
        """Initialise the baseline from ordered normal rows (weighted as if learned one by one)."""
        X = as_batch(X)
        n = X.shape[0]
        if n < 2:
            raise DataError("OnlineResidual.fit needs at least 2 normal rows")
        w = (1.0 - self.alpha) ** np.arange(n - 1, -1, -1, dtype=np.float64)
        w /= w.sum()
        mean = w @ X
        var = w @ (X - mean) ** 2
        self.var_floor_ = np.maximum(VAR_FLOOR_SHARE * X.var(axis=0), np.finfo(np.float64).tiny)
        self.mean_, self.var_ = mean, var
        self.n_seen_, self.n_skipped_ = n, 0
        return self

    def set_threshold(self, threshold: float | None) -> None:
        """Use a calibrated score threshold as the learning guard (``None`` = back to ``guard_z``)."""
        self.threshold_ = None if threshold is None else float(threshold)

    def _z2(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) ** 2 / np.maximum(self.var_, self.var_floor_)

    def explain(self, X: np.ndarray) -> np.ndarray:
        """``z_j²`` per feature, ``(n, d)``; rows sum to :meth:`score` (zeros while warming up)."""
        check_fitted(self, "mean_")
        X = as_batch(X, n_features=self.mean_.size)
        return self._z2(X) if self.ready else np.zeros_like(X)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Σ z² per row against the current baseline; does not learn."""
        return self.explain(X).sum(axis=1)

    def score_one(self, x: np.ndarray) -> float:
        check_fitted(self, "mean_")
        return float(self.score(_as_row(x, self.mean_.size)[None, :])[0])

    def _flagged(self, z2: np.ndarray) -> bool:
        if not self.ready:
            return False
        if self.threshold_ is not None:
            return bool(z2.sum() > self.threshold_)
        return bool(z2.max() > self.guard_z**2)

    def learn_one(self, x: np.ndarray) -> None:
        """Update the baseline with ``x`` unless ``x`` is flagged (then count it in ``n_skipped_``)."""
        check_fitted(self, "mean_")
        x = _as_row(x, self.mean_.size)
        if self._flagged(self._z2(x)):
            self.n_skipped_ += 1
            return
        a = self.alpha
        diff = x - self.mean_
        incr = a * diff
        self.mean_ = self.mean_ + incr
        self.var_ = (1.0 - a) * (self.var_ + diff * incr)
        self.n_seen_ += 1

    def update(self, X: np.ndarray) -> np.ndarray:
        """Score each row of an ordered batch, then learn it unless flagged (the live agent's loop)."""
        check_fitted(self, "mean_")
        X = as_batch(X, n_features=self.mean_.size)
        out = np.empty(X.shape[0])
        for i, row in enumerate(X):
            out[i] = self.score_one(row)
            self.learn_one(row)
        return out
