"""CSV backtest for tabular (SPC) detectors: fit on known-good history, replay a labelled test file.

What it does
------------
1. **Load** both CSVs with the same column handling (:func:`linewatch.loaders.load_csv`):
   features are ``--columns`` in the order given, or else every numeric-looking column (other
   than the label and time columns) of the training file, in file order; text columns such as
   an asset or part id are skipped and listed in the result, and a bad cell in a feature column
   is an error unless ``--on-bad-rows skip`` drops (and counts) its row. The label column
   is read for metrics and *never* used as a feature or to select training rows. With a time
   column, rows are sorted by it (stable), so charts with memory (EWMA, CUSUM, MEWMA, online
   models) see the process in order.
2. **Fit** the detector and its calibrator on the training rows through
   :meth:`linewatch.detectors.bundle.ModelBundle.fit`, i.e. exactly the model object a
   worker would load (the calibrator learns from scores of known-good rows the detector did
   not fit on, the threshold is set for ``target_far``; the bundle's ``calibration_report``,
   when it writes one, is passed on).
3. **Score** the test rows the way the live agent does: online detectors (those with
   ``learn_one``) prequentially through ``update`` (score, then learn unless flagged), all
   others through ``score`` on the ordered test series. An alarm is a raw score above the
   calibrated threshold.
   With a group column (``--group-column asset_id``) each group is replayed as its own
   series, as the agents keep state per asset (see :func:`replay`).
4. **Report** :func:`~linewatch.backtest.metrics.classification_metrics`, one entry per
   labelled event from :func:`~linewatch.backtest.metrics.event_report` (detected, delay in
   rows and time, first alarm, the feature blamed at it) and the false-alarm episodes, recall
   per label value (when the label column names fault types), and which features the
   detector blamed for its alarms.

Labels: ``1/0``, ``true/false``, ``yes/no``; or a category column in which ``none``,
``normal``, ``ok``, ``good``, ``0`` and the empty string mean normal and any other value
names a kind of anomaly (``linewatch simulate spc --csv`` writes such a ``fault`` column);
:mod:`linewatch.loaders` parses them.

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
from collections import Counter
from typing import Any

import numpy as np
from scipy import stats

from linewatch.backtest.metrics import classification_metrics, event_report
from linewatch.detectors.base import Explainer
from linewatch.detectors.table import get_detector
from linewatch.errors import ConfigError, DataError

#: ``auto``: below this many training rows per feature a full covariance is not trustworthy.
MIN_ROWS_PER_FEATURE_FOR_COVARIANCE = 10
#: ``auto``: more features than this and a PCA subspace model is the safer multivariate choice.
MAX_FEATURES_FOR_COVARIANCE = 30
#: ``auto``: marginal skewness / excess kurtosis beyond these means "not roughly normal".
NON_NORMAL_SKEW, NON_NORMAL_KURTOSIS = 1.0, 3.0


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
    train_groups: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    episodes: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Fit a model bundle on ``train``, replay ``test`` in order, return JSON-ready metrics.

    ``groups`` (one key per test row, e.g. the asset id) replays each group as its own series, and
    ``train_groups`` (one per training row) calibrates each asset's rows as its own stream;
    see :func:`replay`. ``timestamps`` (one per test row) put times and time delays in the
    ``events``; ``episodes`` (``[start, end)`` row ranges, e.g. one per label window) are the
    events, instead of the runs of anomalous rows.
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
        detector, train, feature_names=feature_names, calibration="auto", target_far=target_far, seed=seed,
        groups=train_groups,
    )
    raw, contrib = replay(bundle.detector, test, groups)
    alarms = bundle.calibrator.is_alarm(raw)
    result: dict[str, Any] = classification_metrics(y, alarms, raw)

    def blame(row: int) -> str | None:
        return None if contrib is None else feature_names[int(np.argmax(contrib[row]))]

    events = event_report(y, alarms, timestamps=timestamps, episodes=episodes, blame=blame)
    result.update(events)
    result.update(
        {
            "detector": detector,
            "n_train": int(train.shape[0]),
            "n_test": int(test.shape[0]),
            "target_far": target_far,
            "threshold": float(bundle.calibrator.threshold_),
            "calibration": bundle.calibrator.kind,
            "feature_names": list(feature_names),
            "episodes": events["n_events"],
            "episodes_detected": events["n_detected"],
            "median_detection_delay_rows": events["median_delay_rows"],
        }
    )
    if "calibration_report" in bundle.meta:
        result["calibration_report"] = bundle.meta["calibration_report"]
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
