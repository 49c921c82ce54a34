"""How good a defect classifier is, measured out of fold: per-class figures, the unknown threshold, the learning curve.

Every figure comes from out-of-fold predictions: stratified, seeded k-fold cross-validation
(:func:`stratified_folds`), where each row is predicted by a model that never saw it, fitted
exactly as the final model is (:func:`~linewatch.defects.estimator.build_estimator`, calibration
included). In-sample figures of a 304-feature model on a few dozen examples would be near
perfect and mean nothing.

The unknown threshold (:func:`choose_unknown_below`) is chosen on those held-out predictions:
**the lowest confidence** ``t`` **such that the predictions with confidence >= t reach the
target precision** (share of accepted predictions that are right). Below ``t`` the classifier
answers ``unknown`` and the part stays an unclassified anomaly. Lowest, because every accepted
prediction is one an operator does not have to classify by hand. When even the most confident
predictions miss the target, nothing is accepted (``t`` just above 1) and the report says so.
The figures reported "as deployed" apply that same threshold to the same out-of-fold
predictions, so they lean optimistic by the choice of one number; the ``forced`` figures (every
part gets its most probable class) do not depend on it.

The learning curve (:func:`learning_curve_points`) answers "how many confirmed examples does a
class need": each class is subsampled (seeded, repeated) to 5, 10, 20, 50 and all examples, and
the cross-validated macro F1 and per-class F1 of the forced predictions are averaged over the repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from linewatch.defects.estimator import fit_estimator, probabilities
from linewatch.schemas.messages import UNKNOWN_CLASS

#: Cross-validation folds unless the caller asks for others (fewer when a class is smaller).
DEFAULT_FOLDS = 5
#: Per-class sizes of the learning curve; ``None`` is every example.
CURVE_SIZES: tuple[int | None, ...] = (5, 10, 20, 50, None)
#: Subsamples averaged at each size below "all" (the subsample, not the folds, is what varies most).
CURVE_REPEATS = 3
#: Target precisions whose threshold and coverage every report lists (beside the one chosen).
OPERATING_PRECISIONS = (0.8, 0.9, 0.95, 0.99)
#: Confidence bins of the expected calibration error.
CALIBRATION_BINS = 10
#: What an accepted-nothing threshold is: just above any probability, so every prediction is unknown.
ACCEPT_NOTHING = float(np.nextafter(1.0, 2.0))
UNKNOWN = UNKNOWN_CLASS

#: ``(stage, done, total)``, as the image pipeline's progress callbacks.
Progress = Callable[[str, int, int], None]


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified folds, as many as the smallest class allows (at least 2)."""
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(folds, int(np.bincount(y).min())))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(y), 1)), y))


def out_of_fold_probabilities(X: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int, seed: int,
                              calibration: str = "none", progress: Progress | None = None) -> tuple[np.ndarray, int]:
    """``(n, n_classes)`` probabilities, each row from the fold model that did not see it; and the fold count."""
    splits = stratified_folds(y, folds, seed)
    proba = np.zeros((len(y), n_classes))
    for i, (train, test) in enumerate(splits):
        model = fit_estimator(X[train], y[train], seed=seed, calibration=calibration)
        proba[test] = probabilities(model, X[test], n_classes)
        if progress is not None:
            progress("cross-validation", i + 1, len(splits))
    return proba, len(splits)


