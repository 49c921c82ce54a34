"""The NAB score of one detector on one event stream, as the Numenta Anomaly Benchmark defines it.

Why a score beside precision and recall: a process engineer wants an alarm *early* in a fault
and few alarms elsewhere; per-event recall rewards alarming on every row of a long window and
says nothing about timing. NAB (Lavin and Ahmad 2015; ``nab/sweeper.py`` of numenta/NAB, the
definition reimplemented here) scores each detection by where it falls:

- **Probation**: the first ``min(floor(p * n), p * 5000)`` rows (``p = probationary_percent``,
  0.15 in NAB) are a warm-up and count for nothing, neither detections nor window rows; a
  window that lies wholly inside it is not scored at all.
- **Inside a window** of ``W`` rows ending at row ``b``, a detection at row ``i`` has relative
  position ``x = -(b - i + 1) / W`` (``-1`` on the window's first row) and earns
  ``tp * σ(x) / σ(-1)``, with the scaled sigmoid ``σ(x) = 2 / (1 + exp(5x)) - 1``: exactly
  ``tp`` on the first row, falling toward 0 at the right edge. **Only the best (earliest)
  detection of a window counts**; a window without one costs ``-fn``.
- **Outside every window**, a detection ``d`` rows after the end of the previous window of
  ``W`` rows costs ``fp * σ(d / (W - 1))``: almost nothing right after a window (a late but
  real detection), ``-fp`` from three window-widths on and before the first window.
  (NAB divides by zero after a one-row window; like NAB's older ``scorer.py`` we then use
  ``d / (W - 1) = 2``.)
- **Normalised**: ``100 * (raw - null) / (perfect - null)``, with ``null`` the detector that
  never fires (``-fn`` per scored window) and ``perfect`` the one that fires on each window's
  first row (``tp`` per scored window). NAB normalises over its whole corpus; for one stream
  we use that stream's windows, so the null detector scores 0 and the perfect one 100. Without
  a scored window the ratio is undefined: ``None``.

Windows are inclusive ``[start, end]`` times, mapped to rows as :class:`~linewatch.backtest.labels.LabelWindows`
does; they must not overlap (NAB's never do). The counts in :class:`NabResult` are NAB's
row counts after probation (``tp`` = detections inside windows, ``fn`` = window rows without
one), which NAB's own tests check.

>>> t = np.arange(10).astype("datetime64[m]").astype("datetime64[us]")
>>> hit = np.zeros(10, bool); hit[4] = True
>>> r = nab_score(t, hit, [(t[4], t[5])], probationary_percent=0.0)
>>> r.raw, r.normalized, r.tp, r.fn
(1.0, 100.0, 1, 1)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from linewatch.backtest.labels import LabelWindows
from linewatch.errors import ConfigError, DataError

#: Label windows as parsed from a file, or inclusive ``(start, end)`` pairs.
Windows = LabelWindows | Sequence[tuple[Any, Any]]


@dataclass(frozen=True)
class NabProfile:
    """NAB's cost matrix: the reward for a detected window, the costs of a false and a missed one."""

    tp: float
    fp: float
    fn: float
    tn: float = 1.0  # NAB carries it in profiles.json but no formula uses it


#: NAB's application profiles (``config/profiles.json`` of numenta/NAB v1.0).
PROFILES: dict[str, NabProfile] = {
    "standard": NabProfile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_fp": NabProfile(tp=1.0, fp=0.22, fn=1.0),  # NAB's reward_low_FP_rate
    "reward_low_fn": NabProfile(tp=1.0, fp=0.11, fn=2.0),  # NAB's reward_low_FN_rate
}

#: ``nab_scores`` keys, in the order reports list them.
SCORE_KEYS = {
    "standard": "nab_score_standard",
    "reward_low_fp": "nab_score_low_fp",
    "reward_low_fn": "nab_score_low_fn",
}

#: NAB caps probation at this many rows times the percentage (750 rows at 15 %).
PROBATION_CAP_ROWS = 5000


