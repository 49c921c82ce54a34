"""One conformance test over every ``"table"`` detector in table.py: the contract in base.py, checked.

Every tabular detector must: refuse to score before fit, leave its input untouched,
score identically after save -> load, score identically when refitted with the same seed,
rank planted outliers above normal rows (AUROC > 0.5), reject rows of the wrong width,
and, if it explains, return non-negative per-feature contributions of the right shape.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from linewatch.backtest.metrics import auroc
from linewatch.detectors import base, table
from linewatch.errors import DataError, NotFittedError

#: Smaller settings for the slow-to-fit detectors, so the whole suite stays fast. The contract
#: does not depend on forest size or window length.
FAST_PARAMS: dict[str, dict] = {
    "isolation_forest": {"n_estimators": 30},
    "half_space_trees": {"window_size": 100},
    "online_hst": {"window_size": 100},
}
NAMES = list(table.names("table"))
COV = np.array([[1.0, 0.7, 0.2], [0.7, 1.0, 0.1], [0.2, 0.1, 1.0]])


def _make(name: str, seed: int = 0):
    cls = table.get_detector(name)
    params = dict(FAST_PARAMS.get(name, {}))
    if "seed" in inspect.signature(cls).parameters:
        params["seed"] = seed
    return cls(**params)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(123)
    train = rng.multivariate_normal(np.zeros(3), COV, size=400)
    normal = rng.multivariate_normal(np.zeros(3), COV, size=200)
    direction = rng.normal(size=(20, 3))
    outliers = 7.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    test = np.vstack([normal, outliers])
    labels = np.r_[np.zeros(200, bool), np.ones(20, bool)]
    order = rng.permutation(220)  # outliers scattered among normal rows, not in a block
    return {"train": train, "test": test[order], "labels": labels[order]}


@pytest.mark.parametrize("name", NAMES)
def test_score_before_fit_raises(name: str, data) -> None:
    with pytest.raises(NotFittedError):
        _make(name).score(data["test"])


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, data, tmp_path) -> None:
    train, test = data["train"].copy(), data["test"].copy()
    det = _make(name, seed=7).fit(train)
    scores = det.score(test)
    # input not mutated
    np.testing.assert_array_equal(train, data["train"])
    np.testing.assert_array_equal(test, data["test"])
    # shape, finiteness, and the score does not depend on how often it is asked
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(det.score(test), scores)
    # an empty batch (a quiet stream) is answered, not an error
    assert det.score(test[:0]).shape == (0,)
    # save -> load gives identical scores
    det.save(tmp_path / name)
    back = type(det).load(tmp_path / name)
    np.testing.assert_array_equal(back.score(test), scores)
    # same seed, same scores
    np.testing.assert_array_equal(_make(name, seed=7).fit(data["train"]).score(test), scores)
    # planted outliers rank above normal rows
    assert auroc(data["labels"], scores) > 0.5
    # explanations, where offered
    if isinstance(det, base.Explainer):
        contrib = det.explain(test)
        assert contrib.shape == test.shape
        assert (contrib >= 0).all()
        np.testing.assert_array_equal(back.explain(test), contrib)
    # wrong width is a clear data error
    with pytest.raises(DataError):
        det.score(test[:, :2])
    # and after everything, the caller's arrays are still untouched
    np.testing.assert_array_equal(train, data["train"])
    np.testing.assert_array_equal(test, data["test"])
