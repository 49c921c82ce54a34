"""Choose an alarm threshold from labelled history: for a false-alarm target, or for the cheapest mistakes.

Why here and not in the calibrator: the calibrator places a threshold from *normal* data and
an assumed tail; once a replay has labelled history (maintenance logs, NAB windows, operator
dispositions), the realised false-alarm rate and recall of every candidate threshold can be
counted, and an SPC engineer can ask for "at most 1 false alarm in 1000 parts" or "an escaped
defect costs 40 false rejects" directly.

Scores are calibrated (``-log10`` tail probability, high = anomalous); an event alarms when
``score >= threshold``. A NaN score (the detector did not score that event) never alarms but
still counts: a normal one is a true negative, an anomalous one an escape. The candidate
thresholds are the distinct scores seen plus ``inf`` (alarm on nothing but an infinite
score: in practice never), so every achievable alarm set is one candidate, and the lowest
threshold giving it is the one returned.

:func:`sweep` counts every candidate at once from two sorted arrays (``searchsorted``), with no
loop over thresholds; :func:`recommend` picks one:

- ``target_far``: the lowest threshold whose realised false-alarm rate on the normal events is
  at most the target. A rate of ``f`` is only resolved by about ``3 / f`` normal events (three
  false alarms expected); with fewer, the reason says so and the strictest rate the history
  resolves, ``3 / n_normal``, is used instead.
- ``cost_false_reject`` and ``cost_escape`` (per SKU, the caller passes that SKU's pair): the
  threshold minimising ``cost_false_reject * FP + cost_escape * FN``; ties go to the lower
  threshold (more caught for the same cost). With ``target_far`` as well, the cheapest among
  the thresholds meeting it.

>>> scores = np.array([0.1, 0.4, 0.2, 3.0, 2.5, 0.3, 2.8, 0.2])
>>> labels = np.array([0, 0, 0, 1, 1, 0, 1, 0], bool)
>>> c = recommend(scores, labels, cost_false_reject=1.0, cost_escape=10.0)
>>> c.threshold, c.far, c.recall
(2.5, 0.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from linewatch.backtest.metrics import as_flags
from linewatch.errors import ConfigError, DataError

#: False alarms the history should be expected to hold at the target rate before the rate counts as resolved.
MIN_FALSE_ALARMS_TO_RESOLVE = 3


@dataclass(frozen=True)
class ThresholdChoice:
    """The recommended threshold with what it did on the history it was chosen from."""

    threshold: float
    far: float | None  # None without normal events
    recall: float | None  # None without anomalous events
    precision: float | None  # None when it raises no alarm
    cost: float | None  # None when no costs were given
    n_normal: int
    n_anomalous: int
    reason: str


def _inputs(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = as_flags(labels, "labels (True = anomalous)")
    if s.ndim != 1 or y.shape != s.shape:
        raise DataError(f"labels has shape {y.shape}; expected one per score ({s.shape})")
    return s, y


def sweep(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per candidate threshold (ascending): ``threshold``, ``fp``, ``tp``, ``far``, ``recall``, ``precision``.

    ``thresholds`` defaults to the distinct non-NaN scores plus ``inf``. Rates whose
    denominator is zero are NaN (no normal events, no anomalous ones, or no alarm).

    >>> r = sweep(np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1], bool))
    >>> r["threshold"].tolist(), r["fp"].tolist(), r["recall"].tolist()
    ([0.1, 0.5, 0.9, inf], [2, 1, 0, 0], [1.0, 1.0, 0.5, 0.0])
    """
    s, y = _inputs(scores, labels)
    known = ~np.isnan(s)
    if thresholds is None:
        thr = np.union1d(s[known], [np.inf])
    else:
        thr = np.unique(np.asarray(thresholds, dtype=np.float64))
        if np.isnan(thr).any():
            raise DataError("thresholds contain NaN; pass numbers (inf for 'never alarm')")
    normal = np.sort(s[known & ~y])
    anomalous = np.sort(s[known & y])
    fp = normal.size - np.searchsorted(normal, thr, side="left")  # normal scores >= each threshold
    tp = anomalous.size - np.searchsorted(anomalous, thr, side="left")
    n_normal, n_anomalous = int((~y).sum()), int(y.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        far = fp / n_normal if n_normal else np.full(thr.shape, np.nan)
        recall = tp / n_anomalous if n_anomalous else np.full(thr.shape, np.nan)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
    return {"threshold": thr, "fp": fp, "tp": tp, "far": far, "recall": recall, "precision": precision}


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def recommend(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    target_far: float | None = None,
    cost_false_reject: float | None = None,
    cost_escape: float | None = None,
) -> ThresholdChoice:
    """The threshold for ``target_far``, for the two costs, or the cheapest meeting the target (see the module)."""
    if (cost_false_reject is None) != (cost_escape is None):
        raise ConfigError("give both cost_false_reject and cost_escape (their ratio decides), or neither")
    with_costs = cost_false_reject is not None and cost_escape is not None
    if target_far is None and not with_costs:
        raise ConfigError("say what the threshold is for: target_far, or cost_false_reject with cost_escape")
    if target_far is not None and not 0.0 < target_far < 1.0:
        raise ConfigError(f"target_far must lie in (0, 1), got {target_far}; e.g. 0.001 for 1 in 1000 normal events")
    if with_costs and (cost_false_reject < 0 or cost_escape < 0 or cost_false_reject + cost_escape == 0):
        raise ConfigError("costs must be non-negative and not both zero")
    s, y = _inputs(scores, labels)
    if s.size == 0:
        raise DataError("no events to choose a threshold from; replay a span with labelled history")
    curve = sweep(s, y)
    n_normal, n_anomalous = int((~y).sum()), int(y.sum())
    feasible = np.ones(curve["threshold"].shape, dtype=bool)
    reasons = []
    if target_far is not None:
        if n_normal < MIN_FALSE_ALARMS_TO_RESOLVE:
            raise DataError(
                f"the history holds {n_normal} normal events, too few to place a threshold by false-alarm rate; "
                "replay a longer span, or choose by costs"
            )
        needed = math.ceil(MIN_FALSE_ALARMS_TO_RESOLVE / target_far)
        rate = target_far
        if n_normal < needed:
            rate = MIN_FALSE_ALARMS_TO_RESOLVE / n_normal
            reasons.append(
                f"{n_normal} normal events cannot resolve a false-alarm rate of {target_far:g} (that needs about "
                f"{needed}); used the strictest rate they resolve, {rate:.3g}"
            )
        allowed = math.floor(rate * n_normal + 1e-9)  # counts, not float rates, decide
        feasible = curve["fp"] <= allowed
        reasons.append(f"lowest threshold with at most {allowed} false alarms in {n_normal} normal events")
        if not feasible.any():
            raise DataError(
                f"{int(curve['fp'][-1])} normal events score inf, more than the {allowed} false alarms allowed; "
                "check the calibration of those events or raise target_far"
            )
    cost = None
    if with_costs:
        fn = n_anomalous - curve["tp"]
        costs = cost_false_reject * curve["fp"] + cost_escape * fn
        k = int(np.argmin(np.where(feasible, costs, np.inf)))  # first minimum: the lowest threshold among ties
        cost = float(costs[k])
        reasons.append(f"minimises {cost_false_reject:g} * false rejects + {cost_escape:g} * escapes")
        if n_anomalous == 0:
            reasons.append("the history has no anomalous event, so only false rejects cost")
    else:
        k = int(np.argmax(feasible))  # feasible is a suffix (fp falls as the threshold rises); inf always is
    if np.isinf(curve["threshold"][k]):
        reasons.append("no threshold at a seen score does better: inf means never alarm")
    return ThresholdChoice(
        threshold=float(curve["threshold"][k]),
        far=_opt(curve["far"][k]),
        recall=_opt(curve["recall"][k]),
        precision=_opt(curve["precision"][k]),
        cost=cost,
        n_normal=n_normal,
        n_anomalous=n_anomalous,
        reason="; ".join(reasons),
    )
