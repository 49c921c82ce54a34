"""Backtest a windowed detector on an ordered multivariate series: how a user evaluates the signals path.

Why: before a detector watches a machine live, its engineer wants to know, on *their*
history, how many faults it would have caught, how late, and how often it would have cried
wolf. ``linewatch backtest csv --modality signals`` loads a CSV and calls
:func:`run_signals_backtest`; benchmarks call it directly.

What it does
------------
1. **Windows**: the test rows (time order) are cut into windows of ``window`` rows every
   ``stride`` rows; the train rows at every row (stride 1, up to :data:`MAX_TRAIN_WINDOWS`
   windows), because a threshold for a small false-alarm rate needs many normal scores.
   Each window becomes a feature vector: per sensor its ``mean``, ``std``, ``min``, ``max``
   and least-squares ``slope`` per row (just ``mean`` when ``window == 1``), named
   ``<sensor>.<stat>``. Summary statistics rather than raw samples, so any registered detector
   (autoencoder, dynamic PCA, online models, the tabular ones) can run on them and its
   explanation names a sensor.
2. **Fit and calibrate on normal data only**, exactly as ``linewatch train`` does
   (:meth:`~linewatch.detectors.bundle.ModelBundle.fit`): blocked cross-fitting of the train
   windows in time order, overlapping windows purged next to each held-out block, the pooled
   out-of-fold scores setting the threshold for ``target_far``, then a refit on all train
   windows; the calibration report comes with the result. Detectors that depend on window
   order (dynamic PCA's lags, online state) must see windows ``stride`` rows apart as in the
   test: they fit and are calibrated on every ``stride``-th train window. Online detectors
   (those with ``learn_one``) score the calibration and test windows prequentially - score,
   then learn unless flagged - exactly as live.
3. **Score the test windows** and map window alarms back to rows *causally*: a row carries
   the verdict of the latest window that ended at or before it (the moment the alarm would
   have been raised live). Rows before the first test window ends are warm-up and are not
   evaluated, nor are rows whose window is still warming up (e.g. dynamic PCA's first lags).
4. **Metrics** on the evaluated rows: ``precision``, ``recall``, ``f1``, ``far`` (false alarm
   rate on normal rows), ``mar`` (missed alarm rate), ``auroc``, ``tp``, ``fp``, ``tn``, ``fn``,
   ``detector``, ``n_train``, ``n_test`` - the tabular backtest's keys - plus per labelled
   event (a maximal run of positive labels): detected or not, the **detection delay** from the
   event's first row to its first alarmed row (seconds when ``timestamps`` are datetimes,
   timestamp units when numeric, rows without timestamps) and the sensor the detector blamed
   at that alarm; and false-alarm episodes (alarms starting outside any event), per hour when
   timestamps are datetimes.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> train = rng.normal(size=(3000, 2))
>>> test = rng.normal(size=(1000, 2))
>>> test[600:700, 1] += 4.0
>>> labels = np.zeros(1000, dtype=bool)
>>> labels[600:700] = True
>>> r = run_signals_backtest(train, test, labels, ["a", "b"], window=10, stride=1,
...                          detector="dynamic_pca", target_far=0.01, timestamps=None)
>>> r["events"][0]["detected"], r["events"][0]["delay"] <= 5, r["events"][0]["blamed_feature"]
(True, True, 'b')
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from linewatch.backtest.metrics import classification_metrics, event_report
from linewatch.detectors.base import Explainer
from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.table import get_detector
from linewatch.errors import ConfigError, DataError

#: What ``detector="auto"`` means here: dynamic PCA needs no tuning, explains per sensor, and
#: its lags see the relations between consecutive windows.
AUTO_DETECTOR = "dynamic_pca"
#: Lags ``"auto"`` tries, most first; 0 is static PCA on the window features.
AUTO_LAGS: tuple[int, ...] = (2, 1, 0)
#: ``"auto"`` shortens a window longer than this fraction of the train rows: the calibration part
#: (the last 30 %) then still holds a dozen disjoint windows and many overlapping ones.
AUTO_WINDOWS_PER_TRAIN = 40

#: Train windows are cut at every row (more normal examples, a finer threshold) unless that
#: makes more than this many; then at the smallest stride that stays below it.
MAX_TRAIN_WINDOWS = 50_000
WINDOW_STATS: tuple[str, ...] = ("mean", "std", "min", "max", "slope")


def window_features(series: np.ndarray, sensors: list[str], *, window: int, stride: int) -> tuple[
    np.ndarray, np.ndarray, list[str]
]:
    """``(starts, features, names)`` for windows of ``window`` rows every ``stride`` rows.

    >>> s, F, names = window_features(np.arange(10.0).reshape(5, 2), ["a", "b"], window=3, stride=2)
    >>> s.tolist(), names[:5], F[0, :5].tolist()
    ([0, 2], ['a.mean', 'a.std', 'a.min', 'a.max', 'a.slope'], [2.0, 1.632993161855452, 0.0, 4.0, 2.0])
    """
    n, d = series.shape
    if window > n:
        raise DataError(f"window={window} rows is longer than the series ({n} rows)")
    starts = np.arange(0, n - window + 1, stride)
    win = sliding_window_view(series, window, axis=0)[starts]  # (w, d, window)
    mean = win.mean(axis=2)
    if window == 1:
        return starts, mean, [f"{s}.mean" for s in sensors]
    idx = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    slope = (win - mean[:, :, None]) @ idx / float(idx @ idx)
    stats = np.stack([mean, win.std(axis=2), win.min(axis=2), win.max(axis=2), slope], axis=2)  # (w, d, 5)
    names = [f"{s}.{k}" for s in sensors for k in WINDOW_STATS]
    return starts, stats.reshape(len(starts), d * len(WINDOW_STATS)), names


def _make_detector(name: str, feature_names: list[str], sensors: list[str], lags: int | None = None) -> Any:
    cls = get_detector(name)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {} if lags is None else {"lags": lags}
    if "seed" in params:
        kwargs["seed"] = 0
    if "groups" in params:  # let the autoencoder explain per sensor, not per window statistic
        kwargs["groups"] = tuple(f.rsplit(".", 1)[0] for f in feature_names)
    return cls(**kwargs)


def _explain_one(det: Any, F: np.ndarray, j: int) -> np.ndarray:
    """Contributions of window ``j``; detectors that need history (dynamic PCA) get the windows before it."""
    if "history" in inspect.signature(det.explain).parameters:
        lags = int(getattr(det, "lags", 0))
        return det.explain(F[j : j + 1], history=F[max(0, j - lags) : j] if lags else None)[0]
    return det.explain(F[j : j + 1])[0]


def auto_plans(window: int, stride: int, n_rows: int) -> list[tuple[int, int, int]]:
    """``(window, stride, lags)`` that ``detector="auto"`` tries in order on ``n_rows`` train rows.

    The given window and stride first; then, when that window is longer than 1/:data:`AUTO_WINDOWS_PER_TRAIN`
    of the train rows, that fraction (stride a fifth of it), then it at stride 1 (every train window in
    the fit sequence, no interleaving), the given window at stride 1, and halved windows down to one
    row. At each, lags 2, 1, 0: the dynamic PCA fit needs ``(lags + 1) x features + 2`` consecutive
    windows, and a window's statistics (``window > 1``) are five features per sensor.

    >>> auto_plans(50, 10, 400)[:4]
    [(50, 10, 2), (50, 10, 1), (50, 10, 0), (10, 2, 2)]
    >>> sorted({(w, s) for w, s, _ in auto_plans(50, 10, 400)})
    [(1, 1), (2, 1), (5, 1), (10, 1), (10, 2), (50, 1), (50, 10)]
    """
    short = min(window, max(1, n_rows // AUTO_WINDOWS_PER_TRAIN))
    shapes = [(window, stride), (short, max(1, min(stride, short // 5))), (short, 1), (window, 1)]
    w = short // 2
    while w >= 1:
        shapes.append((w, 1))
        w //= 2
    unique = list(dict.fromkeys(shapes))
    return [(w, s, lags) for w, s in unique for lags in AUTO_LAGS]


def run_signals_backtest(
    train: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
    feature_names: list[str],
    *,
    window: int,
    stride: int,
    detector: str,
    target_far: float,
    timestamps: np.ndarray | None,
) -> dict:
    """Fit on ``train`` windows, calibrate on held-out normal ones, evaluate on ``test``; see the module doc.

    ``train`` and ``test`` are ``(rows, sensors)`` in time order, ``labels`` one bool per test row
    (True = fault), ``feature_names`` the sensor (column) names; ``detector`` a registered name
    or ``"auto"``: dynamic PCA (:data:`AUTO_DETECTOR`) at the first of :func:`auto_plans` the data
    can fit and calibrate (a short series gets stride 1, fewer lags or a shorter window), with
    ``auto_reason`` in the result saying what was chosen and why. Returns a JSON-serialisable dict.
    """
    if detector != "auto":
        return _backtest(train, test, labels, feature_names, window=window, stride=stride, detector=detector,
                         lags=None, target_far=target_far, timestamps=timestamps)
    refused: list[str] = []
    for w, s, lags in auto_plans(window, stride, len(train)):
        try:
            out = _backtest(train, test, labels, feature_names, window=w, stride=s, detector=AUTO_DETECTOR,
                            lags=lags, target_far=target_far, timestamps=timestamps)
        except (DataError, ConfigError) as e:
            if not refused and _input_error(e):
                raise
            refused.append(f"window={w}, stride={s}, lags={lags}: {e}")
            continue
        chosen = f"{AUTO_DETECTOR} with lags={lags}, window={w}, stride={s}"
        out["lags"] = lags
        out["auto_reason"] = (
            f"{chosen} (the requested window={window}, stride={stride} with lags={AUTO_LAGS[0]} fits these "
            "train rows)" if not refused else
            f"{chosen}: the {len(train)} train rows cannot fit or calibrate the larger settings "
            f"({refused[0]}); set --window, --stride or --detector to choose yourself"
        )
        out["auto_refused"] = refused
        return out
    raise DataError(
        f"no window, stride and lags of {AUTO_DETECTOR} fit {len(train)} train rows; the last attempt said: "
        f"{refused[-1]}; give more known-good rows or choose another --detector"
    )


def _input_error(e: Exception) -> bool:
    """Errors that no other window, stride or lags can fix: the arrays themselves are wrong."""
    text = str(e)
    return any(k in text for k in ("NaN/inf", "must be (rows, sensors)", "feature names for", "labels has shape",
                                   "timestamps has shape", "must be >= 1 row"))


def _backtest(
    train: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
    feature_names: list[str],
    *,
    window: int,
    stride: int,
    detector: str,
    lags: int | None,
    target_far: float,
    timestamps: np.ndarray | None,
) -> dict:
    """One backtest at a fixed window, stride, detector (and lags, None = the detector's default)."""
    tr = np.asarray(train, dtype=np.float64)
    te = np.asarray(test, dtype=np.float64)
    y_all = np.asarray(labels).astype(bool)
    if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1]:
        raise DataError(f"train {tr.shape} and test {te.shape} must be (rows, sensors) with the same sensors")
    if len(feature_names) != tr.shape[1]:
        raise ConfigError(f"{len(feature_names)} feature names for {tr.shape[1]} columns")
    if y_all.shape != (te.shape[0],):
        raise DataError(f"labels has shape {y_all.shape}; expected one per test row ({te.shape[0]})")
    for what, arr in (("train", tr), ("test", te)):
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise DataError(
                f"{what} rows {np.flatnonzero(bad)[:5].tolist()}... contain NaN/inf; fill or drop them first"
            )
    if window < 1 or stride < 1:
        raise ConfigError(f"window={window} and stride={stride} must be >= 1 row")
    sensors = [str(f) for f in feature_names]
    if timestamps is not None and np.asarray(timestamps).shape != (te.shape[0],):
        raise DataError(f"timestamps has shape {np.asarray(timestamps).shape}; expected one per test row "
                        f"({te.shape[0]})")

    n_possible = max(tr.shape[0] - window + 1, 1)
    train_stride = 1 if n_possible <= MAX_TRAIN_WINDOWS else stride
    phases = stride // train_stride  # interleaved train sequences with the test's window spacing
    _, F_train, names = window_features(tr, sensors, window=window, stride=train_stride)
    if len(F_train) < 2:
        raise DataError(f"only {len(F_train)} train windows; give more train rows or a smaller stride")
    det = _make_detector(detector, names, sensors, lags)
    online = hasattr(det, "learn_one") and hasattr(det, "update")
    ordered = online or hasattr(det, "ready_mask")
    # Order-dependent detectors (lags, online state) must see windows ``stride`` rows apart, as in
    # the test: they fit and are calibrated on one phase of the train windows at that spacing.
    # The bundle calibrates exactly as `linewatch train` does (blocked cross-fitting in time order,
    # overlapping windows purged next to each held-out block), then refits on every train window.
    bundle = ModelBundle.fit(det, F_train[::phases] if ordered else F_train, feature_names=names,
                             modality="signals", target_far=target_far)
    det, calibrator = bundle.detector, bundle.calibrator
    if online and hasattr(det, "set_threshold"):
        det.set_threshold(calibrator.threshold_)

    te_starts, F_test, _ = window_features(te, sensors, window=window, stride=stride)
    scores = det.update(F_test) if online else det.score(F_test)
    ready = det.ready_mask(len(F_test)) if hasattr(det, "ready_mask") else np.ones(len(F_test), dtype=bool)
    alarms = calibrator.is_alarm(scores) & ready

    ends = te_starts + window - 1
    rows = np.arange(te.shape[0])
    last = np.searchsorted(ends, rows, side="right") - 1  # latest window ended at or before each row
    evaluated = (last >= 0) & ready[np.clip(last, 0, None)]
    row_alarm = np.where(last >= 0, alarms[np.clip(last, 0, None)], False) & evaluated
    row_score = np.where(last >= 0, scores[np.clip(last, 0, None)], -np.inf)

    y, pred, sc = y_all[evaluated], row_alarm[evaluated], row_score[evaluated]
    out = dict(classification_metrics(y, pred, sc))
    out.update({"detector": detector, "n_train": int(tr.shape[0]), "n_test": int(evaluated.sum())})

    explainer = isinstance(det, Explainer) and not online

    def blame(row: int) -> str | None:
        if not explainer:
            return None
        per_sensor = _explain_one(det, F_test, int(last[row])).reshape(len(sensors), -1).sum(axis=1)
        return sensors[int(np.argmax(per_sensor))]  # columns are sensor-major

    out.update(event_report(y_all, row_alarm, timestamps=timestamps, evaluated=evaluated, blame=blame))
    out.update(
        {
            "window": window,
            "stride": stride,
            "target_far": target_far,
            "threshold": float(calibrator.threshold_),
            "calibration": calibrator.kind,
            "calibration_report": bundle.calibration_report,
            "train_stride": train_stride,
            "n_fit_windows": int(bundle.meta["n_fit"]),
            "n_calibration_windows": int(bundle.meta["n_calibration"]),
            "n_test_windows": len(F_test),
        }
    )
    return out
