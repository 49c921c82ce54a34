from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.bundle import ModelBundle
from linewatch.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    cov = [[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]
    return rng.multivariate_normal([0, 0, 0], cov, size=4000)


def test_fit_holds_out_calibration_rows_and_saves_provenance(data):
    b = ModelBundle.fit("robust_mahalanobis", data, feature_names=["x", "y", "z"], target_far=0.01, seed=1)
    assert b.meta["n_calibration"] == 1200 and b.meta["n_fit"] == 2800 and b.meta["n_samples"] == 4000
    assert b.threshold == pytest.approx(2.0)
    out = b.score(np.array([[0.0, 0.0, 0.0], [2.0, -2.0, 0.0]]))
    assert out.is_anomaly.tolist() == [False, True]
    assert out.top_features()[1] in {"x", "y"}
    assert out.calibrated[1] > out.threshold > out.calibrated[0]


def test_save_load_gives_identical_scores(tmp_path, data):
    b = ModelBundle.fit("robust_mahalanobis", data, feature_names=["x", "y", "z"], target_far=0.01, seed=1)
    b.save(tmp_path / "m")
    back = ModelBundle.load(tmp_path / "m")
    X = data[:100] * 1.5
    a, c = b.score(X), back.score(X)
    assert np.array_equal(a.raw, c.raw) and np.array_equal(a.tail_probability, c.tail_probability)
    assert back.version == b.version and back.feature_names == ("x", "y", "z")


def test_wrong_width_and_names_are_rejected(data):
    with pytest.raises(ConfigError, match="feature names"):
        ModelBundle.fit("robust_mahalanobis", data, feature_names=["x", "y"])
    b = ModelBundle.fit("robust_mahalanobis", data, feature_names=["x", "y", "z"], target_far=0.01)
    with pytest.raises(DataError, match="expected 3 features"):
        b.score(np.zeros((2, 4)))
    with pytest.raises(KeyError, match="unknown detector"):
        ModelBundle.fit("nope", data, feature_names=["x", "y", "z"])
