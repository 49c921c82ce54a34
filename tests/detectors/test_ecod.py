"""ECOD with frozen ECDFs: parity with PyOD for one-row batches, batch independence, hand values."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.ecod import ECOD
from linewatch.errors import ConfigError


def test_one_row_batches_match_pyod() -> None:
    from pyod.models.ecod import ECOD as PyodECOD

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=300), rng.exponential(size=300), -rng.exponential(size=300)])
    ours, theirs = ECOD().fit(X), PyodECOD().fit(X)
    q = np.vstack([rng.normal(size=(15, 3)) * 2, X[:5]])
    expect = np.array([theirs.decision_function(row[None, :])[0] for row in q])
    np.testing.assert_allclose(ours.score(q), expect, rtol=1e-12)


def test_scores_do_not_depend_on_batch_mates() -> None:
    rng = np.random.default_rng(1)
    det = ECOD().fit(rng.normal(size=(500, 2)))
    q = rng.normal(size=(30, 2)) * 3
    alone = np.array([det.score(row[None, :])[0] for row in q])
    np.testing.assert_allclose(det.score(q), alone)


def test_hand_value_symmetric_column() -> None:
    det = ECOD().fit(np.array([[1.0], [2.0], [3.0], [4.0]]))  # skewness 0: both tails count
    u = -np.log(3 / 5)  # 2 reference values <= 2.5 (+1) over 4 (+1), same on the right
    assert det.score(np.array([[2.5]]))[0] == pytest.approx(2 * u)
    assert det.explain(np.array([[9.0]]))[0, 0] == pytest.approx(-np.log(1 / 5) - np.log(5 / 5))


def test_reference_subsample_is_seeded(tmp_path) -> None:
    X = np.random.default_rng(2).normal(size=(1000, 2))
    a = ECOD(max_reference=100, seed=1).fit(X)
    b = ECOD(max_reference=100, seed=1).fit(X)
    c = ECOD(max_reference=100, seed=2).fit(X)
    assert a.reference_.shape == (100, 2)
    np.testing.assert_array_equal(a.reference_, b.reference_)
    assert not np.array_equal(a.reference_, c.reference_)
    with pytest.raises(ConfigError):
        ECOD(max_reference=1).fit(X)
