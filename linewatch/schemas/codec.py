"""The only place bytes become models, and models become bytes.

JSON topics (spc, scores, alerts, dispositions, deadletter) carry one UTF-8 JSON object per
message; an ``spc`` message may instead carry a JSON array of records (:func:`decode_record_lists`).
Binary topics (frames, signals) carry an envelope, so images and samples are never
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
from typing import Annotated, TypeVar

import numpy as np
import pydantic_core
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from linewatch.errors import DataError
from linewatch.schemas.messages import MAX_RECORDS_PER_MESSAGE, FrameMeta, SignalMeta

M = TypeVar("M", bound=BaseModel)

ENVELOPE_MAGIC = b"LW"
ENVELOPE_VERSION = 1
_HEADER = struct.Struct(">2sBI")
#: JSON records are small; anything above this is a producer bug or an attack, not a measurement.
MAX_JSON_BYTES = 256 * 1024
#: A batched message (a JSON array of records) may be as large as a producer can publish: librdkafka's
#: default ``message.max.bytes`` (and Kafka's default broker limit), which every linewatch producer keeps.
MAX_BATCH_JSON_BYTES = 1_000_000
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


class RecordError(DataError):
    """One record of a batched message is invalid: ``index`` (from 0, as in the JSON array) of ``count``.

    ``payload`` is the record's own JSON (re-serialised from the parsed array), so its dead letter
    carries that record alone, not the whole message.
    """

    def __init__(self, reason: str, *, index: int, count: int, payload: bytes) -> None:
        super().__init__(reason)
        self.index, self.count, self.payload = index, count, payload


def is_record_list(raw: bytes | None) -> bool:
    """Whether ``raw`` is a batched message: its first non-blank byte opens a JSON array (a record opens ``{``)."""
    if not raw:
        return False
    head = raw[:1] if raw[:1] not in b" \t\r\n" else raw.lstrip(b" \t\r\n")[:1]
    return head == b"["


def decode_record_lists(raws: Sequence[bytes | None], model: type[M]) -> list[M | DataError | list[M | RecordError]]:
    """Decode messages that each hold one record (a JSON object) or a list of them (a JSON array).

    Each slot is what :func:`decode_batch` gives for a single-record message (the model, or the
    :class:`DataError` of the message), or, for a batched message, its records in array order,
    each the model or a :class:`RecordError`. A batched message that is not JSON, is empty, has
    more than :data:`~linewatch.schemas.messages.MAX_RECORDS_PER_MESSAGE` records or more than
    :data:`MAX_BATCH_JSON_BYTES` bytes is one :class:`DataError` for the whole message.

    Why a top-level array rather than an object wrapping one: the first byte tells the two forms
    apart without parsing, each element is exactly today's record (same schema, same event id,
    no second version number to keep), any JSON library writes it, and the inspection API's
    ``POST /v1/inspect/spc`` already takes the same body.

    >>> from linewatch.schemas.messages import SpcRecord
    >>> rec = b'{"asset_id":"a1","part_id":"p%d","ts":"2026-01-01T00:00:00Z","values":{"d":1.5}}'
    >>> [one, many] = decode_record_lists([rec % 0, b"[" + b",".join([rec % 1, b'{"oops":1}']) + b"]"], SpcRecord)
    >>> one.part_id, many[0].part_id, many[1].index, str(many[1])[:48]
    ('p0', 'p1', 1, 'SpcRecord failed validation: asset_id: Field req')
    """
    lists = [is_record_list(raw) for raw in raws]
    if not any(lists):
        return decode_batch(raws, model)  # type: ignore[return-value]
    out: list[M | DataError | list[M | RecordError] | None] = [
        _decode_list(raw, model) if listed else None for raw, listed in zip(raws, lists, strict=True)]  # type: ignore[arg-type]
    singles = [i for i, item in enumerate(out) if item is None]
    for i, item in zip(singles, decode_batch([raws[i] for i in singles], model), strict=True):
        out[i] = item
    return out  # type: ignore[return-value]


def _decode_list(raw: bytes, model: type[M]) -> list[M | RecordError] | DataError:
    """One batched message: one validation pass over the whole array, a second over its good records if any failed."""
    name = model.__name__
    if len(raw) > MAX_BATCH_JSON_BYTES:
        return DataError(f"batched message of {len(raw)} bytes exceeds the {MAX_BATCH_JSON_BYTES}-byte limit: "
                         f"send fewer {name} records per message")
    try:
        return list(_list_adapter(model, bounded=True).validate_json(raw, strict=True))
    except ValidationError as e:
        whole = [err for err in e.errors() if not err["loc"]]
        if whole:
            return DataError(_list_reason(whole[0], name))
        first = e
    # Some records are bad. The parse below cannot fail (pydantic just parsed the same bytes); its
    # objects re-serialise each bad record for its own dead letter, and the good ones for one more pass.
    try:
        items = pydantic_core.from_json(raw)
    except ValueError:  # jiter parsed it once; a build whose two parsers disagree must still not stop the worker
        return DataError(f"batched message could not be split into records: {_validation_reason(first, model)}")
    count, reasons = len(items), _reasons_by_index(first, model)
    result: list[M | RecordError | None] = [None] * count
    while reasons:  # a second pass over the good records finds nothing new; the loop is a guard, not a retry
        for i, reason in reasons.items():
            result[i] = RecordError(reason, index=i, count=count, payload=pydantic_core.to_json(items[i]))
        good = [i for i in range(count) if result[i] is None]
        try:
            decoded = _list_adapter(model).validate_json(pydantic_core.to_json([items[i] for i in good]), strict=True)
        except ValidationError as e:
            reasons = {good[i]: r for i, r in _reasons_by_index(e, model).items()}
            continue
        for i, rec in zip(good, decoded, strict=True):
            result[i] = rec
        reasons = {}
    return result  # type: ignore[return-value]


def _list_reason(err: dict, name: str) -> str:
    """Why a batched message is refused whole (an error about the array itself, not one of its records)."""
    if err["type"] == "json_invalid":
        return f"invalid JSON for a list of {name} records: {err['msg']}"
    if err["type"] == "too_short":
        return f"batched message is an empty JSON array: send at least one {name} record"
    if err["type"] == "too_long":
        return (f"batched message holds {err.get('ctx', {}).get('actual_length', 'too many')} {name} records; "
                f"at most {MAX_RECORDS_PER_MESSAGE} per message: split it")
    return f"batched message is not a list of {name} records: {err['msg']}"


def _reasons_by_index(e: ValidationError, model: type[BaseModel]) -> dict[int, str]:
    """The validation errors of a list, grouped by the index of the record they belong to, as one reason each."""
    by_index: dict[int, list[dict]] = {}
    for err in e.errors():
        by_index.setdefault(int(err["loc"][0]), []).append(err)
    out = {}
    for i, errs in sorted(by_index.items()):
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'][1:]) or '<root>'}: {err['msg']}"
                             for err in errs[:5])
        more = f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""
        out[i] = f"{model.__name__} failed validation: {problems}{more}"
    return out


_ADAPTERS: dict[tuple[type, bool], TypeAdapter] = {}


def _list_adapter(model: type[M], *, bounded: bool = False) -> TypeAdapter[list[M]]:
    """``list[model]``; ``bounded``: 1 to :data:`~linewatch.schemas.messages.MAX_RECORDS_PER_MESSAGE` items."""
    key = (model, bounded)
    if key not in _ADAPTERS:
        form = (Annotated[list[model], Field(min_length=1, max_length=MAX_RECORDS_PER_MESSAGE)]  # type: ignore[valid-type]
                if bounded else list[model])  # type: ignore[valid-type]
        _ADAPTERS[key] = TypeAdapter(form)
    return _ADAPTERS[key]


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