def choose_unknown_below(confidence: np.ndarray, correct: np.ndarray, target_precision: float) -> tuple[float, bool]:
    """The lowest confidence whose accepted predictions (confidence >= it) reach ``target_precision``.

    Returns ``(threshold, reached)``; when no threshold reaches the target, ``(ACCEPT_NOTHING, False)``.
    Ties accept together: a threshold is only ever a confidence that occurred, and every prediction
    at that confidence is accepted with it.

    >>> conf = np.array([0.99, 0.9, 0.8, 0.7, 0.6])
    >>> choose_unknown_below(conf, np.array([True, True, True, False, False]), 0.95)
    (0.8, True)
    >>> choose_unknown_below(conf, np.array([False, True, True, True, True]), 0.95)
    (1.0000000000000002, False)
    """
    order = np.argsort(-confidence, kind="stable")
    conf = confidence[order]
    precision = np.cumsum(correct[order]) / np.arange(1, len(conf) + 1)
    # A threshold is the last position of a run of equal confidences (ties are accepted together).
    ends = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))
    good = ends[precision[ends] >= target_precision]
    if good.size == 0:
        return ACCEPT_NOTHING, False
    return float(conf[good[-1]]), True


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: the mean gap between confidence and accuracy over equal-width confidence bins.

    0 when a confidence of 0.8 is right 80 % of the time; weighted by how many predictions fall in each bin.

    >>> calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([True, True, True, False]))
    0.1
    """
    if len(confidence) == 0:
        return 0.0
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    right = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return round(float(np.abs(conf_sum - right).sum() / len(confidence)), 4)


def operating_points(confidence: np.ndarray, correct: np.ndarray,
                     targets: Sequence[float] = OPERATING_PRECISIONS) -> list[dict[str, Any]]:
    """What each target precision would cost: its threshold, the share of parts it classifies, its precision.

    Out of fold, like the chosen threshold, so an engineer can pick another ``--target-precision``
    without retraining blind.
    """
    points = []
    for target in targets:
        threshold, reached = choose_unknown_below(confidence, correct, target)
        accepted = confidence >= threshold
        points.append({"target_precision": target, "unknown_below": round(threshold, 4), "reached": reached,
                       "coverage": round(float(accepted.mean()), 4) if len(confidence) else 0.0,
                       "precision": round(float(correct[accepted].mean()), 4) if accepted.any() else None})
    return points


def predictions(proba: np.ndarray, unknown_below: float) -> tuple[np.ndarray, np.ndarray]:
    """Label indices (-1 = unknown below the threshold) and confidences (the top probability)."""
    confidence = proba.max(axis=1)
    labels = proba.argmax(axis=1)
    return np.where(confidence < unknown_below, -1, labels), confidence


def classification_figures(y: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and n, macro F1, accuracy, unknown rate and the confusion matrix.

    ``predicted`` holds label indices or -1 for unknown. An unknown counts against recall (the part
    was not classified) but not against any class's precision (it was not called that class);
    accuracy counts it as a miss. ``confusion[true][predicted]`` has an ``unknown`` column.

    >>> f = classification_figures(np.array([0, 0, 1, 1]), np.array([0, -1, 1, 0]), ["a", "b"])
    >>> f["per_class"]["a"], f["unknown_rate"], f["confusion"]["a"]
    ({'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'n': 2}, 0.25, {'a': 1, 'b': 0, 'unknown': 1})
    """
    k = len(classes)
    # Column k is "unknown": -1 maps there.
    matrix = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(matrix, (y, np.where(predicted < 0, k, predicted)), 1)
    tp = np.diag(matrix[:, :k]).astype(np.float64)
    called = matrix[:, :k].sum(axis=0).astype(np.float64)
    n = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, called, out=np.zeros(k), where=called > 0)
    recall = np.divide(tp, n, out=np.zeros(k), where=n > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(k), where=denominator > 0)
    per_class = {c: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                     "f1": round(float(f1[i]), 4), "n": int(n[i])} for i, c in enumerate(classes)}
    columns = [*classes, UNKNOWN]
    return {
        "per_class": per_class,
        "macro_f1": round(float(f1.mean()), 4),
        "accuracy": round(float(tp.sum() / max(len(y), 1)), 4),
        "unknown_rate": round(float((predicted < 0).mean()) if len(y) else 0.0, 4),
        "confusion": {c: {col: int(matrix[i, j]) for j, col in enumerate(columns)} for i, c in enumerate(classes)},
    }


def subsample_per_class(y: np.ndarray, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """Row indices keeping at most ``size`` examples of every class (all when ``size`` is None), sorted."""
    if size is None:
        return np.arange(len(y))
    keep = [rng.permutation(np.flatnonzero(y == c))[:size] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def learning_curve_points(X: np.ndarray, y: np.ndarray, classes: Sequence[str], *,
                          sizes: Sequence[int | None] = CURVE_SIZES, folds: int = DEFAULT_FOLDS, seed: int = 0,
                          repeats: int = CURVE_REPEATS, calibration: str = "none",
                          progress: Progress | None = None) -> list[dict[str, Any]]:
    """Cross-validated forced-prediction F1 with at most ``size`` examples per class, averaged over seeded repeats.

    A size at or above the largest class is the same as "all" and is left out; "all" is measured
    once (the whole set has no subsample to vary). Each point lists how many examples of each class
    it actually had (a class smaller than the size keeps all of its own).
    """
    largest = int(np.bincount(y).max())
    plan = [s for s in sizes if s is not None and s < largest]
    if None in sizes or not plan:
        plan.append(None)
    points = []
    for step, size in enumerate(plan):
        runs = repeats if size is not None else 1
        macro, per_class = [], []
        for r in range(runs):
            rows = subsample_per_class(y, size, np.random.default_rng([seed, step, r]))
            proba, _ = out_of_fold_probabilities(X[rows], y[rows], len(classes), folds=folds, seed=seed + r,
                                                 calibration=calibration)
            figures = classification_figures(y[rows], proba.argmax(axis=1), classes)
            macro.append(figures["macro_f1"])
            per_class.append([figures["per_class"][c]["f1"] for c in classes])
        counts = np.bincount(y[subsample_per_class(y, size, np.random.default_rng([seed, step, 0]))],
                             minlength=len(classes))
        mean_f1 = np.mean(per_class, axis=0)
        points.append({
            "size": size,
            "n_per_class": {c: int(counts[i]) for i, c in enumerate(classes)},
            "repeats": runs,
            "macro_f1": round(float(np.mean(macro)), 4),
            "macro_f1_std": round(float(np.std(macro)), 4),
            "per_class_f1": {c: round(float(mean_f1[i]), 4) for i, c in enumerate(classes)},
        })
        if progress is not None:
            progress("learning curve", step + 1, len(plan))
    return points
