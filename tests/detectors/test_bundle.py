from __future__ import annotations

import json

import numpy as np
import pytest

from linewatch.detectors.bundle import ModelBundle
from linewatch.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    cov = [[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]
    return rng.multivariate_normal([0, 0, 0], cov, size=4000)


@pytest.fixture(scope="module")
def fitted(data):
    """One cross-fitted robust Mahalanobis bundle (six MCD fits, ~8 s) for the tests that only read it."""
    return ModelBundle.fit("robust_mahalanobis", data, feature_names=["x", "y", "z"], target_far=0.01, seed=1)


def test_fit_cross_fits_every_row_and_saves_provenance(fitted):
    b = fitted
    # Every row is scored out of fold for calibration, and the live detector is refitted on all.
    assert b.meta["n_calibration"] == 4000 and b.meta["n_fit"] == 4000 and b.meta["n_samples"] == 4000
    report = b.calibration_report
    assert report["method"] == "blocked cross-fitting" and report["folds"] == 5 and report["purge_rows"] == 0
    assert not b.provisional and 3000 < report["effective_sample_size"] <= 4000
    lo, hi = report["far_interval_90"]
    assert lo < 0.01 < hi < 0.02
    assert json.loads(json.dumps(report)) == report  # plain JSON types: stored with the version as is
    assert b.threshold == pytest.approx(2.0)
    out = b.score(np.array([[0.0, 0.0, 0.0], [2.0, -2.0, 0.0]]))
    assert out.is_anomaly.tolist() == [False, True]
    assert out.top_features()[1] in {"x", "y"}
    assert out.calibrated[1] > out.threshold > out.calibrated[0]


def test_save_load_gives_identical_scores(tmp_path, data, fitted):
    b = fitted
    b.save(tmp_path / "m")
    back = ModelBundle.load(tmp_path / "m")
    X = data[:100] * 1.5
    a, c = b.score(X), back.score(X)
    assert np.array_equal(a.raw, c.raw) and np.array_equal(a.tail_probability, c.tail_probability)
    assert back.version == b.version and back.feature_names == ("x", "y", "z")


def test_wrong_width_and_names_are_rejected(data, fitted):
    with pytest.raises(ConfigError, match="feature names"):
        ModelBundle.fit("robust_mahalanobis", data, feature_names=["x", "y"])
    with pytest.raises(DataError, match="expected 3 features"):
        fitted.score(np.zeros((2, 4)))
    with pytest.raises(KeyError, match="unknown detector"):
        ModelBundle.fit("nope", data, feature_names=["x", "y", "z"])


def test_calibration_fraction_holds_out_the_latest_rows(data):
    b = ModelBundle.fit("robust_mahalanobis", data, feature_names=["x", "y", "z"], target_far=0.01,
                        calibration_fraction=0.3)
    assert b.meta["n_calibration"] == 1200 and b.meta["n_fit"] == 2800 and b.meta["n_samples"] == 4000
    assert b.calibration_report["method"] == "time-ordered hold-out"


def test_too_little_data_for_the_target_gives_a_provisional_model(data):
    X = data[:300]
    b = ModelBundle.fit("robust_mahalanobis", X, feature_names=["x", "y", "z"], target_far=1e-4)
    assert b.provisional
    (warning,) = b.calibration_report["warnings"]
    assert "--target-far" in warning and "provisional" in warning
    # Conservative: never below what the data can vouch for (the top 1/ESS of the normal scores).
    report = b.calibration_report
    assert report["raw_threshold"] == b.raw_threshold
    assert np.mean(b.detector.score(X) > b.raw_threshold) <= report["min_resolvable_far"]
    with pytest.raises(ConfigError, match=r"target_far|known-good"):
        ModelBundle.fit("robust_mahalanobis", X[:30], feature_names=["x", "y", "z"], target_far=1e-4, folds=2)


def test_shuffled_folds_for_exchangeable_data_whose_order_groups_similar_rows():
    # Rows sorted by a grouping (like image files sorted by panel): each time block is one group,
    # so a held-out block is a group the fit never saw and the threshold comes out far too high.
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(5), 400)
    X = rng.normal(size=(2000, 2)) + 1.5 * rng.normal(size=(5, 2))[groups]
    fits = {order: ModelBundle.fit("hotelling", X, feature_names=["a", "b"], target_far=0.05, fold_order=order)
            for order in ("time", "shuffled")}
    assert fits["shuffled"].calibration_report["method"] == "shuffled cross-fitting"
    assert fits["shuffled"].raw_threshold < fits["time"].raw_threshold
    with pytest.raises(ConfigError, match="fold_order='time'"):
        ModelBundle.fit("ewma", X[:, :1], feature_names=["a"], fold_order="shuffled")
    with pytest.raises(ConfigError, match="fold_order"):
        ModelBundle.fit("hotelling", X, feature_names=["a", "b"], fold_order="random")
