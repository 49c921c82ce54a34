"""Half-Space Trees for drifting processes: an online detector that keeps learning normal.

Why an online detector
----------------------
Some processes drift legitimately: a furnace ages, a supplier's lot changes, the hall
warms over the day. A model frozen at training time turns that into a stream of false
alarms; retraining by hand lags. Half-Space Trees (Tan, Ting & Liu, IJCAI 2011; River's
``anomaly.HalfSpaceTrees``) keep two mass profiles per tree: the *reference* masses of
the last complete window, used for scoring, and the *latest* masses being counted. Every
``window_size`` learned rows the latest profile becomes the reference, so the notion of
normal follows the process with a lag of one window.

Implementation: the same algorithm and scoring as River (random trees of fixed height,
split feature drawn in proportion to the remaining range, split point uniform in the
middle ``1 - 2·padding`` of it; score ``1 - Σ r_mass·2^depth / max``, descending until a
node's mass falls below ``0.1·window_size``), but held in numpy arrays. Why not wrap
River directly: River works one dict at a time in Python (about 100x slower for the
batch scoring replay and backtests need) and its trees can only be persisted by pickle.
Here a batch is scored with ``height`` vectorised steps over ``rows x trees``, and the
whole state is saved as npz.

Guarantees of the contract
--------------------------
- **Warm-up is explicit.** ``fit(X)`` needs at least one full window of known-good rows;
  it streams them in order (so the last window becomes the reference) and sets
  ``learn_cutoff_`` to the ``learn_quantile`` of the training scores. ``ready_`` says
  whether a reference window exists.
- **No learning from flagged rows.** ``learn_one``/``update`` score each row first and
  learn it only when its score is at most ``learn_cutoff_`` (or when the caller, which
  may hold the calibrated verdict, passes ``flagged=False``). A fault therefore cannot
  teach the model that it is normal, while slow drift, which scores low, is absorbed.
- ``score(X)`` never learns; ``update(X)`` is score-then-learn, row by row in order,
  vectorised per window (the reference masses only change at window boundaries).

Features are min-max scaled with the training range widened by ``range_margin`` on both
sides (the trees need a bounded space); values beyond it fall into the outermost cells.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = OnlineHalfSpaceTrees(window_size=100, seed=0).fit(rng.normal(size=(400, 2)))
>>> det.ready_
True
>>> s = det.score(np.array([[0.0, 0.0], [4.0, -4.0]]))
>>> bool(s[1] > s[0])
True
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.errors import ConfigError, DataError

#: River's defaults for the forest shape are n_trees=10, height=8, window_size=250; more
#: trees cost little in numpy and steady the score.
DEFAULT_N_TREES, DEFAULT_HEIGHT, DEFAULT_WINDOW = 25, 8, 250
#: The original paper's (and River's) cut-off: stop descending where the mass is < 0.1 window.
SIZE_LIMIT_FRACTION = 0.1
#: River's split padding: keeps splits away from the edges of a node's range.
DEFAULT_PADDING = 0.15
#: Rows per vectorised step: the path array is rows x trees x (height+1) int64 (~1.8 kB a row
#: with the defaults), so 4096 rows keep it near 7 MB whatever the batch size.
CHUNK_ROWS = 4096


def _build_trees(
    n_trees: int, height: int, n_features: int, padding: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random split features and thresholds of complete trees in heap order, in the unit cube."""
    n_internal = 2**height - 1
    features = np.zeros((n_trees, n_internal), dtype=np.int64)
    thresholds = np.zeros((n_trees, n_internal), dtype=np.float64)
    for t in range(n_trees):  # build time only: n_trees * 2^height tiny steps
        lo = np.zeros((n_internal, n_features))
        hi = np.ones((n_internal, n_features))
        for k in range(n_internal):
            width = hi[k] - lo[k]
            f = int(rng.choice(n_features, p=width / width.sum()))
            a, b = lo[k, f], hi[k, f]
            at = rng.uniform(a + padding * (b - a), b - padding * (b - a))
            features[t, k], thresholds[t, k] = f, at
            left, right = 2 * k + 1, 2 * k + 2
            if right < n_internal:
                lo[left], hi[left] = lo[k], hi[k]
                lo[right], hi[right] = lo[k], hi[k]
                hi[left, f] = at
                lo[right, f] = at
    return features, thresholds


