"""A defect classifier on the features the anomaly models already compute, with an explicit ``unknown``.

:func:`train_classifier` fits scaled, regularised logistic regression
(:mod:`~linewatch.defects.estimator`) on confirmed examples of each defect class *and* of
:data:`GOOD` parts, measures it out of fold (:mod:`~linewatch.defects.evaluation`: per-class
precision, recall, F1, the confusion matrix) and chooses the confidence below which it answers
:data:`UNKNOWN` on those held-out predictions, then refits on every row. Why good parts belong in
the training set: the classifier also sees parts the anomaly layer let pass, and a classifier
that only knows defect classes would call every normal part some defect.

:class:`DefectClassifier` is the trained model: immutable, deterministic, and at run time only
onnxruntime and numpy (``model.onnx`` holds the scaler, the classifier and the calibration;
``classifier.json`` its classes, feature names, threshold and report). Loading never unpickles.

>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(m, 1.0, (30, 4)) for m in (0.0, 4.0, 8.0)])
>>> y = ["good"] * 30 + ["dent"] * 30 + ["scratch"] * 30
>>> clf, report = train_classifier(X, y, ["f1", "f2", "f3", "f4"], seed=0)
>>> clf.classes, report["macro_f1"] > 0.95
(('dent', 'good', 'scratch'), True)
>>> labels, confidence = clf.predict(np.array([[8.0, 8.0, 8.0, 8.0], [2.0, 2.0, 2.0, 2.0]]))
>>> labels[0], bool(confidence[0] > confidence[1])   # halfway between good and dent: less sure
('scratch', True)
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.defects.evaluation import (
    CURVE_SIZES,
    DEFAULT_FOLDS,
    UNKNOWN,
    Progress,
    calibration_error,
    choose_unknown_below,
    classification_figures,
    learning_curve_points,
    operating_points,
    out_of_fold_probabilities,
    predictions,
)
from linewatch.errors import ConfigError, DataError
from linewatch.schemas.messages import GOOD_CLASS

__all__ = ["GOOD", "MIN_EXAMPLES", "UNKNOWN", "DefectClassifier", "learning_curve", "train_classifier"]

#: The class of normal parts; training sets should include it, so that a normal part the classifier
#: sees (one below the anomaly threshold) is called good, not the nearest defect.
GOOD = GOOD_CLASS
#: Confirmed examples a class needs to be "ready to train": below it a class is trained but the
#: report warns, because its figures rest on too few held-out examples. A floor, not a promise:
#: on the evaluation sets (docs/defects.md) 20 per class reached macro F1 0.84 of 0.87 on MVTec
#: bottle, while the PCB set was at 0.59 with 20 and kept rising to 0.77 with 162.
MIN_EXAMPLES = 20
#: Fewest examples a class can be trained with at all: one to learn from and one to hold out.
MIN_TRAINABLE = 2
MODEL_FILE = "model.onnx"
META_FILE = "classifier.json"
#: Layout version of ``classifier.json``; a loader refuses a newer one rather than misreading it.
FORMAT = 1
DEFAULT_TARGET_PRECISION = 0.95


@dataclass(frozen=True, eq=False)
class DefectClassifier:
    """A trained defect classifier: ONNX probabilities, classes in label order, the unknown threshold.

    ``predict`` returns the most probable class, or :data:`UNKNOWN` when its probability is below
    ``unknown_below``. ``meta`` holds the training report (cross-validated figures), the seed, the
    examples per class and when it was trained.
    """

    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    unknown_below: float
    version: str
    meta: dict[str, Any]
    onnx_model: bytes = field(repr=False)
    #: The fitted scikit-learn pipeline, in memory after training only (for parity checks); never saved.
    sklearn_model: Any = field(default=None, repr=False)
    _session: list[Any] = field(default_factory=list, init=False, repr=False)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def _get_session(self) -> Any:
        """The onnxruntime session, opened on first use (one intra-op thread: a worker stays on its core)."""
        if not self._session:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._session.append(ort.InferenceSession(self.onnx_model, opts, providers=["CPUExecutionProvider"]))
        return self._session[0]

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"defect classifier {self.version} reads {self.n_features} features "
                            f"({', '.join(self.feature_names[:3])}...), got an array of shape {X.shape}")
        if not np.isfinite(X).all():
            bad = sorted({self.feature_names[j] for j in np.flatnonzero(~np.isfinite(X).all(axis=0))})
            raise DataError(f"non-finite feature values in {', '.join(bad[:5])}; the classifier cannot read them")
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, len(classes))`` probabilities, columns in :attr:`classes` order (float64)."""
        X = self._check(X)
        if len(X) == 0:
            return np.zeros((0, len(self.classes)))
        (proba,) = self._get_session().run(["probabilities"], {"X": X})
        return np.asarray(proba, dtype=np.float64)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (object array; :data:`UNKNOWN` where confidence < ``unknown_below``) and confidences.

        The confidence is the top class probability (float64).
        """
        index, confidence = predictions(self.predict_proba(X), self.unknown_below)
        names = np.array([*self.classes, UNKNOWN], dtype=object)
        return names[index], confidence

    def save(self, directory: Path) -> Path:
        """Write ``model.onnx`` and ``classifier.json`` (with the graph's SHA-256) into ``directory``."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        (root / MODEL_FILE).write_bytes(self.onnx_model)
        doc = {"format": FORMAT, "classes": list(self.classes), "feature_names": list(self.feature_names),
               "unknown_below": self.unknown_below, "version": self.version,
               "onnx_sha256": hashlib.sha256(self.onnx_model).hexdigest(), "meta": self.meta}
        (root / META_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return root

    @classmethod
    def load(cls, directory: Path) -> DefectClassifier:
        """Read a directory :meth:`save` wrote; refuses a graph whose bytes are not the ones saved."""
        root = Path(directory)
        if not (root / META_FILE).exists():
            raise FileNotFoundError(f"no {META_FILE} in {root}; train one with `linewatch train defects`")
        doc = json.loads((root / META_FILE).read_text())
        if doc.get("format", 0) > FORMAT:
            raise ConfigError(f"{root} was written by a newer linewatch (format {doc['format']}); upgrade to load it")
        model = (root / MODEL_FILE).read_bytes()
        if hashlib.sha256(model).hexdigest() != doc["onnx_sha256"]:
            raise DataError(f"{root / MODEL_FILE} is not the graph that was saved with {META_FILE}; retrain or "
                            "restore the directory")
        return cls(classes=tuple(doc["classes"]), feature_names=tuple(doc["feature_names"]),
                   unknown_below=float(doc["unknown_below"]), version=doc["version"], meta=doc["meta"],
                   onnx_model=model)


def _encode(X: np.ndarray, y: Sequence[str], feature_names: Sequence[str]
            ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """Checked float rows, integer labels, the classes in label (sorted) order, and "not ready" warnings."""
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray([str(v) for v in y], dtype=object)
    if X.ndim != 2 or len(X) != len(labels):
        raise DataError(f"{len(labels)} labels for a feature array of shape {X.shape}; give one label per row")
    if X.shape[1] != len(feature_names):
        raise ConfigError(f"{len(feature_names)} feature names for {X.shape[1]} feature columns")
    if not np.isfinite(X).all():
        rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise DataError(f"{rows.size} row(s) hold non-finite features (first: row {rows[0]}); drop or fix them")
    classes, y_idx, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"only one class ({', '.join(classes) or 'none'}) in the training set; a classifier needs "
                        f"at least two, e.g. the defect class and {GOOD!r}")
    few = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True) if n < MIN_TRAINABLE]
    if few:
        raise DataError(f"classes with fewer than {MIN_TRAINABLE} examples cannot be trained or evaluated: "
                        f"{', '.join(few)}; confirm more examples or leave them out")
    warn = [f"{c} has {n} examples, fewer than the {MIN_EXAMPLES} a class needs to be ready to train: "
            "its figures rest on too few held-out examples"
            for c, n in zip(classes, counts, strict=True) if n < MIN_EXAMPLES]
    if GOOD not in classes:
        warn.append(f"no {GOOD!r} class: every part the classifier sees will be called some defect class or unknown")
    return X, y_idx.astype(np.int64), tuple(str(c) for c in classes), warn


