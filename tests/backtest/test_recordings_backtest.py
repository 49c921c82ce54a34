"""``linewatch backtest signals``: recordings written as real WAV, NPY and CSV files, through the live framing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from typer.testing import CliRunner

from linewatch.backtest.recordings import run_recordings_backtest
from linewatch.cli import app
from linewatch.errors import ConfigError, DataError
from linewatch.signals.recordings import read_recording, recording_messages
from linewatch.simulation.signals import NOMINAL_SHAFT_HZ, write_recording_dataset

RATE = 10_000.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 good training recordings, 20 good and 8 outer-race test recordings of 8 s vibration (NPY)."""
    root = tmp_path_factory.mktemp("recordings")
    write_recording_dataset(root, n_train=60, n_test_good=20, conditions=("outer_race",), n_test_per_condition=8,
                            seconds=8.0, rate=RATE, severity=0.3, sensors=("vibration",), seed=0)
    return root


def test_a_bearing_fault_is_found_and_good_recordings_stay_quiet(dataset):
    r = run_recordings_backtest(dataset, sample_rate=RATE, window_s=1.0, target_far=0.01)
    assert r["auroc_level"] == "window" and r["detector"] == "robust_mahalanobis"
    assert r["n_train"] == 60 * 8 and r["n_test"] == 28 * 8 and r["n_test_recordings"] == 28
    fault = r["per_condition"]["outer_race"]
    assert fault["auroc"] > 0.95 and fault["recall"] > 0.8 and fault["recording_recall"] == 1.0
    assert r["far"] == r["per_condition"]["good"]["alarm_rate"] <= 0.05  # 1 % target on 160 good windows
    assert r["recording_auroc"] > 0.95
    assert not r["envelope_features"]


def test_the_shaft_speed_adds_envelope_features(dataset):
    r = run_recordings_backtest(dataset, sample_rate=RATE, window_s=1.0, speed_hz=NOMINAL_SHAFT_HZ)
    assert r["envelope_features"] and r["n_features"] > 14
    assert r["per_condition"]["outer_race"]["auroc"] > 0.95


def test_a_lagged_detector_scores_each_recording_as_one_sequence(dataset):
    r = run_recordings_backtest(dataset, sample_rate=RATE, window_s=1.0, detector="dynamic_pca")
    assert r["detector"] == "dynamic_pca" and r["n_warmup_windows"] == 28 * 2  # lags=2 per recording
    assert r["n_test"] == 28 * 6 and r["per_condition"]["outer_race"]["auroc"] > 0.95


def test_options_the_header_cannot_hold_are_refused_by_name(dataset):
    with pytest.raises(ConfigError, match="--detector 'nope'"):
        run_recordings_backtest(dataset, sample_rate=RATE, detector="nope")
    with pytest.raises(ConfigError, match="--speed-hz"):
        run_recordings_backtest(dataset, sample_rate=RATE, speed_hz=-3.0)
    with pytest.raises(ConfigError, match="--sample-rate"):
        run_recordings_backtest(dataset, sample_rate=0.0)


