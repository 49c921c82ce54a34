"""Request bodies become the raw messages a producer would send; outcomes become the JSON answers.

The API builds the exact ``spc`` / ``frames`` message bytes a producer writes
(:func:`~linewatch.schemas.codec.encode` for a record, :func:`~linewatch.schemas.codec.encode_envelope`
for a frame), with the event id the producers derive, and hands them to the worker's batch
function. So what the API answers, the worker stores for the same published bytes, and a replay
of them gives again.

Bad input is refused with the words the pipelines use for dead letters: the record and frame
header are checked by :func:`~linewatch.schemas.codec.decode` (the one place bytes become
models) and the pixels by the frames pipeline itself; the few checks that exist only here
(content type, size limits, a missing SKU) say what to send instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from linewatch.errors import DataError, LinewatchError
from linewatch.schemas.codec import decode, decode_frame, encode, encode_envelope
from linewatch.schemas.messages import FrameMeta, SpcRecord
from linewatch.serve.lanes import Outcome
from linewatch.streams.frames_pipeline import GRAY_MODES
from linewatch.streams.messages import RawMessage, sanitize_reason

#: Content types of a frame body, besides ``multipart/form-data`` (field ``image``).
ENVELOPE_TYPE = "application/vnd.linewatch.frame"
RAW_PIXELS_TYPE = "application/octet-stream"
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg"}
FRAME_BODY_TYPES = ("multipart/form-data", *IMAGE_TYPES, RAW_PIXELS_TYPE, ENVELOPE_TYPE)
#: Pillow's format names for the envelope's ``encoding`` values.
_ENCODINGS = {"PNG": "png", "JPEG": "jpeg"}

#: The largest message the producers can publish: librdkafka's default ``message.max.bytes``, which every
#: linewatch producer keeps (and Kafka's default broker limit). A larger frame could never reach the worker.
MAX_PUBLISHED_BYTES = 1_000_000
#: Builds a lane message from (key, value).
MessageFactory = Callable[[bytes | None, bytes], RawMessage]


class Refused(LinewatchError):
    """A request answered with a 4xx/5xx: ``status``, a ``reason`` a person can act on, optional details."""

    def __init__(self, status: int, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = sanitize_reason(reason)
        self.details = details


@dataclass(frozen=True)
class Inspection:
    """The messages of one request, ready for a lane, and their event ids (the producers' ids)."""

    messages: list[RawMessage]
    event_ids: list[str]

    @property
    def nbytes(self) -> int:
        return sum(len(m.value or b"") + len(m.key or b"") for m in self.messages)


# --- SPC ------------------------------------------------------------------------------------------


def spc_inspection(body: bytes, message: MessageFactory, *, max_records: int) -> Inspection:
    """One record (a JSON object) or many (an array) -> their ``spc`` messages, or :class:`Refused`.

    Every record must decode before any is scored: scoring moves the charts' memory, so a request
    is either taken whole or refused whole, never half scored.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        try:
            decode(body, SpcRecord)
            reason = "the body is not JSON"
        except DataError as e:
            reason = str(e)
        raise Refused(400, reason) from None
    items = [doc] if isinstance(doc, dict) else doc if isinstance(doc, list) else None
    if items is None:
        raise Refused(422, f"the body must be one spc record (a JSON object) or an array of them, "
                           f"not a JSON {type(doc).__name__}")
    if not items:
        raise Refused(422, "the body is an empty array: send at least one spc record")
    if len(items) > max_records:
        raise Refused(413, f"{len(items)} records in one request; this service takes at most {max_records} "
                           "(serve_max_records): split the request")
    messages, event_ids, problems = [], [], []
    for i, item in enumerate(items):
        raw = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            record = decode(raw, SpcRecord)
        except DataError as e:
            problems.append({"index": i, "reason": sanitize_reason(str(e))})
            continue
        messages.append(message(record.asset_id.encode(), encode(record)))
        event_ids.append(str(record.event_id))
    if problems:
        first = problems[0]["reason"]
        reason = first if len(items) == 1 else f"{len(problems)} of {len(items)} records are invalid, e.g. #" \
                                                f"{problems[0]['index']}: {first}; nothing was scored"
        raise Refused(422, reason, records=problems)
    return Inspection(messages, event_ids)


def record_view(o: Outcome) -> dict[str, Any]:
    """One record's answer: its id, status, whether a champion flagged it, and every ``scores`` message about it."""
    view: dict[str, Any] = {"event_id": o.event_id, "status": o.status, "is_anomaly": o.anomaly}
    if o.reason is not None:
        view["reason"] = o.reason
    view["scores"] = o.scores
    return view


# --- frames ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameFields:
    """Who took the frame, of what, when: the envelope header's fields that the image cannot tell."""

    asset_id: str | None
    camera: str | None
    sku: str | None
    part_id: str | None = None
    ts: str | None = None
    machine_state: str | None = None
    #: Raw pixel bodies only: the buffer's shape.
    width: int | None = None
    height: int | None = None
    channels: int | None = None


def frame_inspection(body: bytes, content_type: str, fields: FrameFields, message: MessageFactory, *,
                     max_side: int) -> tuple[Inspection, FrameMeta]:
    """An image (PNG, JPEG, raw pixels) or a whole envelope -> its ``frames`` message, or :class:`Refused`."""
    if not body:
        raise Refused(422, "frame has an empty image payload")
    if content_type == ENVELOPE_TYPE:
        try:
            meta, _ = decode_frame(body)
        except DataError as e:
            raise Refused(422, str(e)) from None
        _check_side(meta.width, meta.height, max_side)
        value = body
    else:
        for name in ("asset_id", "camera", "sku"):
            if not getattr(fields, name):
                raise Refused(422, f"{name} is required: the frame's model is chosen by its asset, SKU and camera "
                                   "(send it as a form field or query parameter)")
        if content_type == RAW_PIXELS_TYPE:
            header = _raw_header(fields, max_side)
        else:
            header = _image_header(body, IMAGE_TYPES.get(content_type, "image"), max_side)
        header.update({
            "asset_id": fields.asset_id, "camera": fields.camera, "sku": fields.sku,
            "part_id": fields.part_id or f"img-{hashlib.sha256(body).hexdigest()[:16]}",
            "ts": fields.ts or datetime.now(UTC).isoformat(), "machine_state": fields.machine_state,
        })
        try:
            meta = decode(json.dumps({k: v for k, v in header.items() if v is not None}).encode(), FrameMeta)
        except DataError as e:
            raise Refused(422, str(e)) from None
        value = encode_envelope(meta, body)
        try:
            decode_frame(value)  # the envelope checks (raw size against the header, ...) the worker will make
        except DataError as e:
            raise Refused(422, str(e)) from None
    if len(value) > MAX_PUBLISHED_BYTES:
        raise Refused(413, f"frame message of {len(value)} bytes exceeds the {MAX_PUBLISHED_BYTES}-byte Kafka message "
                           "limit the producers use: send a JPEG, a region of interest or a downscaled frame")
    return Inspection([message(meta.asset_id.encode(), value)], [str(meta.event_id)]), meta


def _check_side(width: int, height: int, max_side: int) -> None:
    if max(width, height) > max_side:
        raise Refused(413, f"frame of {width}x{height} pixels is larger than this service takes ({max_side} a side, "
                           "serve_max_image_side): send a region of interest or a downscaled frame")


def _raw_header(fields: FrameFields, max_side: int) -> dict[str, Any]:
    if fields.width is None or fields.height is None:
        raise Refused(422, "raw pixels need width and height (and channels, 1 or 3) as query parameters or form "
                           "fields")
    _check_side(fields.width, fields.height, max_side)
    return {"encoding": "raw", "width": fields.width, "height": fields.height,
            "channels": fields.channels if fields.channels is not None else 3}


def _image_header(body: bytes, hint: str, max_side: int) -> dict[str, Any]:
    """Encoding, size and channels from the image's header, without decoding a pixel."""
    try:
        with Image.open(io.BytesIO(body)) as img:
            fmt, (width, height), mode = img.format, img.size, img.mode
    except Image.DecompressionBombError as e:
        raise Refused(413, f"cannot decode {hint} frame: {e}") from None
    except Exception as e:  # Pillow raises many types for garbage; each is a bad request, never a crash
        raise Refused(422, f"cannot decode {hint} frame: {type(e).__name__}: {e}") from None
    encoding = _ENCODINGS.get(fmt or "")
    if encoding is None:
        raise Refused(415, f"frame image is {fmt or 'of an unknown format'}; send PNG, JPEG or raw pixels")
    _check_side(width, height, max_side)
    return {"encoding": encoding, "width": width, "height": height, "channels": 1 if mode in GRAY_MODES else 3}


def frame_view(o: Outcome, meta: FrameMeta, *, heatmap: bool) -> dict[str, Any]:
    """A frame's answer: the verdict of its most confident champion on top, every score below."""
    view: dict[str, Any] = {
        "event_id": o.event_id, "asset_id": meta.asset_id, "camera": meta.camera, "sku": meta.sku,
        "part_id": meta.part_id, "ts": meta.ts.isoformat(), "status": o.status,
        "verdict": "unscored" if not o.champions else "reject" if o.anomaly else "pass",
    }
    if o.champions:
        top = max(o.champions, key=lambda s: s["calibrated_score"])
        region = next((c["name"] for c in top["explanation"] if str(c["name"]).startswith("region ")), None)
        view.update({k: top[k] for k in ("detector", "model_version", "calibrated_score", "tail_probability",
                                         "raw_score", "threshold", "is_anomaly")})
        view["region"] = region.removeprefix("region ") if region else None
    view["scores"] = o.scores
    if heatmap:
        view["heatmap_png"] = base64.b64encode(o.heatmap["thumbnail"]).decode() if o.heatmap else None
        if o.heatmap:
            view["heatmap"] = {k: o.heatmap[k] for k in ("peak_x", "peak_y", "peak_value", "threshold", "box_x0",
                                                         "box_y0", "box_x1", "box_y1", "area_fraction")}
    return view
