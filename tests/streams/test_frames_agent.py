"""The frames path end to end through the real broker, a real worker and the real database."""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from PIL import Image

from linewatch.detectors.bundle import Scope
from linewatch.producers.frames import CameraFrame, produce_frames
from linewatch.schemas.codec import decode, encode_envelope
from linewatch.schemas.frame_rows import FrameHeatmapRow
from linewatch.schemas.messages import FrameMeta, Score
from linewatch.schemas.rows import columns
from linewatch.simulation.frames import render_batch
from linewatch.storage.model_registry import ModelCache
from linewatch.training import train_and_register
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SIZE = 64
SOURCE_SKU = "bracket-a"  # what the frames look like; the model is registered under a per-run SKU name


@pytest.fixture(scope="module")
def sku() -> str:
    return f"it-frames-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def trained(settings, database_url, sku):
    good = render_batch(SOURCE_SKU, n=40, size=SIZE, seed=0)[0]
    model, _ = train_and_register(good, modality="frames", scope=Scope(sku=sku), database_url=database_url,
                                  model_dir=settings.model_dir, target_far=0.5, calibration_fraction=0.6,
                                  detector_params={"image_size": SIZE}, seed=0)
    return model


@pytest.fixture(scope="module")
def frames_worker(request, trained, settings):
    """The session worker, once it has seen the model: it loads models when it gets its partitions
    and then every ``model_refresh_s``, and a frame that arrives before its model is unscored."""
    proc = request.getfixturevalue("worker")
    time.sleep(settings.model_refresh_s + 0.5)  # the running worker's next look at model_versions
    return proc


def _frames(asset: str, sku: str, n: int, *, seed: int, defect_from: int | None = None) -> list[CameraFrame]:
    """``n`` good test frames; from index ``defect_from`` on, each with a bright square at x 30-50, y 10-30."""
    images = render_batch(SOURCE_SKU, n=n, size=SIZE, seed=seed, split="test")[0].copy()
    if defect_from is not None:
        images[defect_from:, 10:30, 30:50] = 255
    t0 = datetime(2026, 6, 1, tzinfo=UTC) + timedelta(days=seed)
    return [CameraFrame(asset, "cam-1", sku, f"part-{i}", t0 + timedelta(seconds=i), img)
            for i, img in enumerate(images)]


def _count(database_url: str, sql: str, *params) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def _reader(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def test_heatmap_row_model_matches_the_table(database_url):
    with psycopg.connect(database_url) as conn:
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'frame_heatmaps' "
            "ORDER BY ordinal_position")]
    assert list(columns(FrameHeatmapRow)) == [c for c in cols if c != "written_at"]


def test_frames_become_scores_heatmaps_and_messages(frames_worker, trained, sku, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    frames = _frames(asset, sku, 10, seed=1, defect_from=6)
    produce_frames(bootstrap, frames[:4], encoding="png")
    produce_frames(bootstrap, frames[4:7], encoding="jpeg")
    produce_frames(bootstrap, frames[7:], encoding="raw")
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 10, database_url) == 10
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT part_id, modality, detector, model_version, is_anomaly, top_feature, explanation "
            "FROM scores WHERE asset_id = %s", (asset,)).fetchall()
        heat = conn.execute(
            "SELECT part_id, box_x0, box_y0, box_x1, box_y1, thumbnail, raw_score >= peak_value "
            "FROM frame_heatmaps WHERE asset_id = %s", (asset,)).fetchall()
        reader_can = conn.execute("SELECT has_table_privilege('linewatch_reader', 'frame_heatmaps', 'SELECT'), "
                                  "has_table_privilege('linewatch_reader', 'frame_heatmaps', 'INSERT')").fetchone()
    by_part = {r[0]: r for r in rows}
    assert {r[1] for r in rows} == {"frames"} and {r[2] for r in rows} == {"patchcore"}
    assert {r[3] for r in rows} == {trained.version}
    assert all(by_part[f"part-{i}"][4] for i in range(6, 10)), "frames with the square must alarm"
    assert all(r[5].startswith("region ") and r[6][0]["name"] == r[5] for r in rows)
    # one heat-map row per alarm, and the square's centre (40, 20) is inside the hot box
    assert {h[0] for h in heat} == {r[0] for r in rows if r[4]}
    for part, x0, y0, x1, y1, thumb, peak_ok in heat:
        assert peak_ok and Image.open(io.BytesIO(bytes(thumb))).size == (32, 32)
        if part in {f"part-{i}" for i in range(6, 10)}:
            assert x0 <= 40 < x1 and y0 <= 20 < y1
    assert reader_can == (True, False)

    consumer = _reader(bootstrap, "scores")
    seen: dict[str, Score] = {}
    for _ in range(30):
        for m in consumer.consume(500, 1.0):
            if m.error() is None and m.key() == asset.encode():
                s = decode(m.value(), Score)
                seen[s.part_id] = s
        if len(seen) == 10:
            break
    consumer.close()
    assert set(seen) == set(by_part)
    assert all(s.modality == "frames" and s.event_id for s in seen.values())
    assert all(seen[p].is_anomaly == by_part[p][4] for p in seen)


