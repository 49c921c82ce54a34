"""Online detectors for slow signals: they keep learning from the stream, never from what they flag.

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

Two detectors
-------------
``online_residual`` (:class:`OnlineResidual`): an exponentially weighted mean and variance per
feature; the score is the sum of squared standardised residuals ``z_j² = (x_j - m_j)² / v_j``
(≈ χ² with ``d`` degrees of freedom on normal data) and ``explain`` gives each ``z_j²``. It is
plain numpy: the state is two vectors, so it saves exactly and scores a batch vectorised.

``online_hst`` (:class:`OnlineHalfSpaceTrees`): River's Half-Space Trees (Tan, Ting & Liu,
2011), an online isolation forest with mass profiles refreshed every ``window_size`` rows.
Features are min-max scaled with the training range first, because River picks split
features in proportion to their range and would otherwise only ever split the column with
the largest units. River objects are not pickled on save: the trees are rebuilt from the
seed and ranges (River builds them deterministically) and the node masses restored.

Both also offer ``update(X)``: score-then-learn over an ordered batch, which is exactly what
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

import math
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from linewatch.detectors.base import as_batch, check_fitted, load_state, register, save_state
from linewatch.errors import ConfigError, DataError

#: Before a calibrated threshold is set, a row with any |z| above this is "flagged" and not learned
#: (6 σ: essentially never on normal data, so the guard never starves the model of normal rows).
DEFAULT_GUARD_Z = 6.0
#: Variance floor as a share of the training variance: a column that was nearly constant in
#: training must not turn every rounding wiggle into a huge z-score.
VAR_FLOOR_SHARE = 1e-4
#: Headroom around the training range when scaling HST inputs to [0, 1].
HST_RANGE_MARGIN = 0.1
#: Quantile of the training scores used as the HST's learning guard until a threshold is set.
HST_GUARD_QUANTILE = 0.999


def _as_row(x: Any, d: int) -> np.ndarray:
    return as_batch(np.asarray(x, dtype=np.float64).reshape(1, -1), n_features=d)[0]


@register("online_residual")
class OnlineResidual:
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

    name: ClassVar[str]

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

    def save(self, path: str | Path) -> None:
        check_fitted(self, "mean_")
        params = {
            "half_life": self.half_life, "warmup": self.warmup, "guard_z": self.guard_z, "seed": self.seed
        }
        state = {"n_seen": self.n_seen_, "n_skipped": self.n_skipped_, "threshold": self.threshold_}
        save_state(
            path,
            kind=self.name,
            params={**params, "state": state},
            arrays={"mean": self.mean_, "var": self.var_, "var_floor": self.var_floor_},
        )

    @classmethod
    def load(cls, path: str | Path) -> Self:
        params, arrays = load_state(path, kind=cls.name)
        state = params.pop("state")
        det = cls(**params)
        det.mean_, det.var_, det.var_floor_ = arrays["mean"], arrays["var"], arrays["var_floor"]
        det.n_seen_, det.n_skipped_, det.threshold_ = state["n_seen"], state["n_skipped"], state["threshold"]
        return det


@register("online_hst")
class OnlineHalfSpaceTrees:
    """River Half-Space Trees on min-max scaled rows; score in ``[0, 1]``, high = anomalous.

    Parameters
    ----------
    n_trees, height, window_size:
        River's parameters: more trees = smoother scores, ``window_size`` rows per mass profile
        (also the warm-up: HST scores nothing before its first full window).
    seed:
        Seeds the random tree structure; identical seed and data give identical scores.
    """

    name: ClassVar[str]

    def __init__(self, *, n_trees: int = 25, height: int = 8, window_size: int = 100, seed: int = 0) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.low_: np.ndarray | None = None
        self.span_: np.ndarray | None = None
        self.model_: Any = None
        self.guard_: float | None = None
        self.threshold_: float | None = None
        self.n_seen_: int = 0
        self.n_skipped_: int = 0

    @property
    def ready(self) -> bool:
        return self.model_ is not None and self.n_seen_ >= self.window_size

    def _new_model(self) -> Any:
        from river.anomaly import HalfSpaceTrees

        if self.window_size < 1 or self.n_trees < 1 or self.height < 1:
            raise ConfigError("n_trees, height and window_size must be positive integers")
        return HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed
        )

    def _dict(self, x: np.ndarray) -> dict[str, float]:
        u = (x - self.low_) / self.span_
        return {f"f{j:04d}": float(v) for j, v in enumerate(u)}

    def fit(self, X: np.ndarray) -> Self:
        """Learn the normal mass profile from ordered normal rows (at least one full window)."""
        X = as_batch(X)
        if X.shape[0] < self.window_size:
            raise DataError(
                f"OnlineHalfSpaceTrees needs at least window_size={self.window_size} normal rows "
                f"(got {X.shape[0]}); lower window_size or give more data"
            )
        lo, hi = X.min(axis=0), X.max(axis=0)
        pad = HST_RANGE_MARGIN * np.where(hi > lo, hi - lo, 1.0)
        self.low_, self.span_ = lo - pad, (hi - lo) + 2 * pad
        self.model_ = self._new_model()
        for row in X:
            self.model_.learn_one(self._dict(row))
        self.n_seen_, self.n_skipped_, self.threshold_ = X.shape[0], 0, None
        train = self.score(X)
        self.guard_ = float(np.quantile(train, HST_GUARD_QUANTILE))
        return self

    def set_threshold(self, threshold: float | None) -> None:
        """Use a calibrated score threshold as the learning guard (``None`` = the training quantile)."""
        self.threshold_ = None if threshold is None else float(threshold)

    def score(self, X: np.ndarray) -> np.ndarray:
        """HST anomaly score per row against the current mass profile; does not learn."""
        check_fitted(self, "model_")
        X = as_batch(X, n_features=self.low_.size)
        if not self.ready:
            return np.zeros(X.shape[0])
        return np.array([self.model_.score_one(self._dict(row)) for row in X], dtype=np.float64)

    def score_one(self, x: np.ndarray) -> float:
        check_fitted(self, "model_")
        return float(self.score(_as_row(x, self.low_.size)[None, :])[0])

    def learn_one(self, x: np.ndarray) -> None:
        """Learn ``x`` unless its score is above the guard (counted in ``n_skipped_``)."""
        check_fitted(self, "model_")
        x = _as_row(x, self.low_.size)
        guard = self.threshold_ if self.threshold_ is not None else self.guard_
        if self.ready and guard is not None and self.score_one(x) > guard:
            self.n_skipped_ += 1
            return
        self.model_.learn_one(self._dict(x))
        self.n_seen_ += 1

    def update(self, X: np.ndarray) -> np.ndarray:
        """Score each row of an ordered batch, then learn it unless flagged."""
        check_fitted(self, "model_")
        X = as_batch(X, n_features=self.low_.size)
        out = np.empty(X.shape[0])
        for i, row in enumerate(X):
            out[i] = self.score_one(row)
            self.learn_one(row)
        return out

    def save(self, path: str | Path) -> None:
        check_fitted(self, "model_")
        m = self.model_
        nodes = [list(t.iter_dfs()) for t in m.trees]
        params = {
            "n_trees": self.n_trees, "height": self.height, "window_size": self.window_size, "seed": self.seed
        }
        state = {
            "guard": self.guard_,
            "threshold": self.threshold_,
            "n_seen": self.n_seen_,
            "n_skipped": self.n_skipped_,
            "counter": m.counter,
            "first_window": m._first_window,
        }
        arrays = {
            "low": self.low_,
            "span": self.span_,
            "l_mass": np.array([[n.l_mass for n in t] for t in nodes], dtype=np.int64),
            "r_mass": np.array([[n.r_mass for n in t] for t in nodes], dtype=np.int64),
        }
        save_state(path, kind=self.name, params={**params, "state": state}, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        params, arrays = load_state(path, kind=cls.name)
        state = params.pop("state")
        det = cls(**params)
        det.low_, det.span_ = arrays["low"], arrays["span"]
        m = det._new_model()
        # River builds the trees on the first learn_one from the seed and the (sorted) feature
        # names only; feed one row to build the identical structure, then restore the masses.
        m.learn_one(det._dict(det.low_))
        nodes = [list(t.iter_dfs()) for t in m.trees]
        l_mass, r_mass = arrays["l_mass"], arrays["r_mass"]
        if l_mass.shape != (len(nodes), len(nodes[0])):
            raise ValueError(f"{path}: saved HST masses do not match a rebuilt tree; was river upgraded?")
        for t, tree_nodes in enumerate(nodes):
            for j, node in enumerate(tree_nodes):
                node.l_mass, node.r_mass = int(l_mass[t, j]), int(r_mass[t, j])
        m.counter, m._first_window = int(state["counter"]), bool(state["first_window"])
        det.model_ = m
        det.guard_, det.threshold_ = state["guard"], state["threshold"]
        det.n_seen_, det.n_skipped_ = int(state["n_seen"]), int(state["n_skipped"])
        if not math.isfinite(det.guard_ if det.guard_ is not None else 0.0):
            raise ValueError(f"{path}: corrupt HST guard value")
        return det
