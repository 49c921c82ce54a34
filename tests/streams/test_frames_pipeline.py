"""The frames batch processor without Kafka: what the agent persists and publishes for a batch."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from linewatch.detectors.bundle import ANY, Scope
from linewatch.producers.frames import CameraFrame, encode_frame
from linewatch.schemas.codec import decode, decode_frame, encode_envelope
from linewatch.schemas.frame_rows import FrameHeatmapRow, UnscoredFrameRow
from linewatch.schemas.messages import FrameMeta, Score
from linewatch.schemas.rows import DeadLetterRow, ScoreRow
from linewatch.simulation.frames import render_batch
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.frames_pipeline import HEATMAPS_ALL, ScoringPool, decode_image, score_frames_batch
from linewatch.streams.messages import RawMessage
from linewatch.training import fit_model

SIZE = 64
SKU = "bracket-a"
T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def good():
    return render_batch(SKU, n=40, size=SIZE, seed=0)[0]


@pytest.fixture(scope="module")
def models(good):
    """One any-camera model for the SKU and one for camera ``cam-2`` (another seed: another version)."""
    cache = ModelCache(database_url=None, modalities=("frames",))
    for camera, seed in ((ANY, 0), ("cam-2", 1)):
        cache.add(fit_model(good, modality="frames", scope=Scope(sku=SKU, camera=camera), target_far=0.5,
                            calibration_fraction=0.6, detector_params={"image_size": SIZE}, seed=seed))
    return cache


@pytest.fixture(scope="module")
def test_frames():
    """Four good frames and four with a bright 20x20 square at (x=30..50, y=10..30)."""
    frames = render_batch(SKU, n=8, size=SIZE, seed=0, split="test")[0].copy()
    frames[4:, 10:30, 30:50] = 255
    return frames


def frame(image, i, *, camera="cam-1", sku=SKU, asset="a1"):
    return CameraFrame(asset, camera, sku, f"p{i}", T0 + timedelta(seconds=i), image)


def msgs(payloads):
    return [RawMessage("frames", 0, i, b"a1", p) for i, p in enumerate(payloads)]


def test_frames_become_scores_heatmaps_and_messages(models, test_frames):
    payloads = [encode_frame(frame(img, i), ("png", "jpeg", "raw")[i % 3]) for i, img in enumerate(test_frames)]
    out = score_frames_batch(msgs(payloads), models)
    assert out.counts["frames"] == 8 and len(out.scores) == 8 and len(out.deadletters) == 0 and not out.unscored
    assert all(len(r) == len(ScoreRow.model_fields) for r in out.scores)
    by_part = {r[5]: r for r in out.scores}
    assert all(by_part[f"p{i}"][12] for i in range(4, 8)), "every frame with the square must alarm"
    assert out.counts["anomalies"] == sum(r[12] for r in out.scores)
    # heat maps are drawn for the alarms only, one row each, in table column order
    assert len(out.tables[FrameHeatmapRow]) == out.counts["anomalies"]
    assert all(len(r) == len(FrameHeatmapRow.model_fields) for r in out.tables[FrameHeatmapRow])
    cols = list(FrameHeatmapRow.model_fields)
    for row in out.tables[FrameHeatmapRow]:
        rec = dict(zip(cols, row, strict=True))
        thumb = Image.open(io.BytesIO(rec["thumbnail"]))
        assert thumb.size == (32, 32) and thumb.mode == "L"
        assert rec["peak_value"] <= rec["raw_score"] + 1e-6 and rec["threshold"] > 0
        if rec["part_id"] in {"p4", "p5", "p6", "p7"}:  # the box holds the square's centre
            assert rec["box_x0"] <= 40 < rec["box_x1"] and rec["box_y0"] <= 20 < rec["box_y1"]
    # the published message is a valid Score naming the region, the same as the row
    for key, value, headers in out.score_messages:
        score = decode(value, Score)
        row = next(r for r in out.scores if r[1] == score.event_id)
        assert key == b"a1" and score.modality == "frames" and score.detector == "patchcore"
        assert headers == [("linewatch-dedup-key", f"{score.event_id}/patchcore/{score.model_version}".encode())]
        assert score.explanation[0].name == row[14] and row[14].startswith("region ")
        assert json.loads(row[15])[0]["name"] == row[14]
        assert score.threshold == pytest.approx(-np.log10(0.5))
        x0, y0, x1, y1 = (int(v) for v in row[14].removeprefix("region ").replace("-", ",").split(","))
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE


def test_lossless_encodings_score_identically(models, test_frames):
    png = encode_frame(frame(test_frames[5], 0), "png")
    raw = encode_frame(frame(test_frames[5], 0), "raw")
    jpeg = encode_frame(frame(test_frames[5], 0), "jpeg")
    scores = [score_frames_batch(msgs([p]), models).scores[0][8] for p in (png, raw, jpeg)]
    assert scores[0] == scores[1]
    assert scores[2] == pytest.approx(scores[0], rel=0.15)


def test_model_is_chosen_by_sku_and_camera(models, test_frames):
    [any_cam] = models.models_for("frames", "a1", SKU, "cam-1")
    [cam2] = models.models_for("frames", "a1", SKU, "cam-2")
    assert any_cam.version != cam2.version
    assert any_cam.scope.camera == "*" and cam2.scope.camera == "cam-2"
    payloads = [
        encode_frame(frame(test_frames[0], 0, camera="cam-1"), "png"),
        encode_frame(frame(test_frames[1], 1, camera="cam-2"), "png"),
        encode_frame(frame(test_frames[2], 2, camera="cam-2", sku="washer-b"), "png"),
        encode_frame(frame(test_frames[3], 3, camera="cam-9", sku="washer-b"), "png"),
    ]
    out = score_frames_batch(msgs(payloads), models)
    versions = {r[5]: r[7] for r in out.scores}
    assert versions == {"p0": any_cam.version, "p1": cam2.version}
    # frames of a SKU without a model are counted, not dead-lettered: the frame itself is fine
    assert out.counts["frames"] == 4 and len(out.deadletters) == 0
    assert out.unscored == {"washer-b/cam-2": 1, "washer-b/cam-9": 1}
    unscored = out.tables[UnscoredFrameRow]
    assert [r[5] for r in unscored] == ["p2", "p3"] and all("no image model" in r[-1] for r in unscored)


def test_frames_without_a_model_are_still_decoded_and_garbage_is_dead_lettered(models, test_frames):
    good = encode_frame(frame(test_frames[0], 0, sku="washer-b"), "png")
    meta, _ = decode_frame(good)
    corrupt = encode_envelope(meta.model_copy(update={"part_id": "bad"}), b"\x89PNG not really a png")
    out = score_frames_batch(msgs([good, corrupt]), models)
    assert not out.scores and len(out.tables[UnscoredFrameRow]) == 1
    assert [d.offset for d in out.deadletters.items] == [1] and "cannot decode png" in out.deadletters.items[0].reason


def _meta(**kw):
    base = dict(asset_id="a1", camera="cam-1", sku=SKU, part_id="px", ts=T0, encoding="png",
                width=SIZE, height=SIZE, channels=3)
    base.update(kw)
    return FrameMeta(**base)


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_frames_become_dead_letters_and_the_rest_is_scored(models, test_frames):
    good_png = _png(test_frames[0])
    bad = [
        b"\x00\x01 not an envelope",
        encode_envelope(_meta(part_id="trunc"), good_png[: len(good_png) // 2]),  # undecodable PNG
        encode_envelope(_meta(part_id="size", width=SIZE + 8), good_png),  # header disagrees with the image
        encode_envelope(_meta(part_id="fmt", encoding="jpeg"), good_png),  # says JPEG, is PNG
        encode_envelope(_meta(part_id="gray", channels=1), good_png),  # says grayscale, is colour
        encode_envelope(_meta(part_id="tiny", encoding="raw", width=4, height=4, channels=1), bytes(16)),
        encode_envelope(_meta(part_id="short", encoding="raw"), bytes(10)),
    ]
    good = [encode_frame(frame(test_frames[1], 1), "png"), encode_frame(frame(test_frames[2], 2), "raw")]
    out = score_frames_batch(msgs([good[0], *bad, good[1]]), models)
    assert len(out.scores) == 2 and {r[5] for r in out.scores} == {"p1", "p2"}
    letters = sorted(out.deadletters.items, key=lambda d: d.offset)
    assert [d.offset for d in letters] == list(range(1, 8))
    reasons = [d.reason for d in letters]
    assert "not a linewatch envelope" in reasons[0]
    assert "cannot decode png frame" in reasons[1]
    assert "header announces 72x64" in reasons[2]
    assert "header says jpeg but the payload is PNG" in reasons[3]
    assert "header announces 1" in reasons[4]
    assert "at least 8 a side" in reasons[5]
    assert "raw frame payload has 10 bytes" in reasons[6]
    assert all(d.payload == m for d, m in zip(letters, bad, strict=True))
    assert all(len(r) == len(DeadLetterRow.model_fields) for r in out.deadletters.rows())


def test_grayscale_and_16_bit_frames_are_scored(models, test_frames):
    gray8 = test_frames[0].mean(axis=2).astype(np.uint8)
    wide = Image.fromarray(gray8.astype(np.uint16) * 257)  # 16-bit camera, same picture
    buf = io.BytesIO()
    wide.save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    payloads = [encode_envelope(_meta(part_id="w16", channels=1), buf.getvalue()),
                encode_frame(frame(gray8, 1), "png")]
    out = score_frames_batch(msgs(payloads), models)
    assert len(out.deadletters) == 0 and len(out.scores) == 2
    assert out.scores[0][8] == pytest.approx(out.scores[1][8], rel=1e-6)


def test_heat_maps_for_all_frames_when_asked(models, test_frames):
    payloads = [encode_frame(frame(img, i), "raw") for i, img in enumerate(test_frames[:3])]
    out = score_frames_batch(msgs(payloads), models, heatmaps=HEATMAPS_ALL)
    assert len(out.tables[FrameHeatmapRow]) == 3
    with pytest.raises(ValueError, match="heatmaps="):
        score_frames_batch(msgs(payloads), models, heatmaps="some")


def test_a_scoring_pool_gives_the_same_results(models, test_frames):
    payloads = [encode_frame(frame(img, i), "png") for i, img in enumerate(test_frames)]
    serial = score_frames_batch(msgs(payloads), models)
    pool = ScoringPool(2)
    try:
        assert [len(c) for c in pool.chunks(list(range(10)))] == [5, 5]
        assert [len(c) for c in pool.chunks(list(range(7)))] == [7]  # too few frames for two tasks
        parallel = score_frames_batch(msgs(payloads), models, pool=pool)
    finally:
        pool.close()
    # onnxruntime picks kernels by batch size: the same frames in chunks of 4 agree to float32 precision
    assert [r[:8] + r[12:15] for r in parallel.scores] == [r[:8] + r[12:15] for r in serial.scores]
    assert [r[8] for r in parallel.scores] == pytest.approx([r[8] for r in serial.scores], rel=1e-5)
    maps = [[r[:10] + r[13:19] for r in out.tables[FrameHeatmapRow]] for out in (parallel, serial)]
    assert maps[0] == maps[1]


def test_large_jpeg_is_decoded_reduced_and_located_in_frame_pixels(models, test_frames):
    big = np.repeat(np.repeat(test_frames[5], 4, axis=0), 4, axis=1)  # 256x256, the square at x 120-200, y 40-120
    payload = encode_frame(frame(big, 0), "jpeg")
    meta = decode(json.dumps({"asset_id": "a1", "camera": "c", "part_id": "p", "ts": "2026-01-01T00:00:00Z",
                              "encoding": "jpeg", "width": 256, "height": 256}).encode(), FrameMeta)
    _, body = decode_frame(payload)
    assert decode_image(meta, body, min_size=(SIZE, SIZE)).shape == (SIZE, SIZE, 3)  # 1/4 DCT scale
    assert decode_image(meta, body).shape == (256, 256, 3)
    out = score_frames_batch(msgs([payload]), models)
    assert out.scores[0][12], "the square must alarm at any frame size"
    x0, y0, x1, y1 = (int(v) for v in out.scores[0][14].removeprefix("region ").replace("-", ",").split(","))
    assert x0 <= 160 < x1 and y0 <= 80 < y1 and x1 <= 256 and y1 <= 256
    assert out.tables[FrameHeatmapRow][0][8:10] == (256, 256)


def test_alarm_frames_keep_their_pooled_features_and_a_sample_of_the_rest(models, test_frames):
    from linewatch.schemas.frame_rows import FrameFeatureRow
    from linewatch.streams.frames_pipeline import FEATURE_SAMPLE_EVERY, keeps_features

    frames = [frame(img, i) for i, img in enumerate(test_frames)]
    out = score_frames_batch(msgs([encode_frame(f, "raw") for f in frames]), models)
    flagged = {r[1]: r[12] for r in out.scores}
    kept = {r[1]: r for r in out.tables[FrameFeatureRow]}
    assert set(kept) == {e for e, a in flagged.items() if keeps_features(e, a)}
    assert all(flagged[e] for e in kept if e.int % FEATURE_SAMPLE_EVERY)  # apart from the sample, only alarms
    assert len(kept) >= 4  # the four frames with the square
    model = models.models_for("frames", "a1", SKU, "cam-1")[0]
    pooled = model.detector.pooled_features(test_frames)
    by_event = {r[1]: i for i, r in enumerate(out.scores)}
    for eid, row in kept.items():
        assert row[7] == flagged[eid] and len(row[8]) == 2 * model.detector.feature_dim_
        np.testing.assert_allclose(row[8], pooled[by_event[eid]], rtol=1e-5, atol=1e-6)
    assert all(r[-5] is None for r in out.scores)  # no classifier for this scope: no defect class
