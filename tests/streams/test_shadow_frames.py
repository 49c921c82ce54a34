"""A shadow image model beside its champion in the frames batch processor, and the frame's machine state."""

from __future__ import annotations

import dataclasses

import numpy as np

from linewatch.detectors.bundle import ANY, Scope
from linewatch.schemas.codec import decode, encode_envelope
from linewatch.schemas.frame_rows import FrameHeatmapRow
from linewatch.schemas.messages import FrameMeta, Score
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.frames_pipeline import score_frames_batch
from linewatch.training import fit_model
from tests.streams.test_frames_pipeline import SIZE, SKU, frame, good, msgs, test_frames  # noqa: F401 (fixtures)


def test_a_shadow_image_model_scores_into_shadow_scores_without_heat_maps(good, test_frames):  # noqa: F811
    cache = ModelCache(database_url=None, modalities=("frames",))
    champion = fit_model(good, modality="frames", scope=Scope(sku=SKU, camera=ANY), target_far=0.5,
                         calibration_fraction=0.6, detector_params={"image_size": SIZE}, seed=0)
    challenger = fit_model(good, modality="frames", scope=Scope(sku=SKU, camera=ANY), target_far=0.5,
                           calibration_fraction=0.6, detector_params={"image_size": SIZE}, seed=1)
    challenger = dataclasses.replace(challenger, meta={**challenger.meta, "shadow": True})
    cache.add(champion)
    cache.add(challenger)
    assert [b.version for b in cache.models_for("frames", "a1", SKU, "cam-1")] == [champion.version,
                                                                                  challenger.version]
    payloads = []
    for i, img in enumerate(test_frames):
        cam = frame(img, i)
        meta = FrameMeta(asset_id=cam.asset_id, camera=cam.camera, sku=cam.sku, part_id=cam.part_id, ts=cam.ts,
                         encoding="raw", width=img.shape[1], height=img.shape[0], channels=1 if img.ndim == 2 else 3,
                         machine_state="idle" if i % 2 else "running")
        payloads.append(encode_envelope(meta, np.ascontiguousarray(img).tobytes()))
    out = score_frames_batch(msgs(payloads), cache)
    assert len(out.scores) == len(out.shadow_scores) == len(test_frames)
    assert {r[7] for r in out.scores} == {champion.version} and {r[7] for r in out.shadow_scores} == {
        challenger.version}
    assert out.counts["anomalies"] > 0 and out.counts["shadow_anomalies"] > 0
    # Heat maps are the champion's: the frame_heatmaps key (ts, event_id) has room for one per frame.
    assert len(out.tables[FrameHeatmapRow]) == out.counts["anomalies"]
    shadow_msgs = [decode(v, Score) for _, v, _ in out.shadow_messages]
    champion_msgs = [decode(v, Score) for _, v, _ in out.score_messages]
    assert all(m.shadow for m in shadow_msgs) and not any(m.shadow for m in champion_msgs)
    states = {f"p{i}": "idle" if i % 2 else "running" for i in range(len(test_frames))}
    assert all(m.machine_state == states[m.part_id] for m in shadow_msgs + champion_msgs)
