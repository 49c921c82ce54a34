"""The one place where backtest metrics are defined, so every modality reports the same numbers.

Conventions (rows are events; ``labels`` true = known anomalous, ``alarms`` true = the
detector alarmed, ``scores`` = raw or calibrated score, high = anomalous):

- ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``, ``f1`` their harmonic mean;
- ``far`` (false-alarm rate) ``= fp / normal rows``; ``mar`` (missed-alarm rate) ``= fn / anomalous rows``;
- ``auroc``: probability that a random anomalous row scores above a random normal one
  (ties count one half; Mann-Whitney), threshold-free.

A metric whose denominator is zero is ``None`` (JSON ``null``), never a made-up 0 or 1:
a test set without anomalies has no recall, and one without alarms has no precision.

Per event (:func:`event_report`): an *event* is a maximal run of anomalous rows, or each label
window when the caller gives them; it is detected when an alarm falls inside it, its delay runs
from its first row to that alarm (rows, and time when there are timestamps); a *false-alarm
episode* is a run of alarms that starts outside every event. Every backtest reports events
through that one function.

>>> import numpy as np
>>> m = classification_metrics(
...     np.array([0, 0, 0, 1, 1], bool), np.array([0, 1, 0, 1, 0], bool), np.array([0.1, 0.8, 0.2, 0.9, 0.3])
... )
>>> m["tp"], m["fp"], m["tn"], m["fn"], m["precision"], m["recall"], round(m["far"], 3), m["mar"]
(1, 1, 2, 1, 0.5, 0.5, 0.333, 0.5)
>>> round(m["auroc"], 3)
0.833
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from linewatch.errors import DataError


def as_flags(x: Any, what: str) -> np.ndarray:
    """A 1-D boolean array from booleans or 0/1, or a DataError that says which input was not."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise DataError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            odd = arr[~np.isin(arr, (0, 1))][:3]
            raise DataError(f"{what} must be booleans or 0/1, got values like {odd}")
        arr = arr.astype(bool)
    return arr


def auroc(labels: Any, scores: Any) -> float | None:
    """Area under the ROC curve via ranks (ties averaged); ``None`` with only one class present.

    >>> auroc(np.array([False, True, False, True]), np.array([0.1, 0.9, 0.5, 0.5]))
    0.875
    """
    y = as_flags(labels, "labels")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise DataError(f"scores shape {s.shape} does not match labels shape {y.shape}")
    if not np.isfinite(s).all():
        raise DataError("scores contain NaN or infinite values")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def classification_metrics(labels: Any, alarms: Any, scores: Any) -> dict[str, Any]:
    """Confusion counts, precision, recall, f1, far, mar and auroc for one backtest."""
    out = confusion_metrics(labels, alarms)
    out["auroc"] = auroc(labels, scores)
    return out


def confusion_metrics(labels: Any, alarms: Any) -> dict[str, Any]:
    """The threshold-dependent half of :func:`classification_metrics` (everything but ``auroc``).

    Separate because a replay scores only some events (a detector that was not ready leaves a
    NaN): every event counts here, while AUROC can only rank the scored ones.
    """
    y = as_flags(labels, "labels")
    a = as_flags(alarms, "alarms")
    if a.shape != y.shape:
        raise DataError(f"alarms shape {a.shape} does not match labels shape {y.shape}")
    tp = int((y & a).sum())
    fp = int((~y & a).sum())
    tn = int((~y & ~a).sum())
    fn = int((y & ~a).sum())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "far": _ratio(fp, fp + tn),
        "mar": _ratio(fn, tp + fn),
        "auroc": None,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": int(y.size),
        "n_anomalous": int(y.sum()),
    }


