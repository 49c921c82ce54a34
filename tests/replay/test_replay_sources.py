"""``linewatch replay`` from each source through the command line, with the real broker and database.

One asset's SPC stream goes to Kafka; the live worker scores and stores it with a model registered
for that asset. Then the replay reads it back from Kafka and from the database, through the CLI,
stores each run under its run id, and both give the live worker's scores; the live tables do not
change. A file replay of NAB's ambient temperature writes the figures the issue names, and a
file replayed ``--to-kafka`` arrives on its topic at the pace asked for.
"""

from __future__ import annotations

import csv
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.detectors.bundle import Scope
from linewatch.eval_data import NAB_DIR
from linewatch.producers.spc import produce_spc
from linewatch.replay.kafka_source import KafkaRange, kafka_history
from linewatch.schemas.topics import SPC
from linewatch.simulation.spc import simulate_spc
from linewatch.training import train_and_register
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

NAB = NAB_DIR
SCORE_FIELDS = "event_id, detector, model_version, raw_score, tail_probability, calibrated_score, is_anomaly"


def _env(settings, monkeypatch) -> None:
    monkeypatch.setenv("LINEWATCH_BROKER_URL", settings.broker_url)
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("LINEWATCH_DATA_DIR", str(settings.data_dir))


def _windows(sim, path: Path) -> Path:
    """The simulation's fault episodes as a start,end CSV (the labels a replay judges against)."""
    faulty = sim.fault != "none"
    edges = np.flatnonzero(np.diff(np.r_[0, faulty.astype(int), 0]))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start", "end"])
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            w.writerow([str(sim.ts[a]) + "Z", str(sim.ts[b - 1]) + "Z"])
    return path


def _run(args: list[str]) -> dict:
    result = CliRunner().invoke(app, ["replay", *args])
    assert result.exit_code == 0, result.output
    return result


