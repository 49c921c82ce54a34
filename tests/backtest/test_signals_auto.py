"""``backtest csv --modality signals`` with defaults on a short 1 Hz summary series: window and lags from the data."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from linewatch.backtest.signals import run_signals_backtest
from linewatch.cli import app
from linewatch.errors import DataError

N_SENSORS = 40


def _write(path: Path, X: np.ndarray, y: np.ndarray, t0: datetime) -> None:
    header = ["ts", *[f"s{i:02d}" for i in range(X.shape[1])], "fault"]
    lines = [",".join(header)]
    for i, row in enumerate(X):
        ts = (t0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(",".join([ts, *(f"{v:.5f}" for v in row), str(int(y[i]))]))
    path.write_text("\n".join(lines) + "\n")


def _series(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ten sensors per slowly wandering process state, plus sensor noise (1 Hz summaries)."""
    state = rng.normal(size=(n, 4)).cumsum(axis=0) * 0.05
    return np.repeat(state, N_SENSORS // 4, axis=1) + 0.3 * rng.normal(size=(n, N_SENSORS))


@pytest.fixture(scope="module")
def summary_csvs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hz1")
    rng = np.random.default_rng(0)
    train, test = _series(rng, 400), _series(rng, 400)
    y = np.zeros(400, dtype=bool)
    y[250:330] = True
    test[250:330, 7] += 2.5  # one sensor leaves its group
    _write(root / "train.csv", train, np.zeros(400, dtype=bool), datetime(2026, 1, 1, tzinfo=UTC))
    _write(root / "test.csv", test, y, datetime(2026, 1, 2, tzinfo=UTC))
    return root / "train.csv", root / "test.csv"


def test_defaults_work_on_400_rows_of_40_sensors_and_say_what_they_chose(summary_csvs, tmp_path):
    train, test = summary_csvs
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["backtest", "csv", "--train", str(train), "--test", str(test), "--label-column",
                                   "fault", "--time-column", "ts", "--modality", "signals", "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["detector"] == "dynamic_pca" and r["window"] < 50 and r["lags"] in (0, 1, 2)
    assert "auto choice" in res.output
    assert r["auto_reason"].startswith(f"dynamic_pca with lags={r['lags']}, window={r['window']}")
    # the refused default, with the reason (the detector's own, or too few rows to cross-fit)
    assert re.search("needs at least|cannot be cut into", r["auto_refused"][0])
    assert r["events"][0]["detected"] and r["auroc"] > 0.9


def test_auto_keeps_the_given_window_when_the_data_allow_it():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(3000, 2)), rng.normal(size=(1000, 2))
    test[600:700, 1] += 4.0
    y = np.zeros(1000, dtype=bool)
    y[600:700] = True
    r = run_signals_backtest(train, test, y, ["a", "b"], window=10, stride=2, detector="auto", target_far=0.01,
                             timestamps=None)
    assert (r["window"], r["stride"], r["lags"]) == (10, 2, 2) and r["auto_refused"] == []
    assert "fits these train rows" in r["auto_reason"] and r["events"][0]["detected"]


def test_auto_does_not_hide_broken_input():
    train = np.ones((500, 2))
    train[3, 0] = np.nan
    with pytest.raises(DataError, match="NaN/inf"):
        run_signals_backtest(train, np.ones((100, 2)), np.zeros(100, dtype=bool), ["a", "b"], window=10, stride=2,
                             detector="auto", target_far=0.01, timestamps=None)
