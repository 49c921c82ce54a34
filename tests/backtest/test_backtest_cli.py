"""``linewatch backtest csv`` through Typer's runner: table, JSON, and the signals hand-off."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from linewatch.cli import backtest as backtest_cli

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


def test_image_commands_refuse_too_few_good_images_before_reading_them(tmp_path) -> None:
    # 100 "images" that are not even decodable: the budget check must fire before any is read.
    good = tmp_path / "data" / "train" / "good"
    good.mkdir(parents=True)
    (tmp_path / "data" / "test" / "good").mkdir(parents=True)
    for i in range(100):
        (good / f"{i:03d}.png").write_bytes(b"not a png")
    (tmp_path / "data" / "test" / "good" / "x.png").write_bytes(b"not a png")
    res = RUNNER.invoke(backtest_cli.backtest_app, ["images", "--data", str(tmp_path / "data")])
    assert res.exit_code != 0
    message = str(res.exception)
    assert "25 held-out" in message and "--calibration-fraction (calibration_fraction=) to 0.42" in message
    assert "--target-far (target_far=) to 0.4" in message and "at least 168" in message
    from linewatch.cli import train as train_cli

    res = RUNNER.invoke(train_cli.train_app, ["frames", "--data", str(tmp_path / "data"), "--sku", "s",
                                              "--preset", "accurate"])
    assert res.exit_code != 0
    assert "--calibration-fraction" in str(res.exception)
