"""The defect classifier on synthetic classes: real figures, the unknown outcome, determinism, ONNX parity, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from linewatch.defects.classifier import GOOD, MIN_EXAMPLES, UNKNOWN, DefectClassifier, learning_curve, train_classifier
from linewatch.defects.evaluation import choose_unknown_below, classification_figures
from linewatch.errors import DataError


def blobs(separation: float, n: int = 40, d: int = 6, seed: int = 0, classes=(GOOD, "dent", "scratch")):
    """Gaussian classes whose means sit ``separation`` apart along their own axis."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0.0, 1.0, (n, d)) + separation * np.eye(d)[i] for i in range(len(classes))])
    y = [c for c in classes for _ in range(n)]
    return X, y, [f"f{i}" for i in range(d)]


@pytest.fixture(scope="module")
def separable():
    X, y, names = blobs(8.0)
    return X, y, names, *train_classifier(X, y, names, seed=0)


@pytest.fixture(scope="module")
def overlapping():
    X, y, names = blobs(1.2, n=60)
    # Sigmoid calibration here (60 examples per class allow it), the default elsewhere: both graphs are tested.
    return X, y, names, *train_classifier(X, y, names, seed=0, target_precision=0.9, calibration="sigmoid")


def test_separable_classes_are_classified_and_the_report_holds_real_figures(separable):
    X, y, _, clf, report = separable
    assert clf.classes == ("dent", GOOD, "scratch")
    assert report["macro_f1"] > 0.97 and report["forced"]["macro_f1"] > 0.97
    assert set(report["per_class"]) == set(clf.classes)
    assert all(row["n"] == 40 for row in report["per_class"].values())
    assert sum(report["confusion"]["dent"].values()) == 40 and "unknown" in report["confusion"]["dent"]
    assert report["not_ready"] == [] and report["target_reached"] and report["folds"] == 5
    labels, confidence = clf.predict(X)
    assert (labels == np.array(y, dtype=object)).mean() > 0.97
    assert confidence.dtype == np.float64 and ((confidence > 0) & (confidence <= 1)).all()


def test_overlapping_classes_give_lower_figures_and_unknowns_that_buy_precision(overlapping):
    X, _, _, clf, report = overlapping
    forced = report["forced"]
    assert 0.4 < forced["macro_f1"] < 0.9  # overlapping, but far better than chance (1/3)
    # Out of fold, the accepted predictions reach the target precision; the rest are unknown.
    assert report["target_reached"] and report["accepted_precision"] >= 0.9
    assert 0.05 < report["unknown_rate"] < 0.95
    assert report["accepted_precision"] > forced["accuracy"]
    ops = {op["target_precision"]: op for op in report["operating_points"]}
    assert ops[0.9]["unknown_below"] == pytest.approx(clf.unknown_below, abs=1e-4)
    assert ops[0.8]["coverage"] >= ops[0.9]["coverage"] >= ops[0.99]["coverage"]
    assert ops[0.9]["coverage"] == pytest.approx(1 - report["unknown_rate"], abs=1e-3)
    labels, confidence = clf.predict(X)
    unknown = labels == UNKNOWN
    assert unknown.any() and (confidence[unknown] < clf.unknown_below).all()
    assert (confidence[~unknown] >= clf.unknown_below).all()
    # Halfway between two class means the classifier cannot tell: unknown.
    between = np.zeros((1, X.shape[1]))
    between[0, :2] = 0.6
    assert clf.predict(between)[0][0] == UNKNOWN


def test_the_unknown_threshold_is_the_lowest_confidence_that_reaches_the_target():
    conf = np.array([0.95, 0.9, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, True, False, True])
    # Accepting >= 0.8: 4/4 right; >= 0.7: 4/5; >= 0.6: 5/6.
    assert choose_unknown_below(conf, correct, 1.0) == (0.8, True)
    assert choose_unknown_below(conf, correct, 0.8) == (0.6, True)
    # Ties accept together: at 0.9 both predictions count.
    assert choose_unknown_below(np.array([0.9, 0.9]), np.array([True, False]), 0.6) == (1.0000000000000002, False)
    figures = classification_figures(np.array([0, 1, 1]), np.array([0, 0, -1]), ["a", "b"])
    assert figures["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n": 2}
    assert figures["per_class"]["a"]["precision"] == 0.5 and figures["accuracy"] == pytest.approx(1 / 3, abs=1e-4)


