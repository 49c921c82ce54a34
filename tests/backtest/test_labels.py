"""Label windows (NAB JSON, start/end CSV), the key that picks a file's entry, and the --train-until split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from linewatch.backtest.labels import choose_key, load_windows, split_until
from linewatch.errors import ConfigError, DataError
from linewatch.eval_data import NAB_DIR
from linewatch.loaders import load_csv

NAB = NAB_DIR
NAB_FILE = NAB / "data/realKnownCause/machine_temperature_system_failure.csv"


def _times(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[us]")


def test_nab_style_json_picks_the_entry_by_path_suffix(tmp_path) -> None:
    labels = tmp_path / "combined_windows.json"
    labels.write_text(json.dumps({
        "realKnownCause/a.csv": [["2026-01-01 00:10:00.000000", "2026-01-01 00:20:00.000000"]],
        "other/a.csv": [["2026-01-01 00:00:00.000000", "2026-01-01 00:05:00.000000"]],
    }))
    w = load_windows(labels, test_file=Path("/data/realKnownCause/a.csv"))
    assert "realKnownCause/a.csv" in w.source
    t = np.arange("2026-01-01T00:00", "2026-01-01T00:30", 5, dtype="datetime64[m]").astype("datetime64[us]")
    assert w.mask(t).astype(int).tolist() == [0, 0, 1, 1, 1, 0]  # 00:10, 00:15, 00:20: both ends inclusive
    assert w.episodes(t) == [(2, 5)]


def test_key_matching_by_base_name_and_its_errors(tmp_path) -> None:
    keys = ["realKnownCause/machine.csv", "realKnownCause/ambient.csv"]
    assert choose_key(keys, tmp_path / "machine.csv") == "realKnownCause/machine.csv"
    assert choose_key(keys, tmp_path / "x.csv", "realKnownCause/ambient.csv") == "realKnownCause/ambient.csv"
    with pytest.raises(ConfigError, match=r"--labels-key.*realKnownCause/machine\.csv, realKnownCause/ambient"):
        choose_key(keys, tmp_path / "pressure.csv")
    with pytest.raises(ConfigError, match="'nope' is not in the labels file"):
        choose_key(keys, tmp_path / "machine.csv", "nope")
    with pytest.raises(ConfigError, match="several label keys match"):
        choose_key(["a/m.csv", "b/m.csv"], tmp_path / "m.csv")


def test_csv_intervals_numbers_points_and_bad_windows(tmp_path) -> None:
    iv = tmp_path / "iv.csv"
    iv.write_text("Start,End,note\n3,4,jam\n8,8,spike\n")
    w = load_windows(iv, test_file=tmp_path / "t.csv")
    assert w.mask(np.arange(10.0)).astype(int).tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 1, 0]
    with pytest.raises(ConfigError, match="ISO 8601 times but the time column holds numbers"):
        load_windows(_write_json(tmp_path, {"t.csv": [["2026-01-01", "2026-01-02"]]}),
                     test_file=tmp_path / "t.csv").mask(np.arange(3.0))
    points = load_windows(_write_json(tmp_path, {"t.csv": ["2026-01-01 00:05:00"]}), test_file=tmp_path / "t.csv")
    assert points.mask(_times("2026-01-01T00:00", "2026-01-01T00:05")).tolist() == [False, True]
    backwards = tmp_path / "back.csv"
    backwards.write_text("start,end\n5,2\n")
    with pytest.raises(DataError, match=r"window 1 ends \(2\) before it starts \(5\)"):
        load_windows(backwards, test_file=tmp_path / "t.csv")
    no_header = tmp_path / "nh.csv"
    no_header.write_text("from,to\n1,2\n")
    with pytest.raises(DataError, match="'start' and 'end'"):
        load_windows(no_header, test_file=tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        load_windows(tmp_path / "missing.json", test_file=tmp_path / "t.csv")
    mixed = _write_json(tmp_path, {"t.csv": [["2026-01-01", "2026-01-02"], ["2026-01-03", "soon"]]})
    with pytest.raises(DataError, match="window 2 has 'soon', neither a number nor an ISO 8601 time"):
        load_windows(mixed, test_file=tmp_path / "t.csv")


def _write_json(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(doc))
    return path


def test_train_until_keeps_labelled_and_later_rows_out_of_training(tmp_path) -> None:
    p = tmp_path / "one.csv"
    p.write_text("t,x\n" + "".join(f"{i},{i * 1.0}\n" for i in range(10)))
    data = load_csv(p, time_column="t")
    anomalous = np.zeros(10, dtype=bool)
    anomalous[[2, 3, 8]] = True
    train, test, left_out = split_until(data, "6", anomalous)
    assert train.X[:, 0].tolist() == [0.0, 1.0, 4.0, 5.0] and left_out == 2
    assert test.timestamps.tolist() == [6.0, 7.0, 8.0, 9.0]
    with pytest.raises(ConfigError, match="choose a later time"):
        split_until(data, "0", anomalous)
    with pytest.raises(ConfigError, match="not the same kind"):
        split_until(data, "2026-01-01", anomalous)
    with pytest.raises(ConfigError, match="'tomorrow' is neither an ISO 8601 time nor a number"):
        split_until(data, "tomorrow", anomalous)


@pytest.mark.skipif(not NAB_FILE.exists(),
                    reason="the NAB copy (shared/eval beside the checkout, or LINEWATCH_EVAL_DIR) is not here")
def test_the_real_nab_windows_cover_the_real_file() -> None:
    w = load_windows(NAB / "labels/combined_windows.json", test_file=NAB_FILE)
    data = load_csv(NAB_FILE, time_column="timestamp")
    episodes = w.episodes(data.timestamps)
    assert len(episodes) == 4  # the four labelled windows of machine_temperature_system_failure
    assert all(e - s > 500 for s, e in episodes)  # two-day tolerance windows of 5-minute rows
    assert data.timestamps[episodes[0][0]] == np.datetime64("2013-12-10T06:25")
