"""Every figure a replay reports for one alarm stream against label windows, from one event time axis.

Why one function: a replay yields, per detector, per model version and for the fused alerts,
the same three arrays (event times, scores, alarms); the figures that decide thresholds must be
computed the same way for each, from the definitions in :mod:`linewatch.backtest.metrics` and
:mod:`linewatch.backtest.nab`, not re-derived per caller.

Inputs: ``times`` sorted (datetime64, or seconds as numbers), one per event; ``scores`` (high =
anomalous; NaN = the detector did not score that event, e.g. not ready yet); ``alarms`` (True
where it alarmed); ``windows`` inclusive ``[start, end]`` label windows (a
:class:`~linewatch.backtest.labels.LabelWindows` or pairs). An event is *anomalous* when it lies
inside a window. **A NaN score counts as no alarm** (it cannot have alarmed) and is left out of
AUROC only (it cannot be ranked); every other figure counts it. An infinite score (a tail
probability of 0) is a score like any other, the highest.

Point-wise (each event is one trial):

- ``precision`` = alarmed anomalous events / alarmed events; ``recall`` = alarmed anomalous
  events / anomalous events; ``f1`` their harmonic mean;
- ``far`` (false-alarm rate) = alarmed normal events / normal events;
- ``missed_alarm_rate`` = anomalous events not alarmed / anomalous events (``1 - recall``);
- ``auroc`` over the scored events (Mann-Whitney, ties one half), threshold-free.

Window-wise (each label window is one fault):

- ``n_windows``: windows holding at least one event (a window outside the replayed span
  cannot be judged and is left out of every figure);
- ``windows_detected``: windows with an alarm inside; ``delays_s`` per window, first alarm in
  it minus the window's *start* bound (seconds), ``None`` when missed; ``median_delay_s`` over
  the detected windows (``None`` if none);
- ``false_alarms_per_hour``: alarm *episodes* (maximal runs of alarmed events) that start
  outside every window, per hour of time outside windows (the span from first to last event
  minus the windows' time inside it). An episode that begins before a window and runs into it
  is false: it was not a reaction to the fault;
- ``nab_score_standard``, ``nab_score_low_fp``, ``nab_score_low_fn``: NAB's normalised score
  (:mod:`linewatch.backtest.nab`), the only figures that skip a probationary warm-up
  (``probationary_percent`` of the events, NAB's 15 % by default).

A figure whose denominator is zero is ``None`` (JSON ``null``).

>>> t = np.datetime64("2026-01-01T00:00", "us") + np.arange(8) * np.timedelta64(1, "h")
>>> a = np.array([0, 0, 0, 1, 1, 0, 0, 1], bool)
>>> m = alarm_metrics(t, a * 5.0, a, [(t[2], t[4])], probationary_percent=0.0)
>>> m["recall"], m["windows_detected"], m["median_delay_s"], m["false_alarms_per_hour"]
(0.6666666666666666, 1, 3600.0, 0.2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from linewatch.backtest.metrics import SECONDS_PER_HOUR, as_flags, auroc, confusion_metrics, event_report
from linewatch.backtest.nab import Windows, nab_scores, windows_in
from linewatch.errors import DataError


def _seconds(delta: Any) -> float:
    """A time difference in seconds: timedelta64 of any unit, or a number already in seconds."""
    if isinstance(delta, np.timedelta64):
        return float(delta / np.timedelta64(1, "us")) / 1e6
    return float(delta)


def _iso(t: Any) -> str | float:
    """A time as a report reads it: ISO 8601 to the second (UTC), or the number."""
    return str(np.datetime_as_string(t, unit="s")) if isinstance(t, np.datetime64) else float(t)


def rankable(s: np.ndarray) -> np.ndarray:
    """Infinite scores (a tail probability of 0) made finite without changing any rank, for AUROC."""
    finite = s[np.isfinite(s)]
    if finite.size == s.size:
        return s
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    return np.where(s == np.inf, hi + 1.0, np.where(s == -np.inf, lo - 1.0, s))


def _check(times: Any, alarms: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times)
    a = as_flags(alarms, "alarms")
    if t.ndim != 1 or a.shape != t.shape:
        raise DataError(f"alarms has shape {a.shape}; expected one flag per event time ({t.shape})")
    if t.size > 1 and (t[1:] < t[:-1]).any():
        raise DataError("event times must be sorted ascending; sort the replay's events by event time first")
    return t, a


def time_outside(times: np.ndarray, spans: Sequence[tuple[int, int, Any, Any]]) -> float:
    """Seconds from the first to the last event that no window covers (windows clipped to that span)."""
    if times.size < 2:
        return 0.0
    t0, t1 = times[0], times[-1]
    covered = sum(_seconds(min(end, t1) - max(start, t0)) for _, _, start, end in spans if end > t0 and start < t1)
    return _seconds(t1 - t0) - covered


def _label_events(t: np.ndarray, a: np.ndarray, spans: list, **report: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """``(labels, event_report)``: events inside a window, and the shared per-event report."""
    labels = np.zeros(t.size, dtype=bool)
    for lo, hi, _, _ in spans:
        labels[lo:hi] = True
    return labels, event_report(labels, a, timestamps=t, episodes=[(lo, hi) for lo, hi, _, _ in spans], **report)


def _table(t: np.ndarray, spans: list, report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for (_, _, start, end), ev in zip(spans, report["events"], strict=True):
        first = ev["first_alarm_row"]
        rows.append({
            "start": _iso(start),
            "end": _iso(end),
            "detected": ev["detected"],
            "delay_s": None if first is None else _seconds(t[first] - start),
            "first_alarm": ev["first_alarm"],
            "first_alarm_row": first,
            "alarm_events": ev["alarm_rows"],
            "blamed_feature": ev["blamed_feature"],
        })
    return rows


def per_window_table(
    times: np.ndarray,
    alarms: np.ndarray,
    windows: Windows,
    blamed: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """One row per label window with events: its bounds, whether and when it was caught, and by what.

    ``blamed[i]`` names the feature behind the alarm at event ``i`` (the report shows the one
    at the first alarm). Keys: ``start``, ``end`` (the window's bounds), ``detected``,
    ``delay_s`` (first alarm minus ``start``), ``first_alarm`` (its time), ``first_alarm_row``,
    ``alarm_events`` (alarmed events inside), ``blamed_feature``. Pass the alarms
    :func:`alarm_metrics` counted (NaN-scored events not alarmed) to get its delays.
    """
    t, a = _check(times, alarms)
    if blamed is not None and len(blamed) != t.size:
        raise DataError(f"blamed has {len(blamed)} entries; expected one per event ({t.size})")
    spans = windows_in(t, windows)
    _, report = _label_events(t, a, spans, blame=None if blamed is None else blamed.__getitem__)
    return _table(t, spans, report)


def alarm_metrics(
    times: np.ndarray,
    scores: np.ndarray,
    alarms: np.ndarray,
    windows: Windows,
    *,
    probationary_percent: float = 0.15,
) -> dict[str, float | int | list | None]:
    """The replay's figures for one alarm stream (definitions in the module docstring), JSON-ready."""
    t, a = _check(times, alarms)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != t.shape:
        raise DataError(f"scores has shape {s.shape}; expected one per event time ({t.shape})")
    scored = ~np.isnan(s)
    fired = a & scored
    spans = windows_in(t, windows)
    outside_s = time_outside(t, spans)
    labels, report = _label_events(t, fired, spans, normal_span_s=outside_s)
    counts = confusion_metrics(labels, fired)
    delays = [row["delay_s"] for row in _table(t, spans, report)]
    caught = [d for d in delays if d is not None]
    return {
        "n_events": int(t.size),
        "n_scored": int(scored.sum()),
        "n_windows": len(spans),
        "precision": counts["precision"],
        "recall": counts["recall"],
        "f1": counts["f1"],
        "auroc": auroc(labels[scored], rankable(s[scored])),
        "far": counts["far"],
        "missed_alarm_rate": counts["mar"],
        "windows_detected": len(caught),
        "median_delay_s": float(np.median(caught)) if caught else None,
        "delays_s": delays,
        "false_alarm_episodes": report["false_alarm_episodes"],
        "hours_outside_windows": outside_s / SECONDS_PER_HOUR,
        "false_alarms_per_hour": report["false_alarms_per_hour"],
        **nab_scores(t, fired, windows, probationary_percent=probationary_percent),
    }