def train_classifier(X: np.ndarray, y: Sequence[str], feature_names: Sequence[str], *, seed: int = 0,
                     folds: int = DEFAULT_FOLDS, target_precision: float = DEFAULT_TARGET_PRECISION,
                     calibration: str = "none", progress: Progress | None = None,
                     meta: dict[str, Any] | None = None) -> tuple[DefectClassifier, dict[str, Any]]:
    """The classifier fitted on all rows, and its out-of-fold report.

    ``calibration`` is ``"none"`` (the regularised regression's own probabilities, measured best)
    or ``"sigmoid"`` (:mod:`~linewatch.defects.estimator` says why). ``meta`` is merged into the
    classifier's ``meta`` (where its features came from, the learning curve), so the saved version
    carries its provenance.

    Report keys: ``per_class`` ({class: precision, recall, f1, n}), ``macro_f1``, ``accuracy``,
    ``unknown_rate`` and ``confusion`` (as deployed: unknown below ``unknown_below``), ``forced``
    (the same figures when every part gets its most probable class), ``unknown_below``,
    ``target_precision``, ``target_reached``, ``accepted_precision``, ``calibration`` and
    ``calibration_error`` (out-of-fold ECE of the confidence), ``operating_points`` (threshold,
    coverage and precision at other target precisions), ``folds``, ``n``, ``seed``,
    ``model``, ``not_ready`` and ``warnings``. Classes with fewer than 2 examples are an error
    naming them; fewer than :data:`MIN_EXAMPLES` train with a "not ready" warning.
    """
    from linewatch.defects.estimator import check_calibration, describe, export_onnx, fit_estimator

    check_calibration(calibration)
    if not 0.0 < target_precision <= 1.0:
        raise ConfigError(f"target_precision={target_precision!r}; give a share in (0, 1], e.g. 0.95")
    if folds < 2:
        raise ConfigError(f"folds={folds!r}; cross-validation needs at least 2")
    X, y_idx, classes, warn = _encode(X, y, feature_names)
    counts = np.bincount(y_idx, minlength=len(classes))
    with warnings.catch_warnings():
        # A tiny class makes scikit-learn warn about fold sizes; the report says it in plain words instead.
        warnings.simplefilter("ignore", UserWarning)
        proba, k = out_of_fold_probabilities(X, y_idx, len(classes), folds=folds, seed=seed,
                                             calibration=calibration, progress=progress)
        model = fit_estimator(X, y_idx, seed=seed, calibration=calibration)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_idx
    unknown_below, reached = choose_unknown_below(confidence, correct, target_precision)
    predicted, _ = predictions(proba, unknown_below)
    deployed = classification_figures(y_idx, predicted, classes)
    accepted = predicted >= 0
    if not reached:
        warn.append(f"no confidence reaches precision {target_precision:g} out of fold: every prediction is "
                    "unknown; confirm more examples or lower --target-precision")
    report: dict[str, Any] = {
        **deployed,
        "forced": classification_figures(y_idx, proba.argmax(axis=1), classes),
        "unknown_below": unknown_below,
        "target_precision": target_precision,
        "target_reached": reached,
        "accepted_precision": round(float(correct[accepted].mean()), 4) if accepted.any() else None,
        "classes": list(classes),
        "n": len(y_idx),
        "folds": k,
        "seed": seed,
        "model": describe(int(counts.min()), calibration),
        "calibration": calibration,
        "calibration_error": calibration_error(confidence, correct),
        "operating_points": operating_points(confidence, correct),
        "not_ready": [c for c, n in zip(classes, counts, strict=True) if n < MIN_EXAMPLES],
        "warnings": warn,
    }
    now = datetime.now(UTC)
    digest = hashlib.sha256(np.ascontiguousarray(X).tobytes() + "\0".join(map(str, y)).encode()).hexdigest()[:16]
    meta = {"report": report, "seed": seed, "n_per_class": {c: int(n) for c, n in zip(classes, counts, strict=True)},
            "n_samples": len(y_idx), "created_at": now.isoformat(), "data_hash": digest, **(meta or {})}
    clf = DefectClassifier(classes=classes, feature_names=tuple(str(f) for f in feature_names),
                           unknown_below=unknown_below, version=now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + digest[:8],
                           meta=meta, onnx_model=export_onnx(model, X.shape[1]), sklearn_model=model)
    return clf, report


def learning_curve(X: np.ndarray, y: Sequence[str], feature_names: Sequence[str], *,
                   sizes: Sequence[int | None] = CURVE_SIZES, seed: int = 0, folds: int = DEFAULT_FOLDS,
                   calibration: str = "none", progress: Progress | None = None) -> list[dict[str, Any]]:
    """Cross-validated macro and per-class F1 with 5, 10, 20, 50 and all examples per class (seeded, averaged).

    Each point: ``size`` (``None`` = all), ``n_per_class``, ``repeats``, ``macro_f1``,
    ``macro_f1_std`` and ``per_class_f1``; see :func:`~linewatch.defects.evaluation.learning_curve_points`.
    """
    X, y_idx, classes, _ = _encode(X, y, feature_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return learning_curve_points(X, y_idx, classes, sizes=sizes, folds=folds, seed=seed,
                                     calibration=calibration, progress=progress)
