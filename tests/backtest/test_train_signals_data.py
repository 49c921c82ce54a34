"""``linewatch train signals --data``: a model fitted on recordings is registered and scores live windows like them."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.detectors.bundle import ModelBundle
from linewatch.errors import ConfigError
from linewatch.schemas.codec import encode_signal
from linewatch.schemas.rows import ScoreRow
from linewatch.signals.recordings import read_recording, recording_messages
from linewatch.simulation.signals import NOMINAL_SHAFT_HZ, write_recording_dataset
from linewatch.streams.messages import RawMessage
from linewatch.streams.signals_pipeline import score_signals_batch

pytestmark = pytest.mark.integration


class Models:
    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def models_for(self, modality: str, asset_id: str, sku: str, camera: str = "*") -> list[ModelBundle]:
        return [self.bundle]


def test_train_signals_on_recordings_registers_a_model_the_agent_can_serve(database_url, tmp_path):
    data = tmp_path / "recs"
    write_recording_dataset(data, n_train=30, n_test_good=2, conditions=("outer_race",), n_test_per_condition=2,
                            seconds=8.0, rate=10_000.0, severity=0.5, fmt="npy", seed=5)
    asset = f"rectrain-{uuid.uuid4().hex[:6]}"
    env = {"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)}
    res = CliRunner().invoke(app, ["train", "signals", "--data", str(data), "--sample-rate", "10000",
                                   "--window-s", "1", "--asset", asset, "--detector", "robust_mahalanobis",
                                   "--speed-hz", str(NOMINAL_SHAFT_HZ), "--target-far", "0.01"], env=env)
    assert res.exit_code == 0, res.output
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT modality, detector, n_samples, feature_names, artifact_path FROM model_versions "
                           "WHERE scope_asset = %s", (asset,)).fetchone()
    assert row[0] == "signals" and row[1] == "robust_mahalanobis" and row[2] == 30 * 8
    assert "ch1.env_bpfo" in row[3] and any(n.startswith("ch2.") for n in row[3])
    bundle = ModelBundle.load(row[4])
    # Live windows cut like the recordings (same sensors, rate, length, with their speed) are scored.
    live = []
    for cond in ("good", "outer_race"):
        rec = read_recording(data / "test" / cond / "0000.npy", sample_rate=10_000.0, condition=cond)
        live += recording_messages(rec, asset_id=f"{asset}-{cond}", window_s=1.0, speed_hz=NOMINAL_SHAFT_HZ)
    out = score_signals_batch([RawMessage("signals", 0, i, None, encode_signal(*w)) for i, w in enumerate(live)],
                              Models(bundle))
    assert len(out.scores) == 16 and not out.problems
    col = {name: i for i, name in enumerate(ScoreRow.model_fields)}
    flags: dict[str, list[bool]] = {}
    for r in out.scores:
        flags.setdefault(r[col["asset_id"]], []).append(r[col["is_anomaly"]])
    assert sum(flags[f"{asset}-outer_race"]) > sum(flags[f"{asset}-good"])


def test_train_signals_data_needs_a_sample_rate_and_one_source(tmp_path):
    runner = CliRunner()
    env = {"LINEWATCH_DATA_DIR": str(tmp_path)}
    res = runner.invoke(app, ["train", "signals", "--data", str(tmp_path)], env=env)
    assert isinstance(res.exception, ConfigError) and "--sample-rate" in str(res.exception)
    res = runner.invoke(app, ["train", "signals", "--data", str(tmp_path), "--simulated"], env=env)
    assert isinstance(res.exception, ConfigError) and "exactly one source" in str(res.exception)
