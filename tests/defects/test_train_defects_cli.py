"""`linewatch train defects` on a small image folder and on CSV tables, against the real database."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.defects.classifier import GOOD
from linewatch.defects.registry import DETECTOR

pytestmark = pytest.mark.integration

SIDE = 64


def _env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path), "COLUMNS": "200"}


def _frame(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A textured gray part; a scratch is a bright diagonal line, a spot a dark disc, somewhere on it."""
    img = rng.normal(128, 12, (SIDE, SIDE)).clip(0, 255)
    r, c = rng.integers(16, SIDE - 16, size=2)
    if kind == "scratch":
        for k in range(-10, 10):
            img[r + k // 2, c + k] = 250
    elif kind == "spot":
        yy, xx = np.mgrid[:SIDE, :SIDE]
        img[(yy - r) ** 2 + (xx - c) ** 2 < 20] = 20
    return img.astype(np.uint8)


def _image_set(root: Path, *, n_train: int = 40, n_test: int = 10) -> Path:
    """An MVTec-layout set: train/good for the anomaly model, test/<class> for the classifier, one corrupt file."""
    rng = np.random.default_rng(7)
    for folder, kind, n in [("train/good", GOOD, n_train), ("test/good", GOOD, n_test),
                            ("test/scratch", "scratch", n_test), ("test/spot", "spot", n_test)]:
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_frame(rng, kind)).save(root / folder / f"{i:03d}.png")
    (root / "test" / "spot" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


def test_an_image_folder_trains_registers_and_reads_through_the_skus_model(database_url, tmp_path):
    data = _image_set(tmp_path / "set")
    sku = f"disc-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "figures.json"
    runner = CliRunner()
    first = runner.invoke(app, ["train", "defects", "--data", str(data), "--sku", sku, "--image-size", str(SIDE),
                                "--target-far", "0.25", "--json", str(out)], env=_env(database_url, tmp_path))
    assert first.exit_code == 0, first.output
    # No image model for the SKU yet: one is fitted on train/good and registered with the classifier.
    assert "PatchCore fitted on 40 good images" in first.output and "broken.png" in first.output
    figures = json.loads(out.read_text())
    for key in ("per_class", "macro_f1", "accuracy", "unknown_rate", "confusion", "unknown_below", "learning_curve",
                "model_version"):
        assert key in figures
    assert set(figures["per_class"]) == {GOOD, "scratch", "spot"} and figures["per_class"]["spot"]["n"] == 10
    assert figures["n_skipped_files"] == 1 and figures["forced"]["macro_f1"] > 0.8
    assert figures["features_from"]["registered"] is True
    assert [p["size"] for p in figures["learning_curve"]] == [5, None]
    assert "confusion" in first.stdout and "learning curve" in first.stdout
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT detector, version FROM model_versions WHERE scope_sku = %s AND active",
                                 (sku,)).fetchall())
    assert rows[DETECTOR] == figures["model_version"] and "patchcore" in rows

    # Now the SKU has an image model: the next classifier reads the folder through it, as the stream will.
    second = runner.invoke(app, ["train", "defects", "--data", str(data), "--sku", sku, "--no-register",
                                 "--no-curve"], env=_env(database_url, tmp_path))
    assert second.exit_code == 0, second.output
    assert f"registry's champion for SKU {sku} ({rows['patchcore']})" in " ".join(second.output.split())
    assert "not registered" in second.output
    with psycopg.connect(database_url) as conn:
        (saved,) = conn.execute("SELECT artifact_path FROM model_versions WHERE scope_sku = %s AND detector = "
                                "'patchcore'", (sku,)).fetchone()
    from_dir = runner.invoke(app, ["train", "defects", "--data", str(data), "--from-model", saved, "--no-register",
                                   "--no-curve", "--json", str(out)], env=_env(database_url, tmp_path))
    assert from_dir.exit_code == 0, from_dir.output
    again = json.loads(out.read_text())
    assert again["features_from"]["version"] == rows["patchcore"]
    assert again["forced"] == figures["forced"]  # the same model, the same features, the same figures
    refused = runner.invoke(app, ["train", "defects", "--data", str(data), "--sku", sku, "--fit-on",
                                  str(data / "train" / "good")], env=_env(database_url, tmp_path))
    assert refused.exit_code != 0 and "drop --fit-on" in str(refused.exception)