class OnlineHalfSpaceTrees(ParamsMixin):
    """Streaming Half-Space Trees with explicit warm-up and flag-aware learning; high = anomalous.

    Parameters
    ----------
    n_trees, height, window_size, padding:
        Forest shape and reference-window length, as in River's ``HalfSpaceTrees``.
    range_margin:
        Widen the training min-max range by this fraction on each side before scaling.
    learn_quantile:
        Rows scoring above this quantile of the training scores are not learned.
    seed:
        Seeds the random trees.
    """

    name: ClassVar[str] = "half_space_trees"
    fitted_arrays = ("lo_", "hi_", "feature_", "threshold_", "l_mass_", "r_mass_", "learn_cutoff_")

    def __init__(
        self,
        *,
        n_trees: int = DEFAULT_N_TREES,
        height: int = DEFAULT_HEIGHT,
        window_size: int = DEFAULT_WINDOW,
        padding: float = DEFAULT_PADDING,
        range_margin: float = 0.1,
        learn_quantile: float = 0.99,
        seed: int = 0,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.padding = padding
        self.range_margin = range_margin
        self.learn_quantile = learn_quantile
        self.seed = seed
        self.lo_: np.ndarray | None = None
        self.hi_: np.ndarray | None = None
        self.feature_: np.ndarray | None = None
        self.threshold_: np.ndarray | None = None
        self.l_mass_: np.ndarray | None = None
        self.r_mass_: np.ndarray | None = None
        self.counter_: int = 0
        self.n_windows_: int = 0
        self.learn_cutoff_: float | None = None

    # ------------------------------------------------------------------ fitting

    def fit(self, X: np.ndarray) -> Self:
        """Warm up on known-good rows (at least one window), streamed in the given order."""
        if self.height < 1 or self.n_trees < 1 or self.window_size < 1:
            raise ConfigError("n_trees, height and window_size must all be at least 1")
        if not 0.0 <= self.padding < 0.5 or not 0.0 < self.learn_quantile <= 1.0:
            raise ConfigError(
                f"padding={self.padding!r} must be in [0, 0.5) and "
                f"learn_quantile={self.learn_quantile!r} in (0, 1]"
            )
        X = as_batch(X)
        if X.shape[0] < self.window_size:
            raise DataError(
                f"OnlineHalfSpaceTrees warms up on at least one window: need {self.window_size} rows, "
                f"got {X.shape[0]}; pass more known-good rows or a smaller window_size"
            )
        lo, hi = X.min(axis=0), X.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        self.lo_, self.hi_ = lo - self.range_margin * span, hi + self.range_margin * span
        rng = np.random.default_rng(self.seed)
        self.feature_, self.threshold_ = _build_trees(
            self.n_trees, self.height, X.shape[1], self.padding, rng
        )
        n_nodes = 2 ** (self.height + 1) - 1
        self.l_mass_ = np.zeros((self.n_trees, n_nodes))
        self.r_mass_ = np.zeros((self.n_trees, n_nodes))
        self.counter_, self.n_windows_ = 0, 0
        for start in range(0, X.shape[0], CHUNK_ROWS):
            paths = self._paths(X[start : start + CHUNK_ROWS])
            self._stream(paths, learn_mask=np.ones(paths.shape[0], dtype=bool), respect_cutoff=False)
        self.learn_cutoff_ = float(np.quantile(self.score(X), self.learn_quantile))
        return self

    @property
    def ready_(self) -> bool:
        """True once a complete reference window exists (after :meth:`fit`)."""
        return self.n_windows_ >= 1

    # ------------------------------------------------------------------ persistence

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The declared arrays plus the window counters, saved as one ``counters`` pair (the saved layout)."""
        arrays, values = super()._fitted_state()
        arrays["counters"] = np.array([self.counter_, self.n_windows_])
        return arrays, values

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        super()._restore(arrays, values)
        self.counter_, self.n_windows_ = (int(v) for v in arrays["counters"])

    # ------------------------------------------------------------------ internals

    def _paths(self, X: np.ndarray) -> np.ndarray:
        """Node ids visited at each depth: ``(n, n_trees, height + 1)``."""
        check_fitted(self, "feature_")
        X = as_batch(X, n_features=self.lo_.shape[0])
        U = (X - self.lo_) / (self.hi_ - self.lo_)
        n = U.shape[0]
        trees = np.arange(self.n_trees)[None, :]
        node = np.zeros((n, self.n_trees), dtype=np.int64)
        paths = np.empty((n, self.n_trees, self.height + 1), dtype=np.int64)
        rows = np.arange(n)[:, None]
        for depth in range(self.height):
            paths[:, :, depth] = node
            f = self.feature_[trees, node]
            go_right = U[rows, f] >= self.threshold_[trees, node]
            node = 2 * node + 1 + go_right
        paths[:, :, self.height] = node
        return paths

    def _score_paths(self, paths: np.ndarray) -> np.ndarray:
        trees = np.arange(self.n_trees)[None, :, None]
        r = self.r_mass_[trees, paths]  # (n, T, h+1)
        size_limit = SIZE_LIMIT_FRACTION * self.window_size
        # River stops *after* adding the first node whose mass is below the limit.
        below = r[:, :, :-1] < size_limit
        alive = np.concatenate(
            [np.ones((*r.shape[:2], 1), dtype=bool), np.cumsum(below, axis=2) == 0], axis=2
        )
        weights = 2.0 ** np.arange(self.height + 1)
        total = (r * alive * weights).sum(axis=(1, 2))
        max_score = self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)
        return 1.0 - total / max_score

    def _stream(self, paths: np.ndarray, *, learn_mask: np.ndarray, respect_cutoff: bool) -> np.ndarray:
        """Score-then-learn rows in order; rows flagged (or masked out) are scored but not learned."""
        n = paths.shape[0]
        out = np.empty(n)
        trees = np.arange(self.n_trees)[None, :, None]
        i = 0
        while i < n:
            capacity = self.window_size - self.counter_
            chunk = slice(i, min(n, i + 2 * capacity))
            scores = self._score_paths(paths[chunk])
            learnable = learn_mask[chunk].copy()
            if respect_cutoff:
                learnable &= scores <= self.learn_cutoff_
            taken = np.cumsum(learnable)
            pivot = taken[-1] >= capacity
            end = int(np.argmax(taken >= capacity)) + 1 if pivot else scores.size
            out[i : i + end] = scores[:end]
            learned = paths[chunk][:end][learnable[:end]]
            np.add.at(self.l_mass_, (np.broadcast_to(trees, learned.shape), learned), 1.0)
            self.counter_ += int(learnable[:end].sum())
            if pivot:
                self.r_mass_ = self.l_mass_
                self.l_mass_ = np.zeros_like(self.r_mass_)
                self.counter_ = 0
                self.n_windows_ += 1
            i += end
        return out

    # ------------------------------------------------------------------ public API

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score in [0, 1] of each row against the reference window; never learns."""
        check_fitted(self, "feature_")
        X = as_batch(X, n_features=self.lo_.shape[0])
        return np.concatenate(
            [self._score_paths(self._paths(X[i : i + CHUNK_ROWS])) for i in range(0, X.shape[0], CHUNK_ROWS)]
            or [np.empty(0)]
        )

    def score_one(self, x: np.ndarray) -> float:
        """Score one row without learning it."""
        return float(self.score(np.asarray(x, dtype=np.float64).reshape(1, -1))[0])

    def update(self, X: np.ndarray, *, flagged: np.ndarray | None = None) -> np.ndarray:
        """Score each row, then learn it unless it was flagged; returns the scores (before learning).

        ``flagged`` (optional, ``(n,)`` bool) carries the caller's verdict, e.g. the
        calibrated alarm of the model bundle; without it the detector's own ``learn_cutoff_``
        decides.
        """
        check_fitted(self, "feature_")
        X = as_batch(X, n_features=self.lo_.shape[0])
        if flagged is None:
            mask = np.ones(X.shape[0], dtype=bool)
        else:
            mask = ~np.asarray(flagged, dtype=bool).reshape(-1)
            if mask.size != X.shape[0]:
                raise DataError(f"flagged has {mask.size} entries for {X.shape[0]} rows")
        out = [
            self._stream(
                self._paths(X[i : i + CHUNK_ROWS]),
                learn_mask=mask[i : i + CHUNK_ROWS],
                respect_cutoff=flagged is None,
            )
            for i in range(0, X.shape[0], CHUNK_ROWS)
        ]
        return np.concatenate(out or [np.empty(0)])

    def learn_one(self, x: np.ndarray, *, flagged: bool | None = None) -> None:
        """Learn one row unless it is flagged (by the caller, or else by ``learn_cutoff_``)."""
        self.update(
            np.asarray(x, dtype=np.float64).reshape(1, -1),
            flagged=None if flagged is None else np.array([flagged]),
        )
