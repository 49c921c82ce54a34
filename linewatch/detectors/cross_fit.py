"""Out-of-sample calibration scores for any detector: time-ordered blocked cross-fitting.

Why not a random hold-out
-------------------------
A threshold is only as honest as the normal scores it is set on. A random hold-out of an
autocorrelated series puts every calibration row between two fitting rows, so the detector
has practically seen it and scores it like in-sample data: the threshold comes out too low
and the realised false-alarm rate several times the promise (NAB's machine temperature went
from a 0.1 % target to 1.46 % that way). A single time-ordered hold-out is honest but wastes
data: the detector only learns from the first part and the calibrator only sees the last.

Blocked cross-fitting keeps both: the known-good data, in the order given, is cut into ``K``
contiguous blocks. For each block a fresh copy of the detector is fitted on the other blocks
(minus :func:`purge_rows` rows on each side of the held-out block, so windows, lags and
autocorrelation do not leak across the cut) and scores the held-out block *the way the live
agent would*: stateless detectors row by row, charts and online models as a fresh stream. The
pooled out-of-fold scores calibrate the threshold; then the detector is refitted on
everything, so the model that goes live has seen all the data and its threshold is, if
anything, slightly conservative. Regimes that a block holds and the others lack (a lot, a
tool change) score as they will when they recur, which is exactly what the threshold must
absorb.

A detector may do this faster itself (PatchCore extracts its patch embeddings once) by
offering ``out_of_fold_scores(X, folds)``; :func:`out_of_fold_scores` uses it when present.

How sure is the threshold?
--------------------------
Autocorrelated scores carry less information than their count: :func:`effective_sample_size`
divides the count by the integrated autocorrelation time of the scores within each block (on
normal scores of their ranks, so a heavy tail cannot dominate). :func:`far_interval` gives the
90 % interval of the false-alarm rate a threshold set at ``target_far`` on that many effective
samples will realise, and :func:`calibration_report` says whether the data resolve the target
at all; :mod:`linewatch.detectors.bundle` registers a model whose data do not as provisional,
with a conservative threshold.

>>> folds = blocked_folds(40, 4, purge=1)   # (fit rows, first and last held-out row) per fold
>>> [(len(fit), int(held[0]), int(held[-1])) for fit, held in folds]
[(29, 0, 9), (28, 10, 19), (28, 20, 29), (29, 30, 39)]
"""

from __future__ import annotations

import copy
import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import special, stats

from linewatch.errors import ConfigError, DataError

#: Blocks the known-good data is cut into (5: each fit sees 80 % of the data).
DEFAULT_FOLDS = 5
#: A held-out block must keep at least this many rows.
MIN_BLOCK_ROWS = 8
#: The purge never takes more than this share of a block from each neighbour.
MAX_PURGE_FRACTION = 0.25
#: Autocorrelations below this are treated as zero (the decorrelation lag is the first such lag).
NEGLIGIBLE_CORRELATION = 0.05
#: Lags the autocorrelation is examined up to, at most.
MAX_LAG = 1000
#: Two-sided coverage of the reported false-alarm interval.
INTERVAL_COVERAGE = 0.90
#: Expected normal exceedances at the target, in effective samples, below which the data cannot
#: resolve it: below one, the threshold is an extrapolation beyond anything observed.
MIN_EFFECTIVE_EXCEEDANCES = 1.0

Folds = list[tuple[np.ndarray, np.ndarray]]


