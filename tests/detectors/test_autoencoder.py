"""Windowed autoencoder: ONNX parity with scikit-learn, per-sensor explanation, the detector contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from linewatch.detectors.autoencoder import MODEL_FILE, WindowAutoencoder
from linewatch.detectors.table import get_detector
from linewatch.errors import ConfigError, DataError, NotFittedError

SENSORS = ("motor", "pump", "fan")
FEATS = 4


def _normal(n: int, seed: int = 0) -> np.ndarray:
    """Three sensors x four features driven by two shared latent factors (load, speed)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    mix = np.random.default_rng(99).normal(size=(2, len(SENSORS) * FEATS))
    return 10.0 + z @ mix + 0.05 * rng.normal(size=(n, len(SENSORS) * FEATS))


def _groups() -> tuple[str, ...]:
    return tuple(s for s in SENSORS for _ in range(FEATS))


@pytest.fixture(scope="module")
def fitted() -> WindowAutoencoder:
    det = WindowAutoencoder(hidden=(16,), bottleneck=2, max_iter=150, groups=_groups(), seed=0)
    return det.fit(_normal(800))


def test_onnx_matches_scikit_learn(fitted: WindowAutoencoder) -> None:
    X = _normal(200, seed=1)
    Z = (X - fitted.center_) / fitted.scale_
    expected = (Z - fitted.mlp_.predict(Z.astype(np.float32))) ** 2
    np.testing.assert_allclose(fitted.explain(X), expected, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(fitted.score(X), expected.sum(axis=1), rtol=1e-3, atol=1e-5)


def test_the_worst_sensor_is_named(fitted: WindowAutoencoder) -> None:
    X = _normal(50, seed=2)
    X[:, SENSORS.index("pump") * FEATS + 1] += 6.0  # one of the pump's features moves on its own (~4 sigma)
    named = fitted.worst_group(X)
    # Reconstruction error smears over correlated columns (see the module doc), so not every row.
    assert named.count("pump") >= 45, named
    G = fitted.explain_groups(X)
    assert G.shape == (50, 3) and fitted.group_names() == SENSORS
    np.testing.assert_allclose(G.sum(axis=1), fitted.score(X), rtol=1e-9)


def test_planted_outliers_score_higher(fitted: WindowAutoencoder) -> None:
    X = _normal(300, seed=3)
    y = np.zeros(300, dtype=bool)
    y[::10] = True
    X[y] += np.random.default_rng(4).normal(0, 1.0, size=(y.sum(), X.shape[1]))
    assert roc_auc_score(y, fitted.score(X)) > 0.95


def test_save_load_scores_identically_without_scikit_learn_state(fitted: WindowAutoencoder, tmp_path) -> None:
    X = _normal(100, seed=5)
    fitted.save(tmp_path / "ae")
    assert (tmp_path / "ae" / MODEL_FILE).exists()
    back = WindowAutoencoder.load(tmp_path / "ae")
    assert back.mlp_ is None  # scoring below runs on the ONNX graph only
    np.testing.assert_array_equal(back.score(X), fitted.score(X))
    assert back.worst_group(X[:3]) == fitted.worst_group(X[:3])


def test_exported_graph_is_plain_onnx(fitted: WindowAutoencoder) -> None:
    import onnx

    model = onnx.load_from_string(fitted.onnx_)
    onnx.checker.check_model(model)
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
    assert [o.name for o in model.graph.output] == ["sq_error"]


def test_same_seed_same_scores_and_input_untouched() -> None:
    X = _normal(300, seed=6)
    before = X.copy()
    a = WindowAutoencoder(hidden=(8,), max_iter=30, seed=3).fit(X).score(X)
    b = WindowAutoencoder(hidden=(8,), max_iter=30, seed=3).fit(X).score(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(X, before)


def test_contract_errors() -> None:
    with pytest.raises(NotFittedError):
        WindowAutoencoder().score(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="identity"):
        WindowAutoencoder(bottleneck=12).fit(_normal(100))
    with pytest.raises(ConfigError, match="one sensor"):
        WindowAutoencoder(groups=("a",)).fit(_normal(100))
    with pytest.raises(DataError):
        WindowAutoencoder().fit(_normal(5))
    det = WindowAutoencoder(hidden=(4,), max_iter=5).fit(_normal(60))
    with pytest.raises(DataError, match="features"):
        det.score(np.zeros((2, 5)))
    assert get_detector("autoencoder") is WindowAutoencoder
