"""`linewatch train spc --on-bad-rows`: a bad cell in a training CSV stops the command or is skipped and said."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.cli.simulate import write_spc_csv
from linewatch.simulation.spc import simulate_spc

pytestmark = pytest.mark.integration


def test_a_bad_cell_is_an_error_or_an_explicit_skip(database_url, tmp_path):
    csv = tmp_path / "good.csv"
    write_spc_csv(simulate_spc(n_parts=800, seed=33, fault_fraction=0.0), csv)
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("bore_diameter_mm")
    row = lines[7].split(",")
    row[col] = "n/a"
    lines[7] = ",".join(row)
    csv.write_text("\n".join(lines) + "\n")
    env = {"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)}
    asset = f"badrows-{uuid.uuid4().hex[:6]}"
    args = ["train", "spc", "--from", str(csv), "--label-column", "fault", "--time-column", "ts", "--asset", asset,
            "--detector", "hotelling", "--target-far", "0.01"]
    runner = CliRunner()
    failed = runner.invoke(app, args, env=env)
    assert failed.exit_code != 0
    assert "column 'bore_diameter_mm', data row 7: 'n/a' is not a number" in str(failed.exception)
    assert "--on-bad-rows skip" in str(failed.exception)
    ok = runner.invoke(app, [*args, "--on-bad-rows", "skip"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "skipped 1 row(s)" in ok.output
    with psycopg.connect(database_url) as conn:
        names, n = conn.execute("SELECT feature_names, n_samples FROM model_versions WHERE scope_asset = %s",
                                (asset,)).fetchone()
    assert "bore_diameter_mm" in names and n == 799