def _wav_dataset(root: Path, rate: int = 8000) -> Path:
    rng = np.random.default_rng(0)
    for folder, n, amp in (("train/good", 30, 0.05), ("test/good", 3, 0.05), ("test/loud", 3, 0.15),
                           ("test/clipped", 2, 0.6)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            x = amp * rng.normal(size=(rate * 8, 2))
            wavfile.write(root / folder / f"{i}.wav", rate, (x * 2**15).clip(-32768, 32767).astype(np.int16))
    return root


def test_the_command_reads_wav_files_and_writes_the_shared_keys(tmp_path):
    data = _wav_dataset(tmp_path / "wav")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["backtest", "signals", "--data", str(data), "--sample-rate", "8000",
                                   "--window-s", "1", "--target-far", "0.05", "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    for key in ("auroc", "far", "recall", "per_condition", "detector", "n_train", "n_test", "target_far"):
        assert key in r
    assert r["sensors"] == ["ch1", "ch2"] and r["per_condition"]["loud"]["recall"] == 1.0
    # Clipped recordings fail the live quality gate: not evaluated, counted and warned about.
    clipped = r["per_condition"]["clipped"]
    assert clipped["n_quality_flagged"] == 16 and clipped["n_windows"] == 0 and clipped["recall"] is None
    assert any("clipped test window(s) failed the quality gate" in w for w in r["warnings"])
    assert "per condition" in res.output and "loud" in res.output
    # WAV samples are PCM scaled to [-1, 1).
    rec = read_recording(data / "train" / "good" / "0.wav", sample_rate=8000)
    assert rec.samples.shape == (64000, 2) and np.abs(rec.samples).max() < 1.0


def _layout(root: Path) -> Path:
    for folder in ("train/good", "test/good", "test/fault"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def test_bad_folders_and_files_are_explained(tmp_path):
    x = np.random.default_rng(2).normal(size=(2000, 2)).astype(np.float32)
    root = _layout(tmp_path / "d")
    with pytest.raises(DataError, match=r"no recordings .*train/good"):
        run_recordings_backtest(root, sample_rate=1000.0)
    with pytest.raises(ConfigError, match="train/good/ folder"):
        run_recordings_backtest(tmp_path / "nowhere", sample_rate=1000.0)
    np.save(root / "train/good/a.npy", x)
    np.save(root / "test/fault/b.npy", x)
    with pytest.raises(DataError, match="test/good"):
        run_recordings_backtest(root, sample_rate=1000.0)
    np.save(root / "test/good/c.npy", x[:, :1])
    with pytest.raises(DataError, match=r"c\.npy has 1 sensor.*same sensors"):
        run_recordings_backtest(root, sample_rate=1000.0)
    wavfile.write(tmp_path / "w.wav", 2000, x)
    with pytest.raises(ConfigError, match=r"w\.wav is recorded at 2000 Hz but --sample-rate is 1000.*rate 2000"):
        read_recording(tmp_path / "w.wav", sample_rate=1000.0)
    bad = x.copy()
    bad[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"nan\.npy: 1 NaN or infinite samples \(first: sensor 'ch2', sample 7\)"):
        read_recording(tmp_path / "nan.npy", sample_rate=1000.0)
    (tmp_path / "junk.wav").write_bytes(b"not a wave file at all")
    with pytest.raises(DataError, match=r"cannot read recording .*junk\.wav"):
        read_recording(tmp_path / "junk.wav", sample_rate=1000.0)
    (tmp_path / "noheader.csv").write_text("1.0,2.0\n3.0,4.0\n")
    with pytest.raises(DataError, match=r"noheader\.csv needs a header row"):
        read_recording(tmp_path / "noheader.csv", sample_rate=1000.0)
    (tmp_path / "inf.csv").write_text("a\n1.0\ninf\n")
    with pytest.raises(DataError, match=r"inf\.csv: 1 NaN or infinite"):
        read_recording(tmp_path / "inf.csv", sample_rate=1000.0)
    short = read_recording(tmp_path / "w.wav", sample_rate=2000.0)
    with pytest.raises(DataError, match=r"fewer than one window .*--window-s"):
        recording_messages(short, asset_id="a", window_s=5.0)
    with pytest.raises(ConfigError, match="--kind"):
        recording_messages(short, asset_id="a", window_s=0.5, kind="noise")


def test_simulate_recordings_writes_a_folder_the_backtest_reads(tmp_path):
    out = tmp_path / "sim"
    res = CliRunner().invoke(app, ["simulate", "recordings", "--out", str(out), "--format", "csv", "--n-train", "2",
                                   "--n-test-good", "1", "--n-test-per-condition", "1", "--seconds", "1",
                                   "--conditions", "imbalance"])
    assert res.exit_code == 0, res.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.csv"))
    assert files == ["test/good/0000.csv", "test/imbalance/0000.csv", "train/good/0000.csv", "train/good/0001.csv"]
    rec = read_recording(out / "test" / "imbalance" / "0000.csv", sample_rate=RATE)
    assert rec.sensors == ("vibration", "current") and rec.samples.shape == (10_000, 2)
