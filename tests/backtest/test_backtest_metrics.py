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


def test_detection_delays_on_given_episodes_that_touch() -> None:
    y = np.array([0, 1, 1, 1, 1, 0], bool)
    a = np.array([0, 0, 0, 1, 0, 0], bool)
    assert detection_delays(y, a) == [2]  # one run of positive rows
    assert detection_delays(y, a, episodes=[(1, 3), (3, 5)]) == [None, 0]  # two adjacent windows


def test_event_report_times_delays_blame_and_false_alarm_episodes() -> None:
    from linewatch.backtest.metrics import event_report

    ts = np.arange("2026-01-01T00:00", "2026-01-01T00:50", 5, dtype="datetime64[m]").astype("datetime64[us]")
    y = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 0], bool)
    a = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 1], bool)
    r = event_report(y, a, timestamps=ts, blame=lambda row: f"f{row}")
    first, second = r["events"]
    assert (first["start"], first["end"], first["first_alarm"]) == (
        "2026-01-01T00:10:00", "2026-01-01T00:20:00", "2026-01-01T00:20:00")
    assert first["detected"] and first["delay_rows"] == 2 and first["delay"] == 600.0
    assert first["blamed_feature"] == "f4" and first["alarm_rows"] == 1 and first["alarm_on_before_rows"] == 0
    assert not second["detected"] and second["delay"] is None and second["blamed_feature"] is None
    assert r["n_events"] == 2 and r["n_detected"] == 1 and r["delay_unit"] == "s"
    assert r["false_alarm_episodes"] == 3  # rows 0-1, 6 and 9; the alarm at row 4 is inside an event
    assert r["false_alarms_per_hour"] == pytest.approx(3 * 3600 / (5 * 300))  # five normal 5-minute rows
    rows_only = event_report(y, a)
    assert rows_only["delay_unit"] == "rows" and rows_only["events"][0]["start"] is None
    assert rows_only["events"][0]["delay"] == 2.0 and rows_only["false_alarms_per_hour"] is None


def test_an_alarm_already_on_when_an_event_starts_is_reported() -> None:
    from linewatch.backtest.metrics import event_report

    y = np.array([0, 0, 0, 1, 1, 0], bool)
    a = np.array([0, 1, 1, 1, 0, 0], bool)
    (event,) = event_report(y, a)["events"]
    assert event["delay_rows"] == 0 and event["alarm_on_before_rows"] == 2
    (always,) = event_report(y, np.ones(6, bool))["events"]
    assert always["alarm_on_before_rows"] == 3
