"""The only place bytes become models, and models become bytes.

JSON topics (spc, scores, alerts, dispositions, deadletter) carry one UTF-8 JSON object per
message. Binary topics (frames, signals) carry an envelope, so images and samples are never
base64-inflated::

    b"LW" | version (1 byte) | header length (uint32, big-endian) | JSON header | payload bytes

Any language decodes it with a four-line reader; ``docs/message-formats.md`` shows one.

Decoding failures raise :class:`~linewatch.errors.DataError` with a reason a person can act
on; the agents turn that into a dead letter and go on.

>>> from linewatch.schemas.messages import SpcRecord
>>> raw = b'{"asset_id":"a1","part_id":"p1","ts":"2026-01-01T00:00:00Z","values":{"d":1.5}}'
>>> decode(raw, SpcRecord).values
{'d': 1.5}
>>> decode(b"not json", SpcRecord)
Traceback (most recent call last):
...
linewatch.errors.DataError: invalid JSON for SpcRecord: ...
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

from linewatch.errors import DataError
from linewatch.schemas.messages import FrameMeta, SignalMeta

M = TypeVar("M", bound=BaseModel)

ENVELOPE_MAGIC = b"LW"
ENVELOPE_VERSION = 1
_HEADER = struct.Struct(">2sBI")
#: JSON records are small; anything above this is a producer bug or an attack, not a measurement.
MAX_JSON_BYTES = 256 * 1024
#: Envelope headers are a few hundred bytes; a huge one means a corrupt length field.
MAX_ENVELOPE_HEADER_BYTES = 64 * 1024
#: One frame or sensor window; larger payloads belong in object storage with a reference.
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024


def _validation_reason(e: ValidationError, model: type[BaseModel]) -> str:
    if any(err.get("type") == "json_invalid" for err in e.errors()):
        return f"invalid JSON for {model.__name__}: {e.errors()[0].get('msg')}"
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:5]
    )
    more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
    return f"{model.__name__} failed validation: {problems}{more}"


def decode(raw: bytes | None, model: type[M]) -> M:
    """Decode one JSON message into ``model`` or raise :class:`DataError` saying why not."""
    if raw is None:
        raise DataError(f"empty message (tombstone) where a {model.__name__} was expected")
    if len(raw) > MAX_JSON_BYTES:
        raise DataError(f"message of {len(raw)} bytes exceeds the {MAX_JSON_BYTES}-byte limit for JSON records")
    try:
        # Strict: exactly what the published JSON Schema allows (no "12.5" or true for a number,
        # no Unix seconds or date-only strings for a date-time), so every consumer agrees on what is valid.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as e:
        raise DataError(_validation_reason(e, model)) from e


def decode_batch(raws: Sequence[bytes | None], model: type[M]) -> list[M | DataError]:
    """Decode many messages; each slot holds the model or the :class:`DataError` for that message.

    The happy path validates the whole batch in one pydantic call (one JSON array), which is
    several times faster than one call per message; only a batch containing a bad message
    falls back to per-message decoding to find it.
    """
    if all(r is not None and 0 < len(r) <= MAX_JSON_BYTES for r in raws):
        try:
            return list(_list_adapter(model).validate_json(b"[" + b",".join(raws) + b"]",  # type: ignore[arg-type]
                                                           strict=True))
        except ValidationError:
            pass
    out: list[M | DataError] = []
    for r in raws:
        try:
            out.append(decode(r, model))
        except DataError as e:
            out.append(e)
    return out


_ADAPTERS: dict[type, TypeAdapter] = {}


def _list_adapter(model: type[M]) -> TypeAdapter[list[M]]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return _ADAPTERS[model]


def encode(message: BaseModel) -> bytes:
    """One JSON message, as every linewatch producer writes it."""
    return message.model_dump_json(exclude_none=True).encode()


def encode_envelope(header: BaseModel, payload: bytes) -> bytes:
    """Frame ``header`` (JSON) and ``payload`` (raw bytes) into one binary message.

    Unset optional fields (a window without ``speed_hz``) are left out, as in :func:`encode`, so a
    header without them is byte-for-byte what consumers decoded before those fields existed.
    """
    head = header.model_dump_json(exclude_none=True).encode()
    return _HEADER.pack(ENVELOPE_MAGIC, ENVELOPE_VERSION, len(head)) + head + payload


def decode_envelope(raw: bytes | None, model: type[M]) -> tuple[M, memoryview]:
    """Split a binary message into its validated header and a zero-copy view of the payload."""
    if raw is None:
        raise DataError(f"empty message (tombstone) where a {model.__name__} envelope was expected")
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise DataError(f"message of {len(raw)} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte envelope limit")
    if len(raw) < _HEADER.size:
        raise DataError(f"message of {len(raw)} bytes is too short to be a linewatch envelope")
    magic, version, head_len = _HEADER.unpack_from(raw)
    if magic != ENVELOPE_MAGIC:
        raise DataError(f"not a linewatch envelope (starts with {bytes(raw[:2])!r}, expected {ENVELOPE_MAGIC!r})")
    if version != ENVELOPE_VERSION:
        raise DataError(f"envelope version {version} is not supported (this worker reads {ENVELOPE_VERSION})")
    if head_len > MAX_ENVELOPE_HEADER_BYTES or _HEADER.size + head_len > len(raw):
        raise DataError(f"envelope header length {head_len} does not fit a {len(raw)}-byte message")
    header = decode(bytes(raw[_HEADER.size : _HEADER.size + head_len]), model)
    return header, memoryview(raw)[_HEADER.size + head_len :]


def encode_signal(meta: SignalMeta, samples: np.ndarray) -> bytes:
    """A sensor window as an envelope of little-endian float32 samples."""
    data = np.ascontiguousarray(samples, dtype="<f4")
    if data.ndim != 1 or data.size != meta.n_samples:
        raise DataError(f"expected {meta.n_samples} samples in a 1-D array, got shape {data.shape}")
    return encode_envelope(meta, data.tobytes())


def decode_signal(raw: bytes | None) -> tuple[SignalMeta, np.ndarray]:
    """Header and samples of one sensor window; refuses a payload whose size disagrees with the header."""
    meta, payload = decode_envelope(raw, SignalMeta)
    if len(payload) != 4 * meta.n_samples:
        raise DataError(
            f"signal payload has {len(payload)} bytes but the header announces {meta.n_samples} float32 samples"
        )
    samples = np.frombuffer(payload, dtype="<f4")
    if not np.isfinite(samples).all():
        raise DataError(f"signal window {meta.asset_id}/{meta.sensor} contains NaN or infinite samples")
    return meta, samples


def decode_frame(raw: bytes | None) -> tuple[FrameMeta, memoryview]:
    """Header and encoded image bytes of one frame (pixel decoding happens in batches downstream)."""
    meta, payload = decode_envelope(raw, FrameMeta)
    if meta.encoding == "raw" and len(payload) != meta.width * meta.height * meta.channels:
        raise DataError(
            f"raw frame payload has {len(payload)} bytes, expected "
            f"{meta.width}x{meta.height}x{meta.channels} = {meta.width * meta.height * meta.channels}"
        )
    if len(payload) == 0:
        raise DataError("frame has an empty image payload")
    return meta, payload