def test_training_is_deterministic(separable):
    X, y, names, clf, report = separable
    again, report2 = train_classifier(X, y, names, seed=0)
    assert again.unknown_below == clf.unknown_below and report2["per_class"] == report["per_class"]
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.onnx_model == clf.onnx_model


def test_onnx_probabilities_equal_scikit_learns(separable, overlapping):
    assert "its own probabilities" in separable[4]["model"] and "sigmoid calibration" in overlapping[4]["model"]
    for X, _, _, clf, _ in (separable, overlapping):
        sk = clf.sklearn_model.predict_proba(X.astype(np.float32))
        np.testing.assert_allclose(clf.predict_proba(X), sk, atol=1e-5)
        assert clf.predict_proba(X).sum(axis=1) == pytest.approx(1.0, abs=1e-5)


def test_save_and_load_round_trip_and_a_changed_graph_is_refused(overlapping, tmp_path):
    X, _, _, clf, _ = overlapping
    clf.save(tmp_path / "clf")
    loaded = DefectClassifier.load(tmp_path / "clf")
    assert (loaded.classes, loaded.feature_names, loaded.unknown_below, loaded.version) == (
        clf.classes, clf.feature_names, clf.unknown_below, clf.version)
    np.testing.assert_array_equal(loaded.predict(X)[0], clf.predict(X)[0])
    np.testing.assert_array_equal(loaded.predict(X)[1], clf.predict(X)[1])
    doc = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert doc["meta"]["report"]["macro_f1"] == clf.meta["report"]["macro_f1"]
    assert doc["meta"]["n_per_class"] == {"dent": 60, GOOD: 60, "scratch": 60}
    (tmp_path / "clf" / "model.onnx").write_bytes(clf.onnx_model[:-1] + b"\x00")
    with pytest.raises(DataError, match="not the graph"):
        DefectClassifier.load(tmp_path / "clf")
    with pytest.raises(DataError, match="reads 6 features"):
        clf.predict(X[:, :3])


def test_tiny_classes_are_refused_by_name_and_small_ones_warned():
    X, y, names = blobs(6.0, n=25)
    with pytest.raises(DataError, match=r"fewer than 2 examples.*crack \(1\)"):
        train_classifier(np.vstack([X, X[:1]]), [*y, "crack"], names)
    keep = list(range(25 * 2)) + list(range(50, 50 + 8))  # scratch keeps 8 examples
    _, report = train_classifier(X[keep], [y[i] for i in keep], names, calibration="sigmoid")
    assert report["not_ready"] == ["scratch"] and any(f"fewer than the {MIN_EXAMPLES}" in w for w in report["warnings"])
    assert "not calibrated" in report["model"]  # 8 examples are too few to calibrate on
    assert report["folds"] == 5 and report["per_class"]["scratch"]["n"] == 8
    with pytest.raises(DataError, match="only one class"):
        train_classifier(X[:25], y[:25], names)


def test_learning_curve_subsamples_per_class_and_rises_with_examples():
    X, y, names = blobs(1.6, n=60)
    points = learning_curve(X, y, names, sizes=(5, 20, None), seed=0, folds=3)
    assert [p["size"] for p in points] == [5, 20, None]
    assert points[0]["n_per_class"] == {"dent": 5, GOOD: 5, "scratch": 5} and points[0]["repeats"] == 3
    assert points[-1]["n_per_class"] == {"dent": 60, GOOD: 60, "scratch": 60} and points[-1]["repeats"] == 1
    assert points[-1]["macro_f1"] > points[0]["macro_f1"]
    assert set(points[1]["per_class_f1"]) == {"dent", GOOD, "scratch"}
    assert learning_curve(X, y, names, sizes=(5,), seed=0, folds=3) == points[:1]  # seeded: the same subsamples
