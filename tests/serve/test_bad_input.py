"""Ugly requests get a 4xx whose reason is the pipelines' dead-letter reason; auth, limits and the access log hold.

The reasons are compared with what the worker's own batch functions say about the same bytes
(the dead letter they would write), so the API cannot drift into a vocabulary of its own.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import time
import zlib
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from linewatch.embedded.process import free_port
from linewatch.errors import ConfigError
from linewatch.schemas.codec import encode_envelope
from linewatch.schemas.messages import FrameMeta
from linewatch.serve.server import check_bind
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.frames_pipeline import score_frames_batch
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import score_spc_batch
from tests.serve.conftest import serve_settings, serving
from tests.spc_parts import part

FIELDS = {"asset_id": "gate-1", "camera": "cam-1", "sku": "bracket-a", "part_id": "p1"}
TS = datetime(2026, 6, 1, tzinfo=UTC)
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory, ewma_bundle, frames_bundle):
    tmp = tmp_path_factory.mktemp("serve-bad")
    settings = serve_settings(tmp, serve_max_request_bytes=MAX_BODY, serve_max_image_side=1024)
    with serving(settings, bootstrap=f"127.0.0.1:{free_port()}", bundles=[ewma_bundle, frames_bundle]) as s:
        yield s


@pytest.fixture(scope="module")
def models(ewma_bundle, frames_bundle):
    cache = ModelCache(database_url=None, modalities=("spc", "frames"))
    cache.add(ewma_bundle)
    cache.add(frames_bundle)
    return cache


def _png(image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (8-bit gray) and whose pixel data is one empty chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _deadletter_reason(models, topic: str, value: bytes) -> str:
    msg = RawMessage(topic, 0, 0, b"k", value)
    out = (score_spc_batch([msg], models) if topic == "spc" else score_frames_batch([msg], models))
    assert len(out.deadletters) == 1, "the pipeline must dead-letter these bytes too"
    return out.deadletters.items[0].reason


def _frame(api, body: bytes, content_type: str = "image/png", **params):
    return api.client.post("/v1/inspect/frame", content=body, headers={"content-type": content_type},
                           params={**FIELDS, **params})


def test_a_good_frame_and_its_heatmap(api, good_frames):
    r = _frame(api, _png(good_frames[0]), heatmap="true")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "scored" and view["verdict"] in ("pass", "reject")
    png = Image.open(io.BytesIO(base64.b64decode(view["heatmap_png"])))
    assert png.format == "PNG" and view["heatmap"]["area_fraction"] >= 0
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("cut", [60, 400])
def test_truncated_png_is_refused_with_the_dead_letter_reason(api, models, good_frames, cut):
    body = _png(good_frames[1])[:cut]
    r = _frame(api, body)
    assert r.status_code in (422,), r.text
    header = {**FIELDS, "ts": TS.isoformat(), "encoding": "png", "width": 64, "height": 64, "channels": 3}
    reason = _deadletter_reason(models, "frames", encode_envelope(FrameMeta.model_validate(header), body))
    if cut > 100:  # the header is whole: the pipeline reads it and fails on the pixels, as the API does
        assert r.json()["reason"] == reason


def test_corrupt_and_foreign_images(api):
    assert _frame(api, b"\x00" * 500).status_code == 422
    gif = io.BytesIO()
    Image.new("L", (64, 64)).save(gif, format="GIF")
    r = _frame(api, gif.getvalue())
    assert r.status_code == 415 and "send PNG, JPEG or raw pixels" in r.json()["reason"]


def test_tiny_and_huge_header_images(api, models):
    r = _frame(api, _png(np.zeros((1, 1), dtype="uint8")))
    assert r.status_code == 422
    header = {**FIELDS, "ts": TS.isoformat(), "encoding": "png", "width": 1, "height": 1, "channels": 1}
    tiny = encode_envelope(FrameMeta.model_validate(header), _png(np.zeros((1, 1), dtype="uint8")))
    assert r.json()["reason"] == _deadletter_reason(models, "frames", tiny)
    for side in (2000, 20000):  # over serve_max_image_side, and a decompression bomb: refused from the header
        r = _frame(api, _png_header_only(side, side))
        assert r.status_code == 413, r.text
        assert str(side) in r.json()["reason"] or "decompression bomb" in r.json()["reason"]


def test_raw_pixels_need_their_shape_and_the_right_size(api, good_frames):
    pixels = good_frames[0].tobytes()
    assert _frame(api, pixels, "application/octet-stream", width=64, height=64, channels=3).status_code == 200
    r = _frame(api, pixels, "application/octet-stream")
    assert r.status_code == 422 and "width and height" in r.json()["reason"]
    r = _frame(api, pixels[:-1], "application/octet-stream", width=64, height=64, channels=3)
    assert r.status_code == 422 and r.json()["reason"].startswith("raw frame payload has 12287 bytes")


def test_missing_sku_wrong_type_and_content_type(api, good_frames):
    body = _png(good_frames[0])
    r = api.client.post("/v1/inspect/frame", content=body, headers={"content-type": "image/png"},
                        params={"asset_id": "gate-1", "camera": "cam-1"})
    assert r.status_code == 422 and r.json()["reason"].startswith("sku is required")
    r = api.client.post("/v1/inspect/frame", files={"image": ("p.png", body, "image/png")},
                        data={**FIELDS, "ts": "yesterday"})
    assert r.status_code == 422 and r.json()["reason"].startswith("FrameMeta failed validation: ts:")
    r = _frame(api, body, "text/plain")
    assert r.status_code == 415 and "multipart/form-data" in r.json()["reason"]
    r = _frame(api, body, width="wide")
    assert r.status_code == 422 and "width" in r.json()["reason"]


def test_spc_refusals_use_the_dead_letter_words(api, models):
    cases = [
        b'{"asset_id": "a\\u0000b", "part_id": "p", "ts": "2026-06-01T00:00:00Z", "values": {"bore_mm": 25}}',
        b'{"asset_id": "a", "part_id": "p", "ts": "2026-06-01T00:00:00Z", "values": {"bore_mm": "25"}}',
        b'{"asset_id": "a", "part_id": "p", "ts": 1780000000, "values": {"bore_mm": 25.0}}',
        b'{"asset_id": "a", "part_id": "p", "ts": "2026-06-01T00:00:00Z", "values": {"bore_mm": 25.0}, "x": 1}',
    ]
    for body in cases:
        r = api.client.post("/v1/inspect/spc", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
        assert r.json()["reason"] == _deadletter_reason(models, "spc", compact)
    garbage = b'{"asset_id": "a\x00", "values": '
    r = api.client.post("/v1/inspect/spc", content=garbage, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["reason"] == _deadletter_reason(models, "spc", garbage)
    r = api.client.post("/v1/inspect/spc", content=b"[]", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = api.client.post("/v1/inspect/spc", content=b"{}", headers={"content-type": "text/csv"})
    assert r.status_code == 415


def test_one_bad_record_refuses_the_request_whole(api):
    good = json.loads(part("gate-9", 1, (0, 0)).model_dump_json())
    r = api.client.post("/v1/inspect/spc", json=[good, {**good, "values": {}}])
    assert r.status_code == 422 and r.json()["records"][0]["index"] == 1
    assert "nothing was scored" in r.json()["reason"]


def test_a_record_lacking_what_the_model_needs_is_rejected_with_the_reason(api, models):
    rec = json.loads(part("gate-9", 2, (0, 0)).model_dump_json())
    rec["values"] = {"bore_mm": 25.0}
    r = api.client.post("/v1/inspect/spc", json=rec)
    assert r.status_code == 422
    assert r.json()["reason"] == _deadletter_reason(models, "spc", json.dumps(rec).encode())
    assert "runout_um" in r.json()["reason"]


def test_huge_bodies_are_refused_before_they_are_read(api):
    big = b"[" + b"1," * MAX_BODY + b"1]"
    r = api.client.post("/v1/inspect/spc", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "serve_max_request_bytes" in r.json()["reason"]

    def chunks():  # no Content-Length: the limit holds on the streamed body
        for _ in range(64):
            yield b"x" * 8192

    r = api.client.post("/v1/inspect/frame", content=chunks(), headers={"content-type": "image/png"},
                        params=FIELDS)
    assert r.status_code == 413


def test_access_log_is_json_without_payloads(api, caplog):
    secret = "part-with-a-secret-name"
    with caplog.at_level(logging.INFO, logger="linewatch.serve.access"):
        record = json.loads(part("gate-log", 3, (0, 0), lot=secret).model_dump_json())
        r = api.client.post("/v1/inspect/spc", json=record, headers={"x-request-id": "req-42"})
        # The server thread writes the line once the answer is on its way: it may come just after the client has it.
        deadline, line = time.monotonic() + 5.0, None
        while line is None and time.monotonic() < deadline:
            lines = [json.loads(rec.getMessage()) for rec in list(caplog.records)
                     if rec.name == "linewatch.serve.access"]
            line = next((x for x in lines if x["request_id"] == "req-42"), None)
            time.sleep(0.02)
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    assert line is not None, "no access-log line for request req-42"
    assert {"method", "path", "status", "latency_ms", "client", "request_id"} <= set(line)
    assert line["status"] == 200 and line["path"] == "/v1/inspect/spc"
    assert secret not in caplog.text


def test_api_keys_and_bind_rules(tmp_path, ewma_bundle):
    with pytest.raises(ConfigError, match="LINEWATCH_SERVE_API_KEYS"):
        check_bind("0.0.0.0", serve_settings(tmp_path))
    check_bind("127.0.0.1", serve_settings(tmp_path))
    settings = serve_settings(tmp_path, serve_api_keys="old-key, new-key")
    check_bind("0.0.0.0", settings)
    with serving(settings, bootstrap=f"127.0.0.1:{free_port()}", bundles=[ewma_bundle]) as s:
        body = json.loads(part("gate-auth", 1, (0, 0)).model_dump_json())
        assert s.client.post("/v1/inspect/spc", json=body).status_code == 401
        assert s.client.post("/v1/inspect/spc", json=body, headers={"x-api-key": "new-ke"}).status_code == 401
        assert s.client.post("/v1/inspect/spc", json=body,
                             headers={"authorization": "Bearer new-key"}).status_code == 200
        assert s.client.post("/v1/inspect/spc", json=body, headers={"x-api-key": "old-key"}).status_code == 200
        assert s.client.get("/healthz").status_code == 200
        assert s.client.get("/v1/models").status_code == 401
        doc = s.client.get("/openapi.json").json()
        assert {"/v1/inspect/frame", "/v1/inspect/spc", "/v1/models", "/healthz", "/readyz"} <= set(doc["paths"])
        assert "SpcRecord" in doc["components"]["schemas"]


def test_a_request_not_scored_in_time_is_answered_504(tmp_path, frames_bundle, good_frames):
    settings = serve_settings(tmp_path, serve_request_timeout_s=1e-4)
    with serving(settings, bootstrap=f"127.0.0.1:{free_port()}", bundles=[frames_bundle]) as s:
        r = _frame(s, _png(good_frames[2]))
        assert r.status_code == 504 and "serve_request_timeout_s" in r.json()["reason"]


def test_the_command_refuses_an_open_bind_before_starting_anything(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from linewatch.cli import app
    from linewatch.cli.common import EXIT_CONFIG, run

    monkeypatch.delenv("LINEWATCH_SERVE_API_KEYS", raising=False)
    monkeypatch.setenv("LINEWATCH_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"COLUMNS": "200"})
    assert isinstance(result.exception, ConfigError) and "LINEWATCH_SERVE_API_KEYS" in str(result.exception)
    with pytest.raises(SystemExit) as stopped:
        monkeypatch.setattr("sys.argv", ["linewatch", "serve", "--host", "0.0.0.0"])
        run(app)
    assert stopped.value.code == EXIT_CONFIG and not list(tmp_path.iterdir())  # no embedded service was started


def test_a_detector_that_fails_answers_500_and_the_service_goes_on(tmp_path, ewma_bundle):
    with serving(serve_settings(tmp_path), bootstrap=f"127.0.0.1:{free_port()}", bundles=[ewma_bundle]) as s:
        lane, calls = s.service.spc, []
        score = lane._score

        def broken_once(messages, mode):
            calls.append(len(messages))
            if len(calls) == 1:
                raise RuntimeError("detector bug")
            return score(messages, mode)

        lane._score = broken_once
        body = json.loads(part("gate-bug", 1, (0, 0)).model_dump_json())
        r = s.client.post("/v1/inspect/spc", json=body)
        assert r.status_code == 500 and r.json()["reason"] == "scoring failed: RuntimeError: detector bug"
        assert s.service.spool.events == 0  # nothing was published for the failed request
        assert s.client.post("/v1/inspect/spc", json=body).status_code == 200


def test_a_large_request_is_scored_as_one_batch(api):
    records = [json.loads(part("gate-many", i, (0.01 * i, 0.0)).model_dump_json()) for i in range(600)]
    body = json.dumps(records).encode()
    assert 64 * 1024 < len(body) < MAX_BODY  # parsed off the event loop
    r = api.client.post("/v1/inspect/spc", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    got = r.json()["records"]
    assert len(got) == 600 and all(g["status"] == "scored" for g in got)
    assert [g["scores"][0]["part_id"] for g in got] == [rec["part_id"] for rec in records]


def test_a_frame_too_large_for_kafka_is_refused_before_scoring(tmp_path, frames_bundle):
    with serving(serve_settings(tmp_path), bootstrap=f"127.0.0.1:{free_port()}", bundles=[frames_bundle]) as s:
        pixels = np.zeros((800, 800, 3), dtype=np.uint8).tobytes()
        r = _frame(s, pixels, "application/octet-stream", width=800, height=800, channels=3)
        assert r.status_code == 413 and "Kafka message limit" in r.json()["reason"], r.text
        assert s.service.frames.scored == 0


def test_a_request_that_breaks_the_detector_fails_alone_in_its_batch(tmp_path, ewma_bundle):
    import asyncio

    from linewatch.serve.requests import spc_inspection

    with serving(serve_settings(tmp_path), bootstrap=f"127.0.0.1:{free_port()}", bundles=[ewma_bundle]) as s:
        lane, score, sizes = s.service.spc, s.service.spc._score, []

        def slow_then_breaks_on_poison(messages, mode):
            sizes.append(len(messages))
            if len(sizes) == 1:
                time.sleep(0.3)  # keeps the lane busy while the next three requests queue up behind it
            if any(b"poison" in (m.value or b"") for m in messages):
                raise RuntimeError("detector bug")
            return score(messages, mode)

        lane._score = slow_then_breaks_on_poison

        async def four():
            bodies = [part("gate-b", i, (0, 0), lot="poison" if i == 2 else "L1").model_dump_json().encode()
                      for i in range(4)]
            inspections = [spc_inspection(b, lane.message, max_records=10) for b in bodies]
            first = asyncio.ensure_future(s.service.inspect(lane, inspections[0], request_id="r0"))
            await asyncio.sleep(0.1)
            rest = await asyncio.gather(*(s.service.inspect(lane, x, request_id=f"r{i}")
                                          for i, x in enumerate(inspections[1:], 1)), return_exceptions=True)
            return [await first, *rest]

        results = asyncio.run(four())
        assert sizes[:2] == [1, 3], sizes  # the three were one batch, then scored one at a time
        assert [type(r).__name__ for r in results] == ["list", "list", "Refused", "list"], results
        assert results[2].status == 500 and s.service.spool.events == 3