def _table(path: Path, rows: list[list[object]], header: list[str]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_a_csv_with_a_class_column_trains_an_spc_classifier(database_url, tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for label, shift in [("ok", 0.0), ("", 0.0), ("Burr", 3.0), ("crack", -3.0)]:
        for _ in range(15):
            bore, runout = rng.normal(shift, 1.0), rng.normal(-shift / 2, 1.0)
            rows.append([f"P-{len(rows)}", bore, runout, label])
    path = _table(tmp_path / "parts.csv", rows, ["part_id", "bore", "runout", "defect_class"])
    asset = f"press-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "spc.json"
    result = CliRunner().invoke(app, ["train", "defects", "--data", str(path), "--asset", asset, "--json", str(out),
                                      "--no-curve"], env=_env(database_url, tmp_path))
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    # "ok" and the empty class both mean good; class names are lower-cased.
    assert {c: v["n"] for c, v in figures["per_class"].items()} == {"burr": 15, "crack": 15, GOOD: 30}
    assert figures["modality"] == "spc" and figures["forced"]["macro_f1"] > 0.8
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT modality, feature_names, calibration->'classes' FROM model_versions "
                           "WHERE scope_asset = %s AND detector = %s", (asset, DETECTOR)).fetchone()
    assert row == ("spc", ["bore", "runout"], ["burr", "crack", GOOD])

    signals = _table(tmp_path / "windows.csv", [[r[1], r[2], r[3] or "none"] for r in rows],
                     ["vib.rms", "vib.kurtosis", "class"])
    measured = CliRunner().invoke(app, ["train", "defects", "--data", str(signals), "--no-register", "--no-curve",
                                        "--json", str(out)], env=_env(database_url, tmp_path))
    assert measured.exit_code == 0, measured.output
    assert json.loads(out.read_text())["modality"] == "signals"

    one = _table(tmp_path / "one.csv", [*rows, ["P-x", 9.0, 9.0, "dent"]], ["part_id", "bore", "runout", "class"])
    refused = CliRunner().invoke(app, ["train", "defects", "--data", str(one), "--no-register"],
                                 env=_env(database_url, tmp_path))
    assert refused.exit_code != 0 and "dent (1)" in str(refused.exception)
    nameless = _table(tmp_path / "nameless.csv", rows, ["part_id", "bore", "runout", "kind"])
    missing = CliRunner().invoke(app, ["train", "defects", "--data", str(nameless), "--no-register"],
                                 env=_env(database_url, tmp_path))
    assert missing.exit_code != 0 and "--class-column" in str(missing.exception)


def test_from_labels_trains_on_the_confirmed_dispositions(database_url, tmp_path):
    from linewatch.simulation.confirmations import confirm_flagged
    from tests.defects.test_label_store import _frames

    sku = f"lbl-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url) as conn:
        truth = _frames(conn, sku, ["scratch"] * 22 + ["spot"] * 21 + [GOOD] * 3)
        confirm_flagged(conn, truth)
        _frames(conn, sku, [GOOD] * 30, flagged=False, start=100)
    out = tmp_path / "labels.json"
    try:
        result = CliRunner().invoke(app, ["train", "defects", "--from-labels", "--modality", "frames", "--sku", sku,
                                          "--no-curve", "--json", str(out)], env=_env(database_url, tmp_path))
        assert result.exit_code == 0, result.output
        figures = json.loads(out.read_text())
        assert {c: v["n"] for c, v in figures["per_class"].items()} == {"scratch": 22, "spot": 21, GOOD: 25}
        assert figures["forced"]["macro_f1"] > 0.9 and figures["features_from"] == {"source": "label store"}
        with psycopg.connect(database_url) as conn:
            model_id = conn.execute("SELECT model_id FROM model_versions WHERE version = %s",
                                    (figures["model_version"],)).fetchone()[0]
        assert model_id == f"frames:*:{sku}:{DETECTOR}"
        needs = CliRunner().invoke(app, ["train", "defects", "--from-labels", "--sku", sku],
                                   env=_env(database_url, tmp_path))
        assert needs.exit_code != 0 and "--modality" in str(needs.exception)
    finally:
        with psycopg.connect(database_url) as conn:
            conn.execute("DELETE FROM dispositions WHERE event_id = ANY(%s)", (list(truth),))
            for table in ("scores", "frame_features"):
                conn.execute(f"DELETE FROM {table} WHERE sku = %s", (sku,))
