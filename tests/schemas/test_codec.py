from __future__ import annotations

import json

import numpy as np
import pytest

from linewatch.errors import DataError
from linewatch.schemas.codec import (
    MAX_JSON_BYTES,
    decode,
    decode_batch,
    decode_envelope,
    decode_frame,
    decode_signal,
    encode,
    encode_envelope,
    encode_signal,
)
from linewatch.schemas.messages import DeadLetter, FrameMeta, SignalMeta, SpcRecord

GOOD = {"asset_id": "a1", "part_id": "p1", "ts": "2026-01-01T08:00:00+01:00", "values": {"d": 1.5}}


def raw(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_good_record_decodes_with_utc_time():
    rec = decode(raw(), SpcRecord)
    assert rec.ts.utcoffset().total_seconds() == 0 and rec.ts.hour == 7
    assert rec.sku == "default"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\xff\xfe", "invalid JSON"),
        (raw(colour="red"), "Extra inputs are not permitted"),
        (raw(ts="2026-01-01T08:00:00"), "timezone"),
        (raw(values={}), "at least 1"),
        (raw(values={"d": "x"}), "valid number"),
        (b'{"asset_id":"a","part_id":"p","ts":"2026-01-01T00:00:00Z","values":{"d":NaN}}', "finite"),
        (raw(values={"d": 1e300}), "less than or equal to 1000000000000"),
        (raw(asset_id=""), "at least 1 character"),
        (b"x" * (MAX_JSON_BYTES + 1), "exceeds"),
        (None, "tombstone"),
        # as strict as the published JSON Schema: a number is a JSON number, a date-time an RFC 3339 string
        (raw(values={"d": True}), "valid number"),
        (raw(values={"d": "12.5"}), "valid number"),
        (raw(ts=1767225600), "valid datetime"),
        (raw(ts="2026-01-01"), "valid datetime"),
        (raw(part_id=7), "valid string"),
        (raw(ts="9999-12-31T23:59:59-23:59"), "outside the representable range"),
    ],
)
def test_bad_records_raise_data_error_with_reason(payload, fragment):
    with pytest.raises(DataError, match=fragment):
        decode(payload, SpcRecord)


def test_integers_are_numbers_as_in_json_schema():
    assert decode(raw(values={"d": 12}), SpcRecord).values == {"d": 12.0}


def test_an_unrepresentable_timestamp_is_caught_in_the_first_pass():
    out = decode_batch([raw(), raw(part_id="p9", ts="9999-12-31T23:59:59-23:59")], SpcRecord)
    assert isinstance(out[0], SpcRecord) and "representable" in str(out[1])


def test_spec_limits_must_be_ordered():
    with pytest.raises(DataError, match="lsl"):
        decode(raw(limits={"d": {"lsl": 2.0, "usl": 1.0}}), SpcRecord)


def test_decode_batch_isolates_the_bad_message():
    out = decode_batch([raw(), b"garbage", raw(part_id="p2")], SpcRecord)
    assert isinstance(out[0], SpcRecord) and isinstance(out[1], DataError) and out[2].part_id == "p2"
    assert all(isinstance(r, SpcRecord) for r in decode_batch([raw(), raw(part_id="p2")], SpcRecord))


def test_event_id_is_deterministic_and_key_sensitive():
    a, b = decode(raw(), SpcRecord), decode(raw(), SpcRecord)
    assert a.event_id == b.event_id
    assert decode(raw(part_id="p2"), SpcRecord).event_id != a.event_id


def test_round_trip_json():
    rec = decode(raw(limits={"d": {"lsl": 1.0, "usl": 2.0}}), SpcRecord)
    assert decode(encode(rec), SpcRecord) == rec


def test_deadletter_payload_round_trips_as_base64():
    dl = DeadLetter(source_topic="spc", partition=1, offset=7, key=b"k", reason="r", error_type="DataError",
                    payload=b"\x00\xffbinary")
    text = encode(dl)
    assert b"\\u0000" not in text and json.loads(text)["payload"] == "AP9iaW5hcnk="
    back = decode(text, DeadLetter)
    assert back.payload == b"\x00\xffbinary" and back.origin == "spc[1]@7"


def signal_meta(n: int = 4) -> SignalMeta:
    return SignalMeta(asset_id="m1", sensor="vib-x", kind="vibration", unit="g", start="2026-01-01T00:00:00Z",
                      sample_rate_hz=10_000, n_samples=n)


def test_signal_envelope_round_trip_is_binary():
    samples = np.array([0.0, 1.5, -2.0, 3.25], dtype=np.float32)
    msg = encode_signal(signal_meta(), samples)
    assert msg[:2] == b"LW" and samples.tobytes() in msg  # raw float32 bytes, not base64
    meta, back = decode_signal(msg)
    assert meta.sensor == "vib-x" and np.array_equal(back, samples)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda m: b"XX" + m[2:], "not a linewatch envelope"),
        (lambda m: m[:2] + b"\x09" + m[3:], "version 9"),
        (lambda m: m[:5], "too short"),
        (lambda m: m[:3] + b"\xff\xff\xff\xff" + m[7:], "does not fit"),
        (lambda m: m[:-4], "header announces 4"),
    ],
)
def test_broken_envelopes_are_data_errors(mutate, fragment):
    msg = encode_signal(signal_meta(), np.zeros(4, np.float32))
    with pytest.raises(DataError, match=fragment):
        decode_signal(mutate(msg))


def test_signal_with_nan_samples_is_rejected():
    with pytest.raises(DataError, match="NaN"):
        decode_signal(encode_signal(signal_meta(), np.array([0, np.nan, 0, 0], np.float32)))


def test_raw_frame_size_must_match_header():
    meta = FrameMeta(asset_id="a", camera="c", part_id="p", ts="2026-01-01T00:00:00Z", encoding="raw",
                     width=4, height=2, channels=1)
    header, payload = decode_frame(encode_envelope(meta, bytes(8)))
    assert header.width == 4 and len(payload) == 8
    with pytest.raises(DataError, match="expected 4x2x1"):
        decode_frame(encode_envelope(meta, bytes(7)))
    with pytest.raises(DataError):
        decode_envelope(encode_envelope(meta, b""), SignalMeta)
