"""The shared backtest metrics, on confusion matrices small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from linewatch.backtest.metrics import auroc, classification_metrics, detection_delays
from linewatch.errors import DataError


def test_counts_and_rates_by_hand() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    a = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    m = classification_metrics(y, a, a.astype(float))
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 4, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["far"] == pytest.approx(1 / 5)
    assert m["mar"] == pytest.approx(1 / 3)
    assert m["n"] == 8 and m["n_anomalous"] == 3


def test_undefined_metrics_are_none_not_zero() -> None:
    m = classification_metrics(np.zeros(4, bool), np.zeros(4, bool), np.arange(4.0))
    assert m["recall"] is None and m["mar"] is None and m["precision"] is None and m["f1"] is None
    assert m["auroc"] is None and m["far"] == 0.0
    m = classification_metrics(np.array([1, 0], bool), np.array([0, 0], bool), np.array([0.0, 1.0]))
    assert m["precision"] is None and m["recall"] == 0.0 and m["auroc"] == 0.0
    m = classification_metrics(np.array([1, 0], bool), np.array([0, 1], bool), np.array([0.0, 1.0]))
    assert m["precision"] == 0.0 and m["f1"] == 0.0


def test_auroc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.2
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert auroc(np.array([0, 1], bool), np.array([0.5, 0.5])) == 0.5


def test_integer_flags_and_validation() -> None:
    m = classification_metrics([0, 1], [1, 1], [0.1, 0.2])
    assert m["tp"] == 1 and m["fp"] == 1
    with pytest.raises(DataError, match="0/1"):
        classification_metrics([0, 2], [0, 1], [0.0, 1.0])
    with pytest.raises(DataError, match="shape"):
        classification_metrics([0, 1], [0, 1, 1], [0.0, 1.0])
    with pytest.raises(DataError, match="NaN"):
        auroc([0, 1], [0.0, np.nan])


def test_detection_delays() -> None:
    y = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 1], bool)
    a = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0], bool)
    assert detection_delays(y, a) == [2, 0, None]
    assert detection_delays(np.zeros(3, bool), np.ones(3, bool)) == []
