"""Training-data coverage: counts per context value, what a live record or a test period adds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from rich.console import Console

from linewatch.coverage import Coverage, coverage_report, hours_of
from linewatch.errors import DataError


def _context(n: int = 48) -> dict[str, object]:
    start = np.datetime64("2026-03-02T06:00", "m")
    ts = start + np.arange(n) * np.timedelta64(20, "m")  # 06:00 .. 21:40, every 20 minutes
    return {
        "shift": np.where(np.arange(n) < n // 2, "early", "late"),
        "lot": np.array(["L1", "L2", None, "L2"] * (n // 4), dtype=object),
        "asset": ["press-1"] * n,
        "hour": ts,
    }


def test_counts_per_value_and_hours_as_24_bins() -> None:
    cov = Coverage.from_context(_context())
    assert cov.n_rows == 48
    assert cov.counts["shift"] == {"early": 24, "late": 24}
    assert cov.counts["lot"] == {"L2": 24, "L1": 12}  # None is "not recorded", not a value
    assert len(cov.counts["hour"]) == 24 and sum(cov.counts["hour"].values()) == 48
    assert cov.counts["hour"]["06"] == 3 and cov.counts["hour"]["21"] == 3 and cov.counts["hour"]["05"] == 0
    assert cov.dimensions == ["asset", "shift", "lot", "hour"]


def test_round_trip_through_json() -> None:
    cov = Coverage.from_context(_context())
    again = Coverage.from_dict(json.loads(json.dumps(cov.to_dict())))
    assert again == cov and again.to_dict()["layout"] == 1


def test_unseen_names_each_new_value_and_hour() -> None:
    cov = Coverage.from_context(_context())
    assert cov.unseen({"shift": "early", "lot": "L1", "asset": "press-1", "hour": 7}) == []
    got = cov.unseen({"shift": "night", "lot": "L9", "asset": "press-1", "hour": 3, "machine_state": "warmup"})
    # machine_state was never recorded in training: nothing is known about it, so it is not judged.
    assert got == ["shift=night never in training", "lot=L9 never in training", "hour 03 never in training"]
    assert cov.unseen({"shift": None, "lot": ""}) == []  # a record that does not say is not flagged


def test_unseen_batch_is_aligned_with_rows_and_reads_datetimes() -> None:
    cov = Coverage.from_context(_context())
    late = datetime(2026, 3, 3, 2, 30, tzinfo=UTC)
    local = datetime(2026, 3, 3, 8, 0, tzinfo=timezone(timedelta(hours=6)))  # 02:00 UTC
    notes = cov.unseen_batch({"shift": ["early", "night", "late"], "hour": [late, datetime(2026, 3, 3, 9, 0), local]})
    assert notes == [[("hour", "hour 02 never in training")], [("shift", "shift=night never in training")],
                     [("hour", "hour 02 never in training")]]


def test_hours_are_checked() -> None:
    assert hours_of([0, 23]).tolist() == [0, 23]
    with pytest.raises(DataError, match="0-23"):
        hours_of([24])


def test_summary_prints_every_dimension() -> None:
    console = Console(record=True, width=140)
    console.print(Coverage.from_context(_context()))
    text = console.export_text()
    assert "48 rows" in text and "early (24)" in text and "L2 (24), L1 (12)" in text
    assert "seen 06-21 UTC; never 00-05, 22-23" in text and "16 of 24" in text
    empty = Console(record=True, width=140)
    empty.print(Coverage.from_context({}))
    assert "no context columns" in empty.export_text()


def test_coverage_report_counts_test_rows_outside_training() -> None:
    test = {"shift": ["early", "night", "night", "late"], "lot": ["L1", "L3", "L1", "L3"], "hour": [6, 3, 7, 8],
            "sku": ["a", "a", "b", "b"]}
    r = coverage_report(_context(), test)
    assert r["train_rows"] == 48 and r["test_rows"] == 4
    assert r["dimensions"]["shift"]["unseen"] == {"night": 2}
    assert r["dimensions"]["lot"]["unseen"] == {"L3": 2}
    assert r["dimensions"]["hour"]["unseen"] == {"03": 1}
    assert r["unseen_rows"] == 3 and r["unseen_share"] == 0.75  # rows 1, 2 and 3 (row 1 three times over)
    assert r["not_in_training"] == ["sku"]
    assert "shift=night never in training (2 of 4 test rows)" in r["messages"]
    assert "hour 03 never in training (1 of 4 test rows)" in r["messages"]
    # From two Coverage objects the row count is an upper bound (rows cannot be matched up).
    bound = coverage_report(Coverage.from_context(_context()), Coverage.from_context(test))
    assert bound["unseen_rows"] == 4 and bound["dimensions"] == r["dimensions"]