def blocked_folds(n: int, k: int = DEFAULT_FOLDS, *, purge: int = 0) -> Folds:
    """``k`` contiguous held-out blocks and, for each, the rows a detector may fit on.

    The fit rows of a fold are all rows except its block and ``purge`` rows on either side.
    """
    if k < 2:
        raise ConfigError(f"cross-fitting needs at least 2 folds (got {k})")
    if n < k * MIN_BLOCK_ROWS:
        raise DataError(
            f"{n} known-good rows cannot be cut into {k} blocks of at least {MIN_BLOCK_ROWS}; "
            "give more known-good data or fewer folds"
        )
    edges = np.linspace(0, n, k + 1).round().astype(int)
    idx = np.arange(n)
    folds: Folds = []
    for lo, hi in itertools.pairwise(edges):
        keep = (idx < lo - purge) | (idx >= hi + purge)
        folds.append((idx[keep], idx[lo:hi]))
    return folds


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation of one series at lags ``0..max_lag`` (FFT, biased estimator)."""
    x = x - x.mean()
    var = float(x @ x)
    if var == 0.0:
        return np.r_[1.0, np.zeros(max_lag)]
    size = 1 << (2 * len(x) - 1).bit_length()
    f = np.fft.rfft(x, size)
    acf = np.fft.irfft(f * np.conj(f), size)[: max_lag + 1]
    return acf / var


def _gaussian_ranks(x: np.ndarray) -> np.ndarray:
    """Normal scores of the ranks: autocorrelation that one huge value cannot dominate."""
    return special.ndtri((stats.rankdata(x) - 0.5) / len(x))


def pooled_autocorrelation(blocks: Sequence[np.ndarray], max_lag: int = MAX_LAG) -> np.ndarray:
    """Autocorrelation at lags ``0..L`` pooled over several series, weighted by length."""
    usable = [np.asarray(b, dtype=np.float64) for b in blocks if len(b) >= 4]
    if not usable:
        return np.array([1.0])
    lag = int(min(max_lag, min(len(b) for b in usable) // 2))
    total = sum(len(b) for b in usable)
    return sum(len(b) * _autocorrelation(_gaussian_ranks(b), lag) for b in usable) / total


def integrated_autocorrelation_time(acf: np.ndarray) -> float:
    """``1 + 2 sum rho_k`` over Geyer's initial positive sequence (pairs summed while positive)."""
    tau = 1.0
    for k in range(1, len(acf) - 1, 2):
        pair = acf[k] + acf[k + 1]
        if pair <= 0:
            break
        tau += 2 * pair
    return max(tau, 1.0)