@dataclass(frozen=True)
class NabResult:
    """One stream's NAB score under one profile, with NAB's row counts after probation."""

    raw: float
    normalized: float | None
    tp: int
    fp: int
    fn: int
    tn: int
    windows_scored: int
    windows_detected: int
    null: float  # the raw score of the detector that never fires: -fn per scored window
    perfect: float  # the raw score of one hit on each window's first row: tp per scored window


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """NAB's ``2 * sigmoid(-5x) - 1``, and exactly ``-1`` from ``x >= 3`` on (as ``sweeper.py`` has it).

    >>> [round(float(v), 5) for v in scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.0]))]
    [0.98661, 0.84828, 0.0, -0.98661, -1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):  # exp overflows to inf far right of a window: 2/inf - 1 = -1
        s = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x >= 3.0, -1.0, s)


def probationary_length(n_rows: int, probationary_percent: float) -> int:
    """Rows of warm-up NAB ignores: ``min(floor(p * n), p * 5000)``.

    >>> probationary_length(100, 0.15), probationary_length(6000, 0.1)
    (15, 500)
    """
    if not 0.0 <= probationary_percent <= 1.0:
        raise ConfigError(f"probationary_percent must lie in [0, 1], got {probationary_percent}")
    return int(min(math.floor(probationary_percent * n_rows), probationary_percent * PROBATION_CAP_ROWS))


def windows_in(times: np.ndarray, windows: Windows) -> list[tuple[int, int, Any, Any]]:
    """``(first_row, end_row, start, end)`` of each window with rows in ``times``, in time order.

    Rows are ``[first_row, end_row)``; bounds are inclusive times, mapped to rows by
    :meth:`LabelWindows.row_bounds`; windows without rows are left out. Overlapping windows
    are refused: NAB's walk leaves one window before it enters the next, and a row in two
    windows would be rewarded twice.
    """
    lw = as_windows(windows)
    order = np.argsort(lw.starts, kind="stable")
    starts, ends = lw.starts[order], lw.ends[order]
    if (ends < starts).any():
        bad = int(np.argmax(ends < starts))
        raise DataError(f"a label window ends before it starts ({starts[bad]} to {ends[bad]}); swap or fix its bounds")
    lo, hi = LabelWindows(starts, ends, lw.source).row_bounds(np.asarray(times))
    out = [(int(a), int(b), s, e) for a, b, s, e in zip(lo, hi, starts, ends, strict=True) if b > a]
    for (_, e0, _, _), (s1, _, _, _) in itertools.pairwise(out):
        if s1 < e0:
            raise DataError(f"label windows overlap (rows {s1} to {e0 - 1} lie in two); merge them before scoring")
    return out


def as_windows(windows: Windows) -> LabelWindows:
    """``LabelWindows`` as given, or built from ``(start, end)`` pairs."""
    if isinstance(windows, LabelWindows):
        return windows
    pairs = list(windows)
    return LabelWindows(np.array([w[0] for w in pairs]), np.array([w[1] for w in pairs]), "label windows")


def window_rows(times: np.ndarray, windows: Windows) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges of :func:`windows_in`."""
    return [(a, b) for a, b, _, _ in windows_in(times, windows)]


def row_weights(n_rows: int, spans: Sequence[tuple[int, int]], profile: NabProfile) -> tuple[np.ndarray, np.ndarray]:
    """``(weight, window)`` per row: what a detection there would score, and its window index (-1 outside).

    The vectorised heart of NAB's ``calcSweepScore``: the in-window reward (sigmoid of the
    relative position, scaled so the first row earns exactly ``tp``) and the out-of-window
    cost (sigmoid of the distance past the previous window, in its widths).
    """
    i = np.arange(n_rows)
    window = np.full(n_rows, -1, dtype=np.int64)
    if not spans:
        return np.full(n_rows, -profile.fp), window
    first = np.array([s for s, _ in spans])
    last = np.array([e for _, e in spans]) - 1
    width = (last - first + 1).astype(np.float64)
    weight = np.empty(n_rows, dtype=np.float64)
    # inside: the last window starting at or before the row, if the row is not past its end
    k = np.searchsorted(first, i, side="right") - 1
    inside = (k >= 0) & (i <= last[np.maximum(k, 0)])
    k_in = k[inside]
    window[inside] = k_in
    x_in = -(last[k_in] - i[inside] + 1) / width[k_in]
    weight[inside] = scaled_sigmoid(x_in) / scaled_sigmoid(np.array([-1.0]))[0] * profile.tp
    # outside: rows past the previous window's last row, in that window's width minus one
    out = ~inside
    prev = (np.searchsorted(last, i, side="left") - 1)[out]
    after = prev >= 0
    x_out = np.full(prev.shape, 3.0)  # before every window: the full -fp
    gap = (i[out][after] - last[prev[after]]).astype(np.float64)
    span = width[prev[after]] - 1.0
    x_out[after] = np.where(span > 0, gap / np.maximum(span, 1.0), 2.0)  # 2 after a one-row window
    weight[out] = scaled_sigmoid(x_out) * profile.fp
    return weight, window


