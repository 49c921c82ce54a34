"""Isolation Forest in ONNX: parity with scikit-learn for both exporters, a pickle-free artifact."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from linewatch.detectors.isolation_forest import (
    ONNX_FILE,
    IsolationForestONNX,
    _float32_floor,
    average_path_length,
)
from linewatch.errors import ConfigError

RNG = np.random.default_rng(0)
TRAIN = RNG.normal(size=(600, 4)) * np.array([1.0, 10.0, 0.1, 3.0])
QUERY = np.vstack([RNG.normal(size=(400, 4)) * np.array([2.0, 20.0, 0.2, 6.0]), TRAIN[:100]])


@pytest.mark.parametrize("max_features", [1.0, 0.5])
def test_fused_graph_matches_scikit_learn(max_features: float) -> None:
    det = IsolationForestONNX(n_estimators=40, max_features=max_features, seed=3).fit(TRAIN)
    expect = det.estimator_.score_samples(QUERY.astype(np.float32))
    np.testing.assert_allclose(det.score_samples(QUERY), expect, atol=1e-6)
    np.testing.assert_allclose(det.score(QUERY), -expect, atol=1e-6)  # negated exactly once


def test_skl2onnx_graph_matches_scikit_learn() -> None:
    det = IsolationForestONNX(n_estimators=5, exporter="skl2onnx", seed=1).fit(TRAIN)
    np.testing.assert_allclose(det.score_samples(QUERY), det.estimator_.score_samples(QUERY), atol=1e-6)


def test_small_training_set_caps_max_samples() -> None:
    det = IsolationForestONNX(n_estimators=10, max_samples=256, seed=0).fit(TRAIN[:50])
    assert det.estimator_.max_samples_ == 50
    np.testing.assert_allclose(det.score_samples(QUERY), det.estimator_.score_samples(QUERY), atol=1e-6)


def test_saved_artifact_is_onnx_plus_json(tmp_path) -> None:
    det = IsolationForestONNX(n_estimators=10).fit(TRAIN)
    det.save(tmp_path / "m")
    model = onnx.load(str(tmp_path / "m" / ONNX_FILE))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node].count("TreeEnsembleRegressor") == 1
    assert (tmp_path / "m" / "metadata.json").exists()
    back = IsolationForestONNX.load(tmp_path / "m")
    assert back.estimator_ is None  # scoring runs on the ONNX graph alone
    np.testing.assert_array_equal(back.score(QUERY), det.score(QUERY))


def test_helpers_by_hand() -> None:
    c3 = 2 * (np.log(2) + np.euler_gamma) - 4 / 3
    np.testing.assert_allclose(average_path_length(np.array([1, 2, 3])), [0.0, 1.0, c3])
    t = np.random.default_rng(1).normal(size=1000) * 10
    f = _float32_floor(t)
    assert (f.astype(np.float64) <= t).all()
    assert (np.nextafter(f, np.float32(np.inf)).astype(np.float64) > t).all()


def test_unknown_exporter() -> None:
    with pytest.raises(ConfigError, match="exporter"):
        IsolationForestONNX(exporter="tf2onnx").fit(TRAIN)
