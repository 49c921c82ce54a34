"""``linewatch backtest csv`` through Typer's runner: table, JSON, and the signals hand-off."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from linewatch.cli import backtest as backtest_cli
from linewatch.eval_data import NAB_DIR

RUNNER = CliRunner()


def _csvs(tmp_path, sep=","):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(1500, 2))
    test = rng.normal(size=(300, 2))
    test[200:250] += 5.0
    label = np.zeros(300, int)
    label[200:250] = 1

    def write(path, X, y=None):
        lines = [sep.join(["t", "a", "b"] + (["label"] if y is not None else []))]
        for i, row in enumerate(X):
            cells = [str(i), f"{row[0]:.6f}", f"{row[1]:.6f}"] + ([str(y[i])] if y is not None else [])
            lines.append(sep.join(cells))
        path.write_text("\n".join(lines) + "\n")

    write(tmp_path / "train.csv", train)
    write(tmp_path / "test.csv", test, label)
    return tmp_path / "train.csv", tmp_path / "test.csv"


def test_csv_command_prints_table_and_writes_json(tmp_path) -> None:
    train, test = _csvs(tmp_path, sep=";")
    out = tmp_path / "r.json"
    res = RUNNER.invoke(
        backtest_cli.backtest_app,
        ["csv", "--train", str(train), "--test", str(test), "--label-column", "label", "--time-column", "t",
         "--sep", ";", "--detector", "hotelling", "--target-far", "0.01", "--json", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "precision" in res.output and "hotelling" in res.output
    r = json.loads(out.read_text())
    for key in ("precision", "recall", "f1", "far", "mar", "auroc", "tp", "fp", "tn", "fn",
                "detector", "n_train", "n_test"):  # fmt: skip
        assert key in r
    assert r["n_train"] == 1500 and r["n_test"] == 300 and r["recall"] > 0.9
    assert r["feature_names"] == ["a", "b"]


def test_signals_modality_dispatches_with_the_documented_signature(tmp_path, monkeypatch) -> None:
    import linewatch.backtest.signals as signals

    seen = {}

    def fake(train, test, labels, feature_names, *, window, stride, detector, target_far, timestamps):
        seen.update(train=train, test=test, labels=labels, names=feature_names, window=window,
                    stride=stride, detector=detector, far=target_far, ts=timestamps)  # fmt: skip
        return {"detector": detector, "precision": 1.0, "n_train": len(train), "n_test": len(test)}

    monkeypatch.setattr(signals, "run_signals_backtest", fake)
    train, test = _csvs(tmp_path)
    r = backtest_cli.run_csv_backtest(
        train=train, test=test, label_column="label", time_column="t", detector="dynamic_pca",
        target_far=0.02, modality="signals", window=20, stride=5,
    )  # fmt: skip
    assert seen["train"].shape == (1500, 2) and seen["test"].shape == (300, 2)
    assert seen["labels"].sum() == 50 and seen["names"] == ["a", "b"]
    assert (seen["window"], seen["stride"], seen["detector"], seen["far"]) == (20, 5, "dynamic_pca", 0.02)
    np.testing.assert_array_equal(seen["ts"], np.arange(300.0))
    assert r["modality"] == "signals" and r["n_test"] == 300


def test_bad_modality_is_a_config_error(tmp_path) -> None:
    train, test = _csvs(tmp_path)
    res = RUNNER.invoke(
        backtest_cli.backtest_app,
        ["csv", "--train", str(train), "--test", str(test), "--label-column", "label", "--modality", "video"],
    )
    assert res.exit_code != 0
    assert "modality" in str(res.exception)


def _invoke(*args: str):
    return RUNNER.invoke(backtest_cli.backtest_app, ["csv", *args])


def test_the_per_event_table_is_printed_and_in_the_json(tmp_path) -> None:
    train, test = _csvs(tmp_path)
    out = tmp_path / "r.json"
    res = _invoke("--train", str(train), "--test", str(test), "--label-column", "label", "--time-column", "t",
                  "--detector", "hotelling", "--target-far", "0.01", "--json", str(out))
    assert res.exit_code == 0, res.output
    assert "events: 1 of 1 detected" in res.output and "false-alarm episodes" in res.output
    (event,) = json.loads(out.read_text())["events"]
    assert event["start_row"] == 200 and event["end_row"] == 249 and event["detected"]
    assert event["delay_rows"] == 0 and event["start"] == 200.0 and event["blamed_feature"] in {"a", "b"}
    assert f"{event['delay_rows']} rows" in res.output


def _nab_like(tmp_path):
    """A NAB-shaped single file (5-minute rows, ``timestamp,value``) with two faults, and its windows JSON."""
    rng = np.random.default_rng(4)
    times = np.arange("2026-03-01T00:00", "2026-03-08T00:00", 5, dtype="datetime64[m]")
    value = 70 + rng.normal(size=len(times))
    faults = [("2026-03-02T10:00", "2026-03-02T12:00"), ("2026-03-05T06:00", "2026-03-05T09:00"),
              ("2026-03-06T12:00", "2026-03-06T15:00")]
    for lo, hi in faults[1:]:
        value[(times >= np.datetime64(lo)) & (times <= np.datetime64(hi))] += 8.0
    data = tmp_path / "nab" / "realKnownCause" / "press_temperature.csv"
    data.parent.mkdir(parents=True)
    data.write_text("timestamp,value\n" + "".join(
        f"{str(t).replace('T', ' ')}:00,{v:.5f}\n" for t, v in zip(times, value, strict=True)))
    windows = {"realKnownCause/press_temperature.csv": [[f"{lo.replace('T', ' ')}:00.000000",
                                                         f"{hi.replace('T', ' ')}:00.000000"] for lo, hi in faults],
               "realKnownCause/other.csv": [["2026-03-01 00:00:00.000000", "2026-03-01 01:00:00.000000"]]}
    labels = tmp_path / "combined_windows.json"
    labels.write_text(json.dumps(windows))
    return data, labels


def test_nab_windows_with_train_until_end_to_end(tmp_path) -> None:
    data, labels = _nab_like(tmp_path)
    out = tmp_path / "r.json"
    res = _invoke("--test", str(data), "--labels", str(labels), "--time-column", "timestamp",
                  "--train-until", "2026-03-04", "--detector", "hotelling", "--target-far", "0.005", "--json", str(out))
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    # 3 days before the cut (864 rows) minus the 25 rows of the first window; only later rows are scored.
    assert r["n_train"] == 3 * 288 - 25 and r["train_rows_left_out_labelled"] == 25
    assert r["n_test"] == 4 * 288 and r["label_windows"] == 3 and r["label_windows_in_test"] == 2
    assert [e["start"] for e in r["events"]] == ["2026-03-05T06:00:00", "2026-03-06T12:00:00"]
    assert all(e["detected"] and e["delay_rows"] <= 2 for e in r["events"]) and r["delay_unit"] == "s"
    assert r["n_anomalous"] == 2 * 37 and r["recall"] > 0.9
    assert "2026-03-05" in res.output and "events: 2 of 2 detected" in res.output
    wrong = _invoke("--test", str(data), "--labels", str(labels), "--time-column", "timestamp",
                    "--train-until", "2026-03-04", "--labels-key", "press.csv")
    assert wrong.exit_code != 0 and "realKnownCause/press_temperature.csv" in str(wrong.exception)


def test_csv_interval_labels_with_a_train_file(tmp_path) -> None:
    train, test = _csvs(tmp_path)
    intervals = tmp_path / "intervals.csv"
    intervals.write_text("start,end\n200,224\n225,249\n")  # two touching windows stay two events
    out = tmp_path / "r.json"
    res = _invoke("--train", str(train), "--test", str(test), "--labels", str(intervals), "--time-column", "t",
                  "--detector", "hotelling", "--target-far", "0.01", "--json", str(out))
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert [(e["start_row"], e["end_row"]) for e in r["events"]] == [(200, 224), (225, 249)]
    assert r["n_anomalous"] == 50 and r["n_detected"] == 2


def test_bad_cells_error_through_the_cli_or_are_skipped_and_counted(tmp_path) -> None:
    train, test = _csvs(tmp_path)
    lines = train.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",#REF!"
    lines[9] = lines[9].rsplit(",", 1)[0] + ","
    train.write_text("\n".join(lines) + "\n")
    base = ["--train", str(train), "--test", str(test), "--label-column", "label", "--time-column", "t",
            "--detector", "hotelling"]
    res = _invoke(*base)
    assert res.exit_code != 0
    msg = str(res.exception)
    assert str(train) in msg and "column 'b', data row 5: '#REF!' is not a number" in msg
    assert "--on-bad-rows skip" in msg
    out = tmp_path / "r.json"
    ok = _invoke(*base, "--on-bad-rows", "skip", "--json", str(out))
    assert ok.exit_code == 0, ok.output
    r = json.loads(out.read_text())
    assert r["skipped_rows"] == {str(train): 2, str(test): 0} and r["n_train"] == 1498
    assert "rows skipped (train file)" in ok.output


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--label-column", "label"], "exactly one of --train FILE"),
        (["--train", "T", "--train-until", "5", "--label-column", "label", "--time-column", "t"],
         "exactly one of --train FILE"),
        (["--train", "T"], "exactly one of --label-column NAME"),
        (["--train", "T", "--label-column", "label", "--labels", "L.json", "--time-column", "t"],
         "exactly one of --label-column NAME"),
        (["--train", "T", "--labels", "L.json"], "--labels needs --time-column"),
        (["--train-until", "5", "--label-column", "label"], "--train-until needs --time-column"),
        (["--train", "T", "--label-column", "label", "--labels-key", "k"], "give --labels too"),
    ],
)
def test_training_and_label_sources_are_alternatives(tmp_path, args, match) -> None:
    res = _invoke("--test", str(tmp_path / "test.csv"), *args)
    assert res.exit_code != 0
    assert match in str(res.exception)


def test_the_real_nab_file_in_one_command(tmp_path) -> None:
    nab = NAB_DIR
    data = nab / "data/realKnownCause/machine_temperature_system_failure.csv"
    if not data.exists():
        pytest.skip("the NAB copy (shared/eval beside the checkout, or LINEWATCH_EVAL_DIR) is not here")
    out = tmp_path / "r.json"
    res = _invoke("--test", str(data), "--labels", str(nab / "labels/combined_windows.json"),
                  "--time-column", "timestamp", "--train-until", "2013-12-10", "--json", str(out))
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["label_windows_in_test"] == 4 and len(r["events"]) == 4
    assert r["events"][2]["start"] == "2014-01-27T14:20:00"  # NAB's window around the catastrophic failure
    assert r["n_train"] + r["train_rows_left_out_labelled"] + r["n_test"] == 22695
    assert r["auroc"] is not None and r["far"] is not None


def test_the_events_table_also_shows_the_signals_backtests_events(tmp_path) -> None:
    train, test = _csvs(tmp_path)
    out = tmp_path / "r.json"
    res = _invoke("--train", str(train), "--test", str(test), "--label-column", "label", "--time-column", "t",
                  "--modality", "signals", "--window", "5", "--stride", "1", "--detector", "hotelling",
                  "--target-far", "0.01", "--json", str(out))
    assert res.exit_code == 0, res.output
    (event,) = json.loads(out.read_text())["events"]
    assert event["detected"] and event["start_row"] == 200 and event["start"] == 200.0
    assert "events: 1 of 1 detected" in res.output


def test_the_bundles_calibration_report_reaches_the_table_and_the_json(tmp_path) -> None:
    # 1500 known-good rows cannot resolve one false alarm in 100,000: a provisional model, said so.
    train, test = _csvs(tmp_path)
    out = tmp_path / "r.json"
    res = _invoke("--train", str(train), "--test", str(test), "--label-column", "label", "--detector", "hotelling",
                  "--target-far", "0.00001", "--json", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())["calibration_report"]
    assert report["provisional"] and report["method"] == "blocked cross-fitting" and report["n_scores"] == 1500
    assert "provisional" in res.output and "--target-far" in res.output
    assert "normal scores worth" in res.output


def test_test_rows_from_a_context_training_never_had_are_reported(tmp_path) -> None:
    from linewatch.cli.simulate import write_spc_csv
    from linewatch.simulation.spc import simulate_spc

    write_spc_csv(simulate_spc(n_parts=1500, seed=3, fault_fraction=0.0, regime_shift_sigma=0.5,
                               assets=("press-1",)), tmp_path / "train.csv")
    write_spc_csv(simulate_spc(n_parts=400, seed=4, assets=("press-1", "press-9")), tmp_path / "test.csv")
    out = tmp_path / "r.json"
    res = RUNNER.invoke(backtest_cli.backtest_app, [
        "csv", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
        "--label-column", "fault", "--time-column", "ts", "--target-far", "0.01", "--json", str(out)])
    assert res.exit_code == 0, res.output
    coverage = json.loads(out.read_text())["coverage"]
    unseen = coverage["dimensions"]["asset"]["unseen"]
    assert set(unseen) == {"press-9"} and 150 < unseen["press-9"] < 250
    assert coverage["unseen_rows"] == unseen["press-9"]
    assert "asset=press-9 never in training" in res.output


def test_image_commands_refuse_too_few_good_images_before_reading_them(tmp_path) -> None:
    # 30 "images" that are not even decodable: the budget check must fire before any is read.
    good = tmp_path / "data" / "train" / "good"
    good.mkdir(parents=True)
    (tmp_path / "data" / "test" / "good").mkdir(parents=True)
    for i in range(30):
        (good / f"{i:03d}.png").write_bytes(b"not a png")
    (tmp_path / "data" / "test" / "good" / "x.png").write_bytes(b"not a png")
    res = RUNNER.invoke(backtest_cli.backtest_app, ["images", "--data", str(tmp_path / "data")])
    assert res.exit_code != 0
    message = str(res.exception)
    assert "30 good frames" in message and "--target-far (target_far=) to 0.33" in message
    assert "at least 42" in message
    from linewatch.cli import train as train_cli

    res = RUNNER.invoke(train_cli.train_app, ["frames", "--data", str(tmp_path / "data"), "--sku", "s",
                                              "--preset", "accurate", "--calibration-fraction", "0.25"])
    assert res.exit_code != 0
    assert "8 held-out good frames (25% of 30)" in str(res.exception) and "add known-good images" in str(res.exception)