def effective_sample_size(blocks: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(ess, tau)``: how many independent normal scores the (ordered) blocks are worth."""
    n = sum(len(b) for b in blocks)
    tau = integrated_autocorrelation_time(pooled_autocorrelation(blocks))
    return max(1.0, n / tau), tau


def decorrelation_lag(X: np.ndarray, max_lag: int = MAX_LAG) -> int:
    """Lags over which some column's autocorrelation is still not negligible: the purge width.

    0 for independent rows; ``m`` when lags ``1..m`` of some column still correlate.

    ``X`` is an ``(n, d)`` table (or a 1-d score series) in time order. Columns are examined on
    their rank normal scores; constant columns are ignored.
    """
    X = np.asarray(X, dtype=np.float64)
    X = X[:, None] if X.ndim == 1 else X
    if X.shape[0] < 8:
        return 0
    lag = int(min(max_lag, X.shape[0] // 4))
    worst = 0
    for j in range(X.shape[1]):  # d is small next to n; each column is one FFT
        col = X[:, j]
        if not np.isfinite(col).all() or np.ptp(col) == 0:
            continue
        acf = np.abs(_autocorrelation(_gaussian_ranks(col), lag))
        below = np.flatnonzero(acf[1:] < NEGLIGIBLE_CORRELATION)
        worst = max(worst, int(below[0]) if below.size else lag)
    return worst


def purge_rows(X: Any, n_folds: int) -> int:
    """Rows dropped next to each held-out block: the data's decorrelation lag, capped per block."""
    n = len(X)
    cap = int(MAX_PURGE_FRACTION * n / n_folds)
    if not isinstance(X, np.ndarray) or X.dtype == np.uint8 or X.ndim != 2:
        return 0  # frames: parts are separate objects, nothing is windowed across them
    return min(decorrelation_lag(X), cap)


def take_rows(X: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of an array, or items of a list of frames (kept as one array where it is one)."""
    return X[idx] if isinstance(X, np.ndarray) else [X[i] for i in idx]


def score_as_live(detector: Any, X: Any, groups: np.ndarray | None = None) -> np.ndarray:
    """Raw scores of ordered rows as the live agent would produce them from a fresh stream.

    Charts and online detectors (anything with ``update``) continue a reset copy of their state,
    learning as they go where they learn live; the rest score row by row. With ``groups`` (one
    key per row, e.g. the asset), each group is its own stream, as the agents keep state per asset.
    """
    if groups is not None and hasattr(detector, "update"):
        keys = np.asarray(groups)
        out = np.empty(len(X))
        for g in dict.fromkeys(keys.tolist()):  # one stream per group, in order of first appearance
            rows = np.flatnonzero(keys == g)
            out[rows] = score_as_live(detector, take_rows(X, rows))
        return out
    if hasattr(detector, "update"):
        det = copy.deepcopy(detector)
        if hasattr(det, "reset"):
            det.reset()
        return np.asarray(det.update(X), dtype=np.float64)
    return np.asarray(detector.score(X), dtype=np.float64)


def out_of_fold_scores(
    detector: Any,
    X: Any,
    folds: Folds,
    *,
    groups: np.ndarray | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> np.ndarray:
    """Score of every row from a copy of ``detector`` fitted without that row's block (NaN: no block).

    ``detector`` is unfitted and stays so; the detector's own ``out_of_fold_scores`` is used when
    it has one. ``groups`` (one key per row) scores each group of a held-out block as its own
    stream (:func:`score_as_live`).
    """
    own = getattr(detector, "out_of_fold_scores", None)
    if callable(own):
        kwargs = {"progress": progress} if progress and "progress" in inspect.signature(own).parameters else {}
        scores = np.asarray(own(X, folds, **kwargs), dtype=np.float64)
        if scores.shape != (len(X),):
            raise DataError(f"{type(detector).__name__}.out_of_fold_scores returned {scores.shape}, "
                            f"expected ({len(X)},)")
        return scores
    scores = np.full(len(X), np.nan)
    for i, (fit_idx, held_idx) in enumerate(folds):
        if progress is not None:
            progress("cross-fitting", i, len(folds))
        det = copy.deepcopy(detector)
        det.fit(take_rows(X, fit_idx))
        scores[held_idx] = score_as_live(det, take_rows(X, held_idx),
                                         None if groups is None else np.asarray(groups)[held_idx])
    if progress is not None:
        progress("cross-fitting", len(folds), len(folds))
    return scores


def far_interval(target_far: float, ess: float, coverage: float = INTERVAL_COVERAGE) -> tuple[float, float]:
    """Interval of the false-alarm rate a threshold placed at ``target_far`` on ``ess`` samples realises.

    The true exceedance probability of the sample quantile that ``k = target_far * ess`` of
    ``ess`` independent scores exceed is Beta(k, ess - k + 1) distributed (order statistics of
    uniforms); a POT threshold beyond the sample is at least this uncertain.

    >>> lo, hi = far_interval(0.01, 10_000)
    >>> 0.008 < lo < 0.01 < hi < 0.012
    True
    """
    k = max(target_far * ess, 0.5)
    a = (1.0 - coverage) / 2
    dist = stats.beta(k, max(ess - k + 1.0, 1.0))
    return float(dist.ppf(a)), float(dist.ppf(1.0 - a))


def calibration_report(
    scores: np.ndarray,
    blocks: Sequence[np.ndarray],
    *,
    target_far: float,
    n_folds: int,
    purge: int,
    method: str,
) -> dict[str, Any]:
    """What the calibration scores can promise: JSON-ready, stored with the model version.

    ``blocks`` are the out-of-fold scores per held-out block in time order (their
    autocorrelation sets the effective sample size); ``method`` says how they were obtained.
    """
    ess, tau = effective_sample_size(blocks)
    ess, tau = float(ess), float(tau)  # the report is JSON: no numpy scalars
    lo, hi = far_interval(target_far, ess)
    resolvable = MIN_EFFECTIVE_EXCEEDANCES / ess
    warnings: list[str] = []
    provisional = bool(target_far < resolvable)
    if provisional:
        warnings.append(
            f"{len(scores)} normal scores are worth {ess:.0f} independent ones (autocorrelation time "
            f"{tau:.1f}); they cannot resolve target_far={target_far:g} (the smallest rate they resolve is "
            f"{resolvable:.2g}). The model is provisional: its threshold is at least the score that "
            f"{resolvable:.2g} of normal scores exceed, so it may alarm less than the target says. Train on "
            f"about {math.ceil(MIN_EFFECTIVE_EXCEEDANCES * tau / target_far)} known-good rows, or "
            f"raise --target-far to {resolvable:.2g}"
        )
    return {
        "method": method,
        "folds": n_folds,
        "purge_rows": int(purge),
        "n_scores": len(scores),
        "autocorrelation_time": round(tau, 3),
        "effective_sample_size": round(ess, 1),
        "target_far": target_far,
        "far_interval_90": [lo, hi],
        "min_resolvable_far": resolvable,
        "provisional": provisional,
        "warnings": warnings,
    }
