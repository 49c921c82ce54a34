"""The one place where backtest metrics are defined, so every modality reports the same numbers.

Conventions (rows are events; ``labels`` true = known anomalous, ``alarms`` true = the
detector alarmed, ``scores`` = raw or calibrated score, high = anomalous):

- ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``, ``f1`` their harmonic mean;
- ``far`` (false-alarm rate) ``= fp / normal rows``; ``mar`` (missed-alarm rate) ``= fn / anomalous rows``;
- ``auroc``: probability that a random anomalous row scores above a random normal one
  (ties count one half; Mann-Whitney), threshold-free.

A metric whose denominator is zero is ``None`` (JSON ``null``), never a made-up 0 or 1:
a test set without anomalies has no recall, and one without alarms has no precision.

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

from typing import Any

import numpy as np
from scipy.stats import rankdata

from linewatch.errors import DataError


def _flags(x: Any, what: str) -> np.ndarray:
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
    y = _flags(labels, "labels")
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
    y = _flags(labels, "labels")
    a = _flags(alarms, "alarms")
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
        "auroc": auroc(y, scores),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": int(y.size),
        "n_anomalous": int(y.sum()),
    }


def detection_delays(labels: Any, alarms: Any) -> list[int | None]:
    """For each contiguous anomalous episode, rows from its start to the first alarm inside it.

    ``None`` = the episode was missed. SPC engineers judge charts by this (the run length
    after a shift), not only by per-row recall.

    >>> detection_delays(np.array([0, 1, 1, 1, 0, 1, 1], bool), np.array([0, 0, 1, 0, 0, 0, 0], bool))
    [1, None]
    """
    y = _flags(labels, "labels")
    a = _flags(alarms, "alarms")
    edges = np.diff(np.concatenate([[0], y.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    out: list[int | None] = []
    for s, e in zip(starts, ends, strict=True):  # one entry per episode, not per row
        hit = np.flatnonzero(a[s:e])
        out.append(int(hit[0]) if hit.size else None)
    return out
