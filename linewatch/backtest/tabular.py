"""CSV backtest for tabular (SPC) detectors: fit on known-good history, replay a labelled test file.

What it does
------------
1. **Load** both CSVs with the same column handling: features are ``--columns`` in the
   order given, or else every column (other than the label and time columns) whose values
   are all numeric in the training file, in file order; text columns such as an asset or
   part id are skipped and listed in the result. The label column is read for metrics and
   *never* used as a feature or to select training rows. With a time column, rows are
   sorted by it (stable), so charts with memory (EWMA, CUSUM, MEWMA, online models) see the
   process in order.
2. **Fit** the detector and its calibrator on the training rows through
   :meth:`linewatch.detectors.bundle.ModelBundle.fit`, i.e. exactly the model object a
   worker would load (detector fitted on 70 % of the rows, calibrator on its scores of the
   other 30 %, threshold set for ``target_far``).
3. **Score** the test rows the way the live agent does: online detectors (those with
   ``learn_one``) prequentially through ``update`` (score, then learn unless flagged), all
   others through ``score`` on the ordered test series. An alarm is a raw score above the
   calibrated threshold.
   With a group column (``--group-column asset_id``) each group is replayed as its own
   series, as the agents keep state per asset (see :func:`replay`).
4. **Report** :func:`~linewatch.backtest.metrics.classification_metrics` plus detection
   delays per anomalous episode, recall per label value (when the label column names fault
   types), and which features the detector blamed for its alarms.

Labels: ``1/0``, ``true/false``, ``yes/no``; or a category column in which ``none``,
``normal``, ``ok``, ``good``, ``0`` and the empty string mean normal and any other value
names a kind of anomaly (``linewatch simulate spc --csv`` writes such a ``fault`` column).

``--detector auto`` picks by the shape of the training data (see :func:`choose_detector`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> train = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=3000)
>>> test = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=400)
>>> test[300:, 1] = -test[300:, 0]                                   # correlation break
>>> labels = np.r_[np.zeros(300, bool), np.ones(100, bool)]
>>> r = run_tabular_backtest(train, test, labels, ["a", "b"], detector="hotelling", target_far=0.01)
>>> r["recall"] > 0.4, r["far"] < 0.05, r["detector"]          # a break is visible once |a| > ~0.7σ
(True, True, 'hotelling')
"""

from __future__ import annotations

import copy
import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from linewatch.backtest.metrics import classification_metrics, detection_delays
from linewatch.detectors import catalog  # noqa: F401  (fills the detector registry)
from linewatch.detectors.base import Explainer, get_detector
from linewatch.errors import ConfigError, DataError

#: Label spellings that mean "normal"; anything else non-empty names an anomaly.
NORMAL_LABELS = frozenset({"0", "false", "no", "n", "none", "normal", "ok", "good", ""})
TRUE_LABELS = frozenset({"1", "true", "yes", "y"})
#: ``auto``: below this many training rows per feature a full covariance is not trustworthy.
MIN_ROWS_PER_FEATURE_FOR_COVARIANCE = 10
#: ``auto``: more features than this and a PCA subspace model is the safer multivariate choice.
MAX_FEATURES_FOR_COVARIANCE = 30
#: ``auto``: marginal skewness / excess kurtosis beyond these means "not roughly normal".
NON_NORMAL_SKEW, NON_NORMAL_KURTOSIS = 1.0, 3.0


@dataclass(frozen=True)
class TabularData:
    """One CSV file as arrays, in time order when a time column was given."""

    X: np.ndarray
    feature_names: list[str]
    labels: np.ndarray | None = None  # bool per row
    label_values: np.ndarray | None = None  # the raw label strings, for per-kind recall
    timestamps: np.ndarray | None = None  # datetime64[us] (UTC) or float
    ignored_columns: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None  # the group column's values (e.g. asset ids), as strings


def _parse_label(raw: str) -> tuple[bool, str]:
    v = raw.strip().lower()
    if v in TRUE_LABELS:
        return True, v
    if v in NORMAL_LABELS:
        return False, v
    try:
        return float(v) != 0.0, v
    except ValueError:
        return True, v  # a named anomaly kind, e.g. "mean_shift"