def test_replay_from_kafka_and_from_the_database_gives_the_live_scores(worker, settings, database_url, bootstrap,
                                                                       tmp_path, monkeypatch):
    asset = f"rs-{uuid.uuid4().hex[:6]}"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    normal = simulate_spc(n_parts=2000, seed=31, fault_fraction=0.0, assets=(asset,), start=start - timedelta(days=5))
    _, ref = train_and_register(normal.X, feature_names=normal.feature_names, database_url=database_url,
                                model_dir=tmp_path / "models", detector="hotelling", scope=Scope(asset=asset),
                                target_far=0.01, seed=0)
    try:
        sim = simulate_spc(n_parts=400, seed=32, fault_fraction=0.3, assets=(asset,), start=start, episode_length=40)
        time.sleep(2.0)  # the worker's model cache refreshes every second
        produce_spc(bootstrap, sim.records())
        # The asset's own detector's rows: a model of the whole plant left active by another test may
        # score the asset too, and a count of every row would reach len(sim) half-way through.
        assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND detector = 'hotelling'", (asset,),
                        len(sim), database_url) == len(sim)
        with psycopg.connect(database_url) as conn:
            live = conn.execute(f"SELECT {SCORE_FIELDS} FROM scores WHERE asset_id = %s AND detector = 'hotelling' "
                                "ORDER BY event_id", (asset,)).fetchall()
            live_count = conn.execute("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,)).fetchone()[0]
        assert len(live) == len(sim)
        _env(settings, monkeypatch)
        labels = _windows(sim, tmp_path / "windows.csv")
        since, until = (start - timedelta(minutes=1)).isoformat(), (start + timedelta(days=30)).isoformat()
        runs = {}
        for source, extra in (("kafka", ["--topics", "spc"]), ("database", ["--since", since, "--until", until])):
            out = tmp_path / f"{source}.json"
            _run(["--source", source, "--asset", asset, *extra, "--labels", str(labels), "--json", str(out)])
            runs[source] = json.loads(out.read_text())
        with psycopg.connect(database_url) as conn:
            for source, doc in runs.items():
                again = conn.execute(f"SELECT {SCORE_FIELDS} FROM replay.scores WHERE run_id = %s AND asset_id = %s "
                                     "AND detector = 'hotelling' ORDER BY event_id", (doc["run_id"], asset)).fetchall()
                assert again == live, source  # bit for bit: raw, tail probability, calibrated score, verdict
                summary = conn.execute("SELECT finished_at, counts->>'scores' FROM replay.run_summary "
                                       "WHERE run_id = %s", (doc["run_id"],)).fetchone()
                assert summary[0] is not None and int(summary[1]) >= len(sim)
            # the live tables never change
            assert conn.execute("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,)).fetchone()[0] \
                == live_count
        for source, doc in runs.items():
            series = next(v for k, v in doc["per_series"].items() if "hotelling" in k)
            assert series["windows_detected"] >= 0.8 * series["n_windows"] > 0, source
            assert series["recall"] > 0.3 and series["far"] < 0.05, (source, series)
            assert doc["thresholds"] and doc["thresholds"][0]["detector"] == "hotelling"

        # --apply registers the recommended threshold as a new (shadow) version of the asset's model
        _run(["--source", "database", "--asset", asset, "--since", since, "--until", until, "--labels",
              str(labels), "--recommend-far", "0.02", "--apply", "--shadow", "--actor", "replay-test", "--no-store"])
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT version, shadow, calibration->>'threshold' FROM model_versions "
                                "WHERE scope_asset = %s AND detector = 'hotelling' ORDER BY created_at",
                                (asset,)).fetchall()
        assert len(rows) == 2 and rows[1][1] is True
    finally:
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE model_versions SET active = false WHERE scope_asset = %s", (asset,))
    assert ref.version


def test_replay_of_a_nab_file_writes_the_nab_figures_and_a_report(tmp_path, monkeypatch):
    monkeypatch.delenv("LINEWATCH_DATABASE_URL", raising=False)
    data = NAB / "data" / "realKnownCause" / "ambient_temperature_system_failure.csv"
    out, page = tmp_path / "nab.json", tmp_path / "nab.html"
    _run(["--source", "file", "--data", str(data), "--time-column", "timestamp", "--train-until", "2014-01-01",
          "--labels", str(NAB / "labels" / "combined_windows.json"), "--json", str(out), "--report", str(page)])
    doc = json.loads(out.read_text())
    for key in ("nab_score_standard", "nab_score_low_fp", "nab_score_low_fn", "f1", "far", "median_delay_s"):
        assert key in doc, key
    assert doc["n_windows"] >= 1 and doc["stored"] is False
    assert -100.0 <= doc["nab_score_low_fp"] <= doc["nab_score_standard"] <= 100.0
    assert doc["counts"]["records"] == doc["counts"]["messages"] > 3000
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "fused alerts" in html and "<script" not in html
    # the same file, replayed again, gives the same figures (fit, scores and fusion are seeded; only the
    # fitted model's version, a time stamp, differs)
    again = tmp_path / "again.json"
    _run(["--source", "file", "--data", str(data), "--time-column", "timestamp", "--train-until", "2014-01-01",
          "--labels", str(NAB / "labels" / "combined_windows.json"), "--json", str(again)])
    second = json.loads(again.read_text())
    assert list(second["per_series"].values()) == list(doc["per_series"].values())
    assert {k: second[k] for k in ("nab_score_standard", "f1", "far")} == \
        {k: doc[k] for k in ("nab_score_standard", "f1", "far")}


def test_a_file_replayed_to_kafka_arrives_at_the_pace_asked_for(settings, bootstrap, tmp_path, monkeypatch):
    asset = f"rk-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "history.csv"
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with path.open("w") as f:
        f.write("ts,bore_mm,runout_um\n")
        for i in range(61):  # 60 s of history
            f.write(f"{(t0 + timedelta(seconds=i)).isoformat()},{25 + 0.01 * np.sin(i)},{10 + np.cos(i)}\n")
    _env(settings, monkeypatch)
    began = time.monotonic()
    _run(["--source", "file", "--data", str(path), "--time-column", "ts", "--asset", asset, "--to-kafka",
          "--speed", "20"])
    took = time.monotonic() - began
    assert took >= 2.5  # 60 s of history at 20x is 3 s of wall time
    got = list(kafka_history(bootstrap, [SPC.name], KafkaRange(assets=frozenset({asset}))))
    assert len(got) == 61
    assert [json.loads(m.value)["part_id"] for m in got] == [f"row-{i}" for i in range(61)]


def test_an_image_folder_replays_through_the_frames_pipeline_against_its_class_folders(settings, database_url,
                                                                                       tmp_path, monkeypatch):
    sku, camera = f"bracket-a-{uuid.uuid4().hex[:4]}", f"cam-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "frames"
    result = CliRunner().invoke(app, ["simulate", "frames", "--sku", "bracket-a", "--out", str(data), "--size", "128",
                                      "--n-train", "60", "--n-test-good", "20", "--n-test-per-defect", "6"])
    assert result.exit_code == 0, result.output
    _env(settings, monkeypatch)
    try:
        result = CliRunner().invoke(app, ["train", "frames", "--data", str(data), "--sku", sku, "--camera", camera,
                                          "--image-size", "128"])
        assert result.exit_code == 0, result.output
        (data / "test" / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # a corrupt frame
        out = tmp_path / "frames.json"
        _run(["--source", "file", "--data", str(data), "--sku", sku, "--camera", camera, "--asset", "cam-line",
              "--json", str(out)])
        doc = json.loads(out.read_text())
        series = next(v for k, v in doc["per_series"].items() if "patchcore" in k)
        assert series["n_labelled"] == series["n_events"] >= 20 + 6  # every scored frame judged by its folder
        assert series["auroc"] > 0.8, series
        reasons = doc["deadletter_reasons"]
        assert doc["counts"]["deadletters"] == 1 and any("png" in r.lower() for r in reasons), reasons
    finally:
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE model_versions SET active = false WHERE scope_sku = %s", (sku,))


def test_a_recordings_folder_replays_through_the_signals_pipeline(settings, database_url, tmp_path, monkeypatch):
    asset = f"rr-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "recordings"
    result = CliRunner().invoke(app, ["simulate", "recordings", "--out", str(data), "--format", "npy",
                                      "--n-train", "30", "--n-test-good", "4", "--n-test-per-condition", "3",
                                      "--seconds", "8", "--rate", "4000", "--severity", "1"])
    assert result.exit_code == 0, result.output
    _env(settings, monkeypatch)
    try:
        result = CliRunner().invoke(app, ["train", "signals", "--data", str(data), "--sample-rate", "4000",
                                          "--window-s", "0.5", "--asset", asset, "--target-far", "0.01"])
        assert result.exit_code == 0, result.output
        out = tmp_path / "recordings.json"
        _run(["--source", "file", "--data", str(data), "--sample-rate", "4000", "--window-s", "0.5", "--asset", asset,
              "--json", str(out)])
        doc = json.loads(out.read_text())
        series = next(v for k, v in doc["per_series"].items() if k.startswith(asset) and "signals/" in k)
        assert series["n_labelled"] > 0.8 * series["n_events"] > 0
        assert series["auroc"] > 0.8 and series["recall"] > 0.5, series
    finally:
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE model_versions SET active = false WHERE scope_asset = %s", (asset,))