def test_garbage_goes_to_deadletters_and_scoring_continues(frames_worker, trained, sku, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    frames = _frames(asset, sku, 4, seed=2)
    meta = FrameMeta(asset_id=asset, camera="cam-1", sku=sku, part_id="broken", ts=datetime(2026, 6, 9, tzinfo=UTC),
                     encoding="png", width=SIZE, height=SIZE, channels=3)
    garbage = [b"\x00\x01 garbage " + uuid.uuid4().bytes,
               encode_envelope(meta, b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes)]  # a PNG that is not one
    produce_frames(bootstrap, frames[:2])
    produce_frames(bootstrap, frames[2:], extra=garbage)
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 4, database_url) == 4
    with psycopg.connect(database_url) as conn:
        for _ in range(100):
            rows = conn.execute("SELECT source_topic, reason, payload FROM deadletters WHERE payload = ANY(%s)",
                                (garbage,)).fetchall()
            if len(rows) == 2:
                break
            time.sleep(0.2)
    assert len(rows) == 2 and {r[0] for r in rows} == {"frames"}
    reasons = " | ".join(r[1] for r in rows)
    assert "not a linewatch envelope" in reasons and "cannot decode png frame" in reasons
    assert frames_worker.poll() is None, "the worker must survive bad frames"


def test_frames_without_a_model_are_unscored_not_dead_lettered(frames_worker, trained, sku, bootstrap,
                                                               database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    unknown = f"no-model-{uuid.uuid4().hex[:6]}"
    orphans = _frames(asset, unknown, 3, seed=3)
    marker = _frames(asset, sku, 1, seed=4)  # same asset, same partition: scored after the orphans
    before = _count(database_url, "SELECT count(*) FROM deadletters WHERE source_topic = 'frames'")
    produce_frames(bootstrap, [*orphans, *marker])
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 1, database_url) == 1
    assert _count(database_url, "SELECT count(*) FROM scores WHERE sku = %s", unknown) == 0
    assert _count(database_url, "SELECT count(*) FROM deadletters WHERE source_topic = 'frames'") == before
    log = Path(frames_worker.log_path).read_text(errors="replace")
    assert f"{unknown}/cam-1" in log and "not scored" in log


def test_cache_prefers_the_camera_model_and_follows_deactivation(settings, database_url):
    sku = f"it-cache-{uuid.uuid4().hex[:6]}"
    good = render_batch(SOURCE_SKU, n=30, size=SIZE, seed=5)[0]
    kw = dict(modality="frames", database_url=database_url, model_dir=settings.model_dir, target_far=0.5,
              calibration_fraction=0.7, detector_params={"image_size": SIZE})
    any_cam, _ = train_and_register(good, scope=Scope(sku=sku), **kw)
    cam, ref = train_and_register(good, scope=Scope(sku=sku, camera="cam-7"), seed=1, **kw)
    assert ref.model_id == f"frames:*:{sku}:cam-7:patchcore" and Path(ref.artifact_path).is_dir()
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT modality, scope_asset, scope_sku, scope_camera, detector, calibration, n_samples "
                           "FROM model_versions WHERE model_id = %s AND version = %s",
                           (ref.model_id, ref.version)).fetchone()
    assert row[:5] == ("frames", "*", sku, "cam-7", "patchcore")
    assert row[5]["target_far"] == 0.5 and "reference" not in row[5] and row[6] == 30
    cache = ModelCache(database_url=database_url, modalities=("frames",))
    cache.refresh(force=True)

    def model(sku: str, camera: str):
        found = cache.models_for("frames", "any-asset", sku, camera)
        return found[0] if found else None

    assert model(sku, "cam-7").version == cam.version
    assert model(sku, "cam-1").version == any_cam.version
    assert model("some-other-sku", "cam-7") is None
    assert model(sku, "cam-7").detector.backbone is model(sku, "cam-1").detector.backbone
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE model_versions SET active = false WHERE model_id = %s", (ref.model_id,))
    changed = cache.refresh(force=True)
    assert any("deactivated" in c for c in changed)
    assert model(sku, "cam-7").version == any_cam.version
    saved = json.loads(Path(ref.artifact_path, "bundle.json").read_text())
    assert saved["scope"]["camera"] == "cam-7" and saved["modality"] == "frames"