def _parse_times(values: list[str], column: str) -> np.ndarray:
    """ISO 8601 (naive = UTC) to datetime64[us] UTC, or plain numbers to float."""
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        pass
    out = []
    for i, v in enumerate(values):
        try:
            t = datetime.fromisoformat(v.strip())
        except ValueError as e:
            raise DataError(
                f"time column {column!r}, data row {i + 1}: {v!r} is neither a number nor an ISO 8601 time"
            ) from e
        t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        out.append(np.datetime64(t.replace(tzinfo=None), "us"))
    return np.array(out, dtype="datetime64[us]")


def _is_number(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


def load_csv(
    path: str | Path,
    *,
    sep: str = ",",
    columns: list[str] | None = None,
    label_column: str | None = None,
    time_column: str | None = None,
    label_optional: bool = False,
    group_column: str | None = None,
) -> TabularData:
    """Read one CSV into :class:`TabularData`; see the module docstring for the column rules.

    ``label_optional=True`` (for a training file) tolerates a missing label column; when it
    is there it is still read, so it can never slip in as a feature.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"CSV file {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration as e:
            raise DataError(f"{path} is empty; expected a header row and data rows") from e
        rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    if len(header) == 1 and sep not in {";", "\t"} and ";" in header[0]:
        raise ConfigError(f"{path} looks ';'-separated (header {header[0]!r}); pass --sep ';'")
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise DataError(
            f"{path}: data row {bad[0] + 1} has {len(rows[bad[0]])} fields, the header has {len(header)}; "
            f"check --sep (now {sep!r})"
        )
    index = {name: i for i, name in enumerate(header)}
    if label_optional and label_column not in index:
        label_column = None
    named = (("label column", label_column), ("time column", time_column), ("group column", group_column))
    for what, name in named:
        if name is not None and name not in index:
            raise ConfigError(f"{what} {name!r} is not in {path}; columns are: {', '.join(header)}")
    cols = list(zip(*rows, strict=True))
    reserved = {label_column, time_column, group_column}
    ignored: list[str] = []
    if columns:
        missing = [c for c in columns if c not in index]
        if missing:
            raise ConfigError(f"--columns {missing} not in {path}; columns are: {', '.join(header)}")
        if reserved & set(columns) - {None}:
            raise ConfigError("the label, time and group columns cannot also be feature --columns")
        features = list(columns)
    else:
        features = []
        for name in header:
            if name in reserved:
                continue
            (features if all(_is_number(v) for v in cols[index[name]]) else ignored).append(name)
        if not features:
            raise DataError(f"{path} has no all-numeric columns besides the label and time columns")
    X = np.empty((len(rows), len(features)))
    for j, name in enumerate(features):
        values = cols[index[name]]
        try:
            X[:, j] = [float(v) for v in values]
        except ValueError:
            i = next(i for i, v in enumerate(values) if not _is_number(v))
            raise DataError(
                f"{path}: column {name!r}, data row {i + 1}: {values[i]!r} is not a number"
            ) from None
    if not np.isfinite(X).all():
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise DataError(
            f"{path}: column {features[c]!r}, data row {r + 1} is NaN or infinite; clean it first"
        )
    labels = label_values = times = groups = None
    if group_column is not None:
        groups = np.array([v.strip() for v in cols[index[group_column]]], dtype=object)
    if label_column is not None:
        parsed = [_parse_label(v) for v in cols[index[label_column]]]
        labels = np.array([p[0] for p in parsed], dtype=bool)
        label_values = np.array([p[1] for p in parsed], dtype=object)
    if time_column is not None:
        times = _parse_times(list(cols[index[time_column]]), time_column)
        order = np.argsort(times, kind="stable")
        X, times = X[order], times[order]
        if labels is not None:
            labels, label_values = labels[order], label_values[order]
        if groups is not None:
            groups = groups[order]
    return TabularData(X, features, labels, label_values, times, ignored, groups)


def choose_detector(X: np.ndarray) -> tuple[str, str]:
    """``--detector auto``: a documented rule on the training data's shape, returning (name, reason).

    - one feature: ``ewma`` (catches small sustained shifts and, through its first-step limits, spikes);
    - many features, or few rows per feature: ``pca_monitor`` (a full covariance would be unstable);
    - clearly non-normal marginals (skewed or heavy-tailed): ``isolation_forest``;
    - otherwise ``robust_mahalanobis`` (correlation-aware and tolerant of a few bad training rows).

    >>> choose_detector(np.random.default_rng(0).normal(size=(500, 3)))[0]
    'robust_mahalanobis'
    """
    n, d = X.shape
    if d == 1:
        return "ewma", "one feature: a univariate EWMA chart"
    if d > MAX_FEATURES_FOR_COVARIANCE or n < MIN_ROWS_PER_FEATURE_FOR_COVARIANCE * d:
        return "pca_monitor", f"{d} features from {n} rows: a PCA subspace is steadier than a full covariance"
    skew = np.abs(np.nan_to_num(stats.skew(X, axis=0)))
    kurt = np.nan_to_num(stats.kurtosis(X, axis=0))
    if (skew > NON_NORMAL_SKEW).any() or (kurt > NON_NORMAL_KURTOSIS).any():
        return "isolation_forest", "some features are skewed or heavy-tailed: a distribution-free forest"
    return "robust_mahalanobis", "roughly normal, correlated features: robust Mahalanobis distance"


def _is_online(detector: Any) -> bool:
    return hasattr(detector, "learn_one") and hasattr(detector, "update")


def replay(
    detector: Any, X: np.ndarray, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (and explanations, when offered) of ordered rows, the way the live agents produce them.

    Each group (asset) is its own series, as the agents keep chart and model state per asset:
    charts with memory restart per group, and online detectors learn on a per-group copy of
    the trained model (score, then learn unless flagged). Without ``groups`` the rows are one
    series. Returns ``(raw_scores, contributions_or_None)``.
    """
    X = np.asarray(X, dtype=np.float64)
    keys = np.zeros(X.shape[0], dtype=np.int64) if groups is None else np.asarray(groups)
    if keys.shape != (X.shape[0],):
        raise DataError(f"groups has shape {keys.shape}; expected one per row ({X.shape[0]})")
    explains = isinstance(detector, Explainer)
    raw = np.empty(X.shape[0])
    contrib = np.empty(X.shape) if explains else None
    _, first = np.unique(keys, return_index=True)
    for g in keys[np.sort(first)]:  # one series per group, in order of first appearance
        rows = np.flatnonzero(keys == g)
        if _is_online(detector):
            det = copy.deepcopy(detector)
            raw[rows] = det.update(X[rows])
        else:
            raw[rows] = detector.score(X[rows])
            if explains:
                contrib[rows] = detector.explain(X[rows])
    return raw, contrib


def run_tabular_backtest(
    train: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
    feature_names: list[str],
    *,
    detector: str = "auto",
    target_far: float = 1e-3,
    seed: int = 0,
    label_values: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit a model bundle on ``train``, replay ``test`` in order, return JSON-ready metrics.

    ``groups`` (one key per test row, e.g. the asset id) replays each group as its own series;
    see :func:`replay`.
    """
    from linewatch.detectors.bundle import ModelBundle

    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise DataError(
            f"train {train.shape} and test {test.shape} must be (rows, features) with the same features"
        )
    if y.shape != (test.shape[0],):
        raise DataError(f"labels has shape {y.shape}; expected one per test row ({test.shape[0]})")
    reason = None
    if detector == "auto":
        detector, reason = choose_detector(train)
    try:
        get_detector(detector)
    except KeyError as e:  # the CLI answers ConfigError with a clean message and exit code 2
        raise ConfigError(e.args[0]) from e
    bundle = ModelBundle.fit(
        detector, train, feature_names=feature_names, calibration="auto", target_far=target_far, seed=seed
    )
    raw, contrib = replay(bundle.detector, test, groups)
    alarms = bundle.calibrator.is_alarm(raw)
    result: dict[str, Any] = classification_metrics(y, alarms, raw)
    delays = detection_delays(y, alarms)
    detected = [d for d in delays if d is not None]
    result.update(
        {
            "detector": detector,
            "n_train": int(train.shape[0]),
            "n_test": int(test.shape[0]),
            "target_far": target_far,
            "threshold": float(bundle.calibrator.threshold_),
            "calibration": bundle.calibrator.kind,
            "feature_names": list(feature_names),
            "episodes": len(delays),
            "episodes_detected": len(detected),
            "median_detection_delay_rows": float(np.median(detected)) if detected else None,
        }
    )
    if reason is not None:
        result["auto_reason"] = reason
    if label_values is not None:
        kinds = np.asarray(label_values, dtype=object)
        result["recall_by_label"] = {
            str(k): float(alarms[(kinds == k) & y].mean()) for k in sorted(set(kinds[y].tolist()))
        }
    if contrib is not None and alarms.any():
        # Explained over the whole ordered series: charts with memory explain a row in its context.
        top = np.argmax(contrib[alarms], axis=1)
        counts = Counter(feature_names[i] for i in top)
        result["blamed_features"] = dict(counts.most_common())
    return result