def _profile(profile: str | NabProfile) -> NabProfile:
    if isinstance(profile, NabProfile):
        return profile
    if profile not in PROFILES:
        raise ConfigError(f"unknown NAB profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def nab_score(
    times: np.ndarray,
    detections: np.ndarray,
    windows: Windows,
    profile: str | NabProfile = "standard",
    *,
    probationary_percent: float = 0.15,
) -> NabResult:
    """NAB's score of ``detections`` (one flag per row of the sorted ``times``) against ``windows``."""
    t = np.asarray(times)
    d = np.asarray(detections, dtype=bool)
    if d.shape != t.shape or t.ndim != 1:
        raise DataError(f"detections has shape {d.shape}; expected one flag per time ({t.shape})")
    if t.size > 1 and (t[1:] < t[:-1]).any():
        raise DataError("times must be sorted ascending (the replay's event time axis)")
    cost = _profile(profile)
    spans = window_rows(t, windows)
    weight, window = row_weights(t.size, spans, cost)
    scored = np.arange(t.size) >= probationary_length(t.size, probationary_percent)
    in_win = scored & (window >= 0)
    out_win = scored & (window < 0)
    raw = float(weight[d & out_win].sum())
    scored_windows = np.unique(window[in_win])
    detected = 0
    for w in scored_windows:  # a handful of windows: the walk reads as NAB's definition does
        hits = d & in_win & (window == w)
        if hits.any():
            raw += float(weight[hits].max())  # the earliest detection is the best one
            detected += 1
        else:
            raw -= cost.fn
    n_scored = int(scored_windows.size)
    null, perfect = -cost.fn * n_scored, cost.tp * n_scored
    return NabResult(
        raw=raw,
        normalized=100.0 * (raw - null) / (perfect - null) if perfect != null else None,
        tp=int((d & in_win).sum()),
        fp=int((d & out_win).sum()),
        fn=int((~d & in_win).sum()),
        tn=int((~d & out_win).sum()),
        windows_scored=n_scored,
        windows_detected=detected,
        null=null,
        perfect=perfect,
    )


def corpus_score(results: Sequence[NabResult]) -> float | None:
    """NAB's normalisation over several streams (one profile): ``100 * (Σraw - Σnull) / (Σperfect - Σnull)``.

    This is how NAB reports a detector on its corpus (``runner.normalize``): raw scores are
    summed before normalising, so a stream with many windows weighs more; it is not the
    mean of the per-stream scores.

    >>> t = np.arange(10.0)
    >>> hit = nab_score(t, t == 4, [(4.0, 5.0)], probationary_percent=0)
    >>> miss = nab_score(t, t < 0, [(4.0, 5.0)], probationary_percent=0)
    >>> corpus_score([hit, miss])
    50.0
    """
    null = sum(r.null for r in results)
    perfect = sum(r.perfect for r in results)
    return 100.0 * (sum(r.raw for r in results) - null) / (perfect - null) if perfect != null else None


def nab_scores(
    times: np.ndarray,
    detections: np.ndarray,
    windows: Windows,
    *,
    probationary_percent: float = 0.15,
) -> dict[str, float | None]:
    """The normalised score under each of NAB's three profiles, keyed as the replay report names them."""
    return {
        key: nab_score(times, detections, windows, name, probationary_percent=probationary_percent).normalized
        for name, key in SCORE_KEYS.items()
    }
