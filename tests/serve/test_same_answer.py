"""Same input, same score: through the API, through the worker (what it stored for the published event) and replay.

The API scores with the registry's models (registered here, scoped to this run's asset and SKU),
publishes each inspected event to its topic through the spool, and the session's real worker
stores it. Every score the API answered must be in ``scores`` with the same values, and a replay
of the published messages must give them again, EWMA's chart memory included.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from PIL import Image

from linewatch.defects.stream import defect_layer
from linewatch.detectors.bundle import Scope
from linewatch.replay.pipeline import ReplayPipeline
from linewatch.serve.lanes import INSPECTED_BY_HEADER, VERDICT_HEADER
from linewatch.simulation.frames import render_batch
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.messages import RawMessage
from linewatch.training import train_and_register
from tests.conftest import wait_for
from tests.serve.conftest import FRAME_SIZE, SOURCE_SKU, read_keyed, serve_settings, serving

pytestmark = pytest.mark.integration

N_PARTS = 24
N_FRAMES = 4


@pytest.fixture(scope="module")
def scope_names() -> tuple[str, str]:
    return f"api-{uuid.uuid4().hex[:6]}", f"api-sku-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def registered(settings, database_url, scope_names, good_frames):
    """An EWMA chart and a Hotelling T² for this run's asset, a PatchCore model for this run's SKU."""
    asset, sku = scope_names
    normal = simulate_spc(n_parts=1500, seed=5, fault_fraction=0.0)
    for detector in ("ewma", "hotelling"):
        train_and_register(normal.X, feature_names=normal.feature_names, detector=detector, scope=Scope(asset),
                           database_url=database_url, model_dir=settings.model_dir, target_far=0.01, seed=0)
    train_and_register(good_frames, modality="frames", scope=Scope(sku=sku), database_url=database_url,
                       model_dir=settings.model_dir, target_far=0.5, calibration_fraction=0.6,
                       detector_params={"image_size": FRAME_SIZE}, seed=0)


def _records(asset: str) -> list[dict]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sim = simulate_spc(n_parts=N_PARTS, seed=9, fault_fraction=0.3, assets=(asset,), start=start, episode_length=8)
    return [json.loads(r.model_dump_json(exclude_none=True)) for r in sim.records()]


def _png(image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_api_worker_and_replay_give_the_same_scores(worker, registered, settings, bootstrap, database_url,
                                                    scope_names, tmp_path):
    asset, sku = scope_names
    time.sleep(settings.model_refresh_s + 0.5)  # the running worker's next look at model_versions
    records = _records(asset)
    images = render_batch(SOURCE_SKU, n=N_FRAMES, size=FRAME_SIZE, seed=3, split="test")[0].copy()
    images[N_FRAMES // 2:, 10:30, 30:50] = 255  # a bright square: the model has never seen one
    answered: dict[tuple[str, str], dict] = {}
    with serving(serve_settings(tmp_path), bootstrap=bootstrap, database_url=database_url) as api:
        assert api.client.get("/readyz").status_code == 200
        served = api.client.get("/v1/models").json()["models"]
        assert {("spc", "ewma"), ("spc", "hotelling"), ("frames", "patchcore")} <= {
            (m["modality"], m["model_id"].rsplit(":", 1)[1]) for m in served
            if m["scope_asset"] == asset or m["scope_sku"] == sku}
        # One part per request for the first half (a gate station), the rest in one request.
        half = N_PARTS // 2
        bodies = [[r] for r in records[:half]] + [records[half:]]
        for body in bodies:
            r = api.client.post("/v1/inspect/spc", json=body)
            assert r.status_code == 200, r.text
            for rec in r.json()["records"]:
                assert rec["status"] == "scored", rec
                answered.update({(s["event_id"], s["detector"]): s for s in rec["scores"] if not s.get("shadow")})
        frame_ids = []
        for i, image in enumerate(images):
            r = api.client.post("/v1/inspect/frame", files={"image": ("part.png", _png(image), "image/png")},
                                data={"asset_id": asset, "camera": "cam-1", "sku": sku, "part_id": f"part-{i}"})
            assert r.status_code == 200, r.text
            view = r.json()
            assert view["verdict"] in ("pass", "reject") and (i < N_FRAMES // 2 or view["verdict"] == "reject"), view
            assert view["model_version"] and view["threshold"] > 0 and view["region"]
            frame_ids.append(view["event_id"])
            answered.update({(s["event_id"], s["detector"]): s for s in view["scores"] if not s.get("shadow")})
        deadline = time.monotonic() + 20
        while api.service.spool.events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api.service.spool.events == 0, api.service.forwarder.state()

    assert {d for _, d in answered} >= {"ewma", "hotelling", "patchcore"}
    n = wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), len(answered), database_url)
    assert n == len(answered)
    with psycopg.connect(database_url) as conn:
        stored = {(str(e), d): (raw, cal, anomalous, version) for e, d, raw, cal, anomalous, version in conn.execute(
            "SELECT event_id, detector, raw_score, calibrated_score, is_anomaly, model_version FROM scores "
            "WHERE asset_id = %s", (asset,))}
    for key, s in answered.items():
        assert stored[key] == (s["raw_score"], s["calibrated_score"], s["is_anomaly"], s["model_version"]), key

    # What was published: the producers' bytes under the producers' event ids, with the API's verdict in headers.
    published: list[RawMessage] = []
    for topic, n_events in (("spc", N_PARTS), ("frames", N_FRAMES)):
        for m in read_keyed(bootstrap, topic, asset.encode(), n_events):
            headers = dict(m.headers() or [])
            assert headers[INSPECTED_BY_HEADER].startswith(b"linewatch-serve@")
            assert "anomaly" in json.loads(headers[VERDICT_HEADER])
            published.append(RawMessage(topic, m.partition(), m.offset(), m.key(), m.value(), None))
    assert len(published) == N_PARTS + N_FRAMES

    # Replay of the published messages with the registry's models, as `linewatch replay` would.
    replay = ReplayPipeline.from_settings(ModelCache(database_url=database_url, modalities=("spc", "frames")),
                                          settings, defects=defect_layer(database_url, refresh_s=1e12))
    replay.models.refresh(force=True)
    replayed = {}
    for _, value, *_ in replay.feed(published).score_messages:
        s = json.loads(value)
        replayed[(s["event_id"], s["detector"])] = s
    replay.close()
    assert set(replayed) == set(answered)
    for key, s in answered.items():
        r = replayed[key]
        assert (r["raw_score"], r["calibrated_score"], r["is_anomaly"]) == (
            s["raw_score"], s["calibrated_score"], s["is_anomaly"]), key
    assert set(frame_ids) <= {e for e, _ in answered}