def segments(mask: Any) -> list[tuple[int, int]]:
    """``[start, end)`` of each maximal run of True.

    >>> segments(np.array([0, 1, 1, 0, 1], bool))
    [(1, 3), (4, 5)]
    """
    edges = np.diff(np.concatenate([[0], as_flags(mask, "mask").astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def detection_delays(
    labels: Any, alarms: Any, *, episodes: Sequence[tuple[int, int]] | None = None
) -> list[int | None]:
    """For each anomalous episode, rows from its start to the first alarm inside it.

    Episodes are the contiguous runs of ``labels`` unless ``episodes`` gives them as
    ``[start, end)`` row ranges (one per label window, which may touch or overlap).
    ``None`` = the episode was missed. SPC engineers judge charts by this (the run length
    after a shift), not only by per-row recall.

    >>> detection_delays(np.array([0, 1, 1, 1, 0, 1, 1], bool), np.array([0, 0, 1, 0, 0, 0, 0], bool))
    [1, None]
    """
    y = as_flags(labels, "labels")
    a = as_flags(alarms, "alarms")
    if a.shape != y.shape:
        raise DataError(f"alarms shape {a.shape} does not match labels shape {y.shape}")
    out: list[int | None] = []
    for s, e in segments(y) if episodes is None else episodes:  # one entry per episode, not per row
        hit = np.flatnonzero(a[s:e])
        out.append(int(hit[0]) if hit.size else None)
    return out


#: Seconds in an hour, for false alarms per hour.
SECONDS_PER_HOUR = 3600.0


def time_axis(timestamps: Any, n: int) -> tuple[np.ndarray, str]:
    """``(elapsed, unit)``: seconds since the first row for datetimes, the numbers themselves, or row numbers.

    >>> time_axis(np.array(["2026-01-01T00:00", "2026-01-01T00:05"], dtype="datetime64[us]"), 2)
    (array([  0., 300.]), 's')
    """
    if timestamps is None:
        return np.arange(n, dtype=np.float64), "rows"
    ts = np.asarray(timestamps)
    if ts.shape != (n,):
        raise DataError(f"timestamps has shape {ts.shape}; expected one per row ({n})")
    if np.issubdtype(ts.dtype, np.datetime64):
        return (ts - ts[0]).astype("timedelta64[ns]").astype(np.float64) / 1e9, "s"
    return ts.astype(np.float64), "timestamp units"


def _stamp(timestamps: np.ndarray | None, i: int) -> str | float | None:
    """Row ``i``'s time as it should read in a report: ISO 8601 (UTC), the number, or None."""
    if timestamps is None:
        return None
    t = timestamps[i]
    return str(np.datetime_as_string(t, unit="s")) if np.issubdtype(timestamps.dtype, np.datetime64) else float(t)


def _run_before(alarms: np.ndarray, start: int) -> int:
    """How many rows right before ``start`` were already alarming (a delay of 0 that was no reaction)."""
    before = alarms[:start][::-1]
    return int(before.size if before.all() else np.argmin(before))


def event_report(
    labels: Any,
    alarms: Any,
    *,
    timestamps: Any = None,
    episodes: Sequence[tuple[int, int]] | None = None,
    evaluated: Any = None,
    blame: Callable[[int], str | None] | None = None,
    normal_span_s: float | None = None,
) -> dict[str, Any]:
    """Per-event detection and false-alarm episodes of one backtest, JSON-ready.

    ``labels``/``alarms`` are one flag per row in time order; ``timestamps`` (datetime64 or
    numbers, optional) one per row; ``episodes`` the events as ``[start, end)`` row ranges
    (default: the runs of ``labels``); ``evaluated`` marks the rows that count toward the
    normal time span (default all); ``blame(row)`` names the feature behind the alarm at
    ``row``. Each event has ``start_row``/``end_row`` (inclusive), ``start``/``end`` (times),
    ``detected``, ``delay_rows``, ``delay`` (in ``delay_unit``: seconds for datetimes,
    timestamp units for numbers, rows without timestamps), ``first_alarm_row``,
    ``first_alarm``, ``alarm_rows``, ``alarm_on_before_rows`` (the alarm that caught the event
    had been on for that many rows before it started: an early warning, or an alarm that never
    cleared) and ``blamed_feature``. ``normal_span_s`` is the time outside every event in
    seconds when the caller knows it exactly (a replay with time windows and irregular events);
    without it the span is estimated as normal rows times the median row step.

    >>> y = np.array([0, 1, 1, 1, 0, 0, 1, 0], bool)
    >>> a = np.array([1, 0, 1, 1, 0, 0, 0, 1], bool)
    >>> r = event_report(y, a, timestamps=np.arange(8) * 60.0)
    >>> [(e["detected"], e["delay_rows"], e["delay"]) for e in r["events"]], r["false_alarm_episodes"]
    ([(True, 1, 60.0), (False, None, None)], 2)
    """
    y = as_flags(labels, "labels")
    a = as_flags(alarms, "alarms")
    ts = None if timestamps is None else np.asarray(timestamps)
    elapsed, unit = time_axis(ts, y.size)
    spans = segments(y) if episodes is None else [(int(s), int(e)) for s, e in episodes]
    events = []
    for (s, e), d in zip(spans, detection_delays(y, a, episodes=spans), strict=True):
        first = None if d is None else s + d
        events.append({
            "start_row": s,
            "end_row": e - 1,
            "start": _stamp(ts, s),
            "end": _stamp(ts, e - 1),
            "detected": first is not None,
            "delay_rows": d,
            "delay": None if first is None else float(elapsed[first] - elapsed[s]),
            "first_alarm_row": first,
            "first_alarm": None if first is None else _stamp(ts, first),
            "alarm_rows": int(a[s:e].sum()),
            "alarm_on_before_rows": _run_before(a, s) if d == 0 else 0,
            "blamed_feature": None if first is None or blame is None else blame(first),
        })
    delays = [ev["delay"] for ev in events if ev["delay"] is not None]
    row_delays = [ev["delay_rows"] for ev in events if ev["delay_rows"] is not None]
    false_episodes = sum(1 for s, _ in segments(a) if not y[s])
    normal = ~y if evaluated is None else as_flags(evaluated, "evaluated") & ~y
    step = float(np.median(np.diff(elapsed))) if y.size > 1 else 0.0
    if normal_span_s is None:
        normal_span_s = float(normal.sum()) * step if unit == "s" else 0.0
    return {
        "events": events,
        "n_events": len(events),
        "n_detected": sum(ev["detected"] for ev in events),
        "delay_unit": unit,
        "mean_delay": float(np.mean(delays)) if delays else None,
        "median_delay": float(np.median(delays)) if delays else None,
        "median_delay_rows": float(np.median(row_delays)) if row_delays else None,
        "false_alarm_episodes": false_episodes,
        "false_alarms_per_hour": false_episodes * SECONDS_PER_HOUR / normal_span_s if normal_span_s > 0 else None,
    }
