"""The defect classifier's estimator: scaled logistic regression with sigmoid-calibrated probabilities, in ONNX.

Why this estimator
------------------
A confirmed-defect set is small (tens of examples per class) and wide (304 pooled patch features
per frame), so the model must be strongly regularised and must say how sure it is. A
:class:`~sklearn.preprocessing.StandardScaler` followed by an L2 logistic regression with
balanced class weights (defects are rarer than good parts) is the well-kept choice for that: it
is convex (the same data give the same model), fits in milliseconds, and its scores are already
close to probabilities. Histogram gradient boosting was the alternative the issue names, but
skl2onnx 1.20 cannot convert ``HistGradientBoostingClassifier`` from scikit-learn 1.9 (its
``TreeEnsembleClassifier`` node is refused), and it needs more examples than a new class has.

Calibration: measured, then chosen
----------------------------------
The unknown threshold is a confidence, so the confidence should mean what it says. Two ways
were measured out of fold on the four evaluation image sets (docs/defects.md), by the expected
calibration error (ECE: the gap between confidence and accuracy, 10 bins): the L2 logistic
regression's own probabilities at ``C = 0.1`` had the lowest ECE on every set (0.03-0.11), and
:class:`~sklearn.calibration.CalibratedClassifierCV` (``method="sigmoid"``, the one skl2onnx
converts exactly) made them *worse* (ECE 0.21 against 0.07 on the 4-class bottle set): its
one-vs-rest sigmoids, renormalised over the classes, are under-confident whenever there are more
than two classes, and on two classes it was no better. Temperature scaling, the multiclass
calibration that would fit, is not convertible by skl2onnx 1.20. So ``calibration="none"`` (the
strongly regularised regression, well calibrated by itself) is the default, ``"sigmoid"`` is
there for sets where it measures better, used only when every class has at least
:data:`CALIBRATION_MIN_PER_CLASS` examples, and every report carries the out-of-fold ECE
(``calibration_error``), so a plant sees how far to trust the confidence on its own data. The
unknown threshold itself is chosen by rank on held-out predictions, so it keeps its precision
promise either way. Isotonic calibration is not offered: its skl2onnx graph does not reproduce
scikit-learn's probabilities, and it overfits at these sample sizes.

The scaler sits *outside* the calibrated classifier (``scaler -> calibrated(LR)``): that is the
order skl2onnx converts exactly (probabilities within 1e-6 of scikit-learn's, see
``tests/defects``); a calibrated pipeline the other way round converts to wrong numbers.

Everything here is training-time code (scikit-learn, skl2onnx); the run time reads the ONNX
bytes with onnxruntime only (:class:`~linewatch.defects.classifier.DefectClassifier`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from linewatch.errors import ConfigError

#: Inverse L2 strength of the logistic regression on standardised features: 0.1 gave the lowest
#: calibration error and log loss on the evaluation sets (1 and 10 were more over-confident), at a
#: macro F1 within 0.02 of them (docs/defects.md).
C = 0.1
#: ``none``: the regression's own probabilities (measured best); ``sigmoid``: CalibratedClassifierCV.
CALIBRATIONS = ("none", "sigmoid")
#: Folds of the sigmoid calibration (each fold's model is calibrated on the held-out rest and the
#: folds' probabilities are averaged).
CALIBRATION_FOLDS = 3
#: Below this many training examples in some class the probabilities are not calibrated: with
#: fewer than 5 examples of a class per calibration fold the sigmoid fit is noise, and it cost
#: macro F1 at 10 examples per class (0.48 against 0.55 uncalibrated, 4 overlapping synthetic
#: classes); from 20 per class up calibration gained (0.67 against 0.66 at 20, 0.79 against 0.76 at 80).
CALIBRATION_MIN_PER_CLASS = 15
#: lbfgs iterations: standardised features converge in far fewer; the bound only stops a pathological fit.
MAX_ITER = 5000
#: ONNX opsets every onnxruntime the project supports executes (as the other exported detectors).
ONNX_OPSET, ONNX_ML_OPSET = 17, 3
INPUT_NAME = "X"
PROBABILITIES = "probabilities"


def calibrated(min_per_class: int, calibration: str) -> bool:
    """Whether a training set whose smallest class has ``min_per_class`` examples gets sigmoid calibration."""
    return calibration == "sigmoid" and min_per_class >= CALIBRATION_MIN_PER_CLASS


def describe(min_per_class: int, calibration: str) -> str:
    """The estimator and calibration a training set of this size gets, for the report."""
    if calibrated(min_per_class, calibration):
        cal = f"sigmoid calibration ({CALIBRATION_FOLDS}-fold CalibratedClassifierCV)"
    elif calibration == "sigmoid":
        cal = f"not calibrated (a class has fewer than {CALIBRATION_MIN_PER_CLASS} examples)"
    else:
        cal = "its own probabilities (calibration=none)"
    return f"StandardScaler + LogisticRegression(C={C:g}, class_weight=balanced), {cal}"


def check_calibration(calibration: str) -> None:
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"calibration={calibration!r}; use one of {', '.join(CALIBRATIONS)}")


def build_estimator(y: np.ndarray, *, seed: int, calibration: str = "none") -> Any:
    """An unfitted pipeline for integer labels ``y``; sigmoid calibration if asked and every class is big enough."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    logistic = LogisticRegression(C=C, class_weight="balanced", max_iter=MAX_ITER, random_state=seed)
    check_calibration(calibration)
    if calibrated(int(np.bincount(y).min()), calibration):
        folds = StratifiedKFold(n_splits=CALIBRATION_FOLDS, shuffle=True, random_state=seed)
        classifier: Any = CalibratedClassifierCV(logistic, method="sigmoid", cv=folds, ensemble=True)
    else:
        classifier = logistic
    return Pipeline([("scale", StandardScaler()), ("classify", classifier)])


def fit_estimator(X: np.ndarray, y: np.ndarray, *, seed: int, calibration: str = "none") -> Any:
    """Fit :func:`build_estimator` on float32 rows (the precision the ONNX graph computes in)."""
    return build_estimator(y, seed=seed, calibration=calibration).fit(np.asarray(X, dtype=np.float32), y)


def probabilities(estimator: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's probabilities ``(n, n_classes)``, columns in label order even if a label was missing."""
    proba = estimator.predict_proba(np.asarray(X, dtype=np.float32))
    out = np.zeros((len(X), n_classes))
    out[:, np.asarray(estimator.classes_, dtype=np.int64)] = proba
    return out


def export_onnx(estimator: Any, n_features: int) -> bytes:
    """The fitted pipeline as ONNX bytes: float32 ``X`` in, ``probabilities`` ``(n, k)`` out (label order)."""
    import onnx
    from skl2onnx import to_onnx  # training-time dependency only

    proto = to_onnx(estimator, np.zeros((1, n_features), dtype=np.float32), options={"zipmap": False},
                    target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET})
    input_name = proto.graph.input[0].name
    for node in proto.graph.node:
        node.input[:] = [INPUT_NAME if n == input_name else n for n in node.input]
    proto.graph.input[0].name = INPUT_NAME
    keep = [o for o in proto.graph.output if o.name == PROBABILITIES]
    if not keep:
        raise RuntimeError(f"skl2onnx produced no {PROBABILITIES!r} output (outputs: "
                           f"{[o.name for o in proto.graph.output]}); check the skl2onnx version")
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
