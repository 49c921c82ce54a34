"""`linewatch train spc` from a CSV and from a SQL query, against the real database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.writer import BatchWriter
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import score_spc_batch

pytestmark = pytest.mark.integration


class NoModels:
    def models_for(self, modality, asset_id, sku, camera="*"):
        return []


def _env(database_url, tmp_path):
    return {"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)}


def test_train_from_a_sql_query_records_the_window_and_the_version(database_url, tmp_path):
    from linewatch.schemas.codec import encode

    asset = f"sqltrain-{uuid.uuid4().hex[:6]}"
    sim = simulate_spc(n_parts=600, seed=31, fault_fraction=0.0, assets=(asset,))
    out = score_spc_batch([RawMessage("spc", 0, i, None, encode(r)) for i, r in enumerate(sim.records())],
                          NoModels())
    BatchWriter(database_url).write(out.rows())
    query = ("sql:SELECT min(ts) AS ts, "
             "max(value) FILTER (WHERE characteristic = 'bore_diameter_mm') AS bore, "
             "max(value) FILTER (WHERE characteristic = 'shaft_runout_um') AS runout "
             f"FROM spc_measurements WHERE asset_id = '{asset}' GROUP BY event_id")
    result = CliRunner().invoke(app, ["train", "spc", "--from", query, "--time-column", "ts", "--asset", asset,
                                      "--detector", "hotelling", "--target-far", "0.01"],
                                env=_env(database_url, tmp_path))
    assert result.exit_code == 0, result.output
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT feature_names, n_samples, train_start, train_end, detector FROM model_versions "
                           "WHERE scope_asset = %s", (asset,)).fetchone()
    assert row[0] == ["bore", "runout"] and row[1] == 600 and row[4] == "hotelling"
    assert row[2].replace(tzinfo=None) == sim.ts.min().astype("datetime64[us]").item()
    assert row[3] > row[2]


def test_train_from_csv_keeps_the_label_out_and_bad_input_is_explained(database_url, tmp_path):
    from linewatch.cli.simulate import write_spc_csv

    csv = tmp_path / "good.csv"
    write_spc_csv(simulate_spc(n_parts=3000, seed=32, fault_fraction=0.0), csv)
    asset = f"csvtrain-{uuid.uuid4().hex[:6]}"
    runner = CliRunner()
    ok = runner.invoke(app, ["train", "spc", "--from", str(csv), "--label-column", "fault", "--time-column", "ts",
                             "--asset", asset], env=_env(database_url, tmp_path))
    assert ok.exit_code == 0, ok.output
    with psycopg.connect(database_url) as conn:
        names = conn.execute("SELECT feature_names FROM model_versions WHERE scope_asset = %s", (asset,)).fetchone()
    assert "fault" not in names[0] and "bore_diameter_mm" in names[0]
    missing = runner.invoke(app, ["train", "spc", "--from", str(tmp_path / "nope.csv")],
                            env=_env(database_url, tmp_path))
    assert missing.exit_code != 0 and "does not exist" in str(missing.exception)


def test_train_signals_on_simulated_machines_registers_a_signals_model(database_url, tmp_path):
    asset = "machine-01"
    result = CliRunner().invoke(app, ["train", "signals", "--simulated", "--machines", "1", "--duration-s", "21600",
                                      "--asset", asset, "--detector", "dynamic_pca"],
                                env=_env(database_url, tmp_path))
    assert result.exit_code == 0, result.output
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT modality, detector, n_samples, feature_names, coverage FROM model_versions "
                           "WHERE scope_asset = %s AND modality = 'signals'", (asset,)).fetchone()
    assert row[0] == "signals" and row[1] == "dynamic_pca" and row[2] > 100
    assert all("." in name for name in row[3])  # sensor.feature
    # What the model was trained on, queryable: the asset and the hours its frames came from.
    coverage = row[4]
    assert coverage["counts"]["asset"] == {asset: row[2]} and sum(coverage["counts"]["hour"].values()) == row[2]
    both = CliRunner().invoke(app, ["train", "signals"], env=_env(database_url, tmp_path))
    assert both.exit_code != 0 and "exactly one source" in str(both.exception)


def test_a_training_query_cannot_write(database_url):
    from linewatch.errors import ConfigError
    from linewatch.loaders import load_query

    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    with pytest.raises(ConfigError, match="read-only"):
        load_query(database_url, "DELETE FROM model_versions RETURNING n_samples")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == before


def test_train_spc_reports_and_stores_what_the_data_covered(database_url, tmp_path):
    import csv

    from tests.spc_parts import FEATURES, good_rows

    asset = f"covtrain-{uuid.uuid4().hex[:6]}"
    rows = good_rows(600, 60)
    path = tmp_path / "good.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "asset_id", "shift", "lot", "machine_state", *FEATURES])
        for i, r in enumerate(rows):
            hour = 6 + i % 12  # 06-17
            w.writerow([f"2026-03-0{1 + i // 300}T{hour:02d}:{i % 60:02d}:00Z", asset, "early" if hour < 12 else "late",
                        f"L{1 + i % 3}", "running", *r])
    result = CliRunner().invoke(app, ["train", "spc", "--from", str(path), "--time-column", "ts", "--asset", asset,
                                      "--detector", "ewma", "--run-rules", "nelson"],
                                env=_env(database_url, tmp_path))
    assert result.exit_code == 0, result.output
    assert "training data covered (600 rows)" in result.output
    assert "early (300), late (300)" in result.output and "never 00-05, 18-23" in result.output
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coverage, artifact_path FROM model_versions WHERE scope_asset = %s",
                           (asset,)).fetchone()
    counts = row[0]["counts"]
    assert counts["asset"] == {asset: 600} and counts["lot"] == {"L1": 200, "L2": 200, "L3": 200}
    assert counts["machine_state"] == {"running": 600} and counts["hour"]["06"] == 50 and counts["hour"]["18"] == 0
    saved = json.loads((Path(row[1]) / "bundle.json").read_text())["meta"]
    assert saved["coverage"] == row[0] and saved["run_rules"]["rules"] == "nelson"
    bad = CliRunner().invoke(app, ["train", "spc", "--from", str(path), "--run-rules", "aiag"],
                             env=_env(database_url, tmp_path))
    assert bad.exit_code != 0 and "--run-rules" in str(bad.exception)
