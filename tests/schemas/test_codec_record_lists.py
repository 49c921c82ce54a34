"""Batched ``spc`` messages (a JSON array of records): one validation pass, per-record errors, whole-message limits."""

from __future__ import annotations

import json

import pytest

from linewatch.errors import DataError
from linewatch.schemas.codec import (
    MAX_BATCH_JSON_BYTES,
    RecordError,
    decode_batch,
    decode_record_lists,
    encode,
    is_record_list,
)
from linewatch.schemas.messages import MAX_RECORDS_PER_MESSAGE, SpcRecord
from linewatch.simulation.spc import simulate_spc


def _records(n: int, seed: int = 1) -> list[SpcRecord]:
    return simulate_spc(n_parts=n, seed=seed, fault_fraction=0.0).records()


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _one(raw: bytes) -> list[SpcRecord | RecordError] | DataError:
    [out] = decode_record_lists([raw], SpcRecord)
    assert not isinstance(out, SpcRecord), "an array never decodes as a single record"
    return out


BAD = {
    "missing field": b'{"asset_id":"a1","ts":"2026-01-01T00:00:00Z","values":{"d":1.0}}',
    "wrong type": b'{"asset_id":"a1","part_id":"p","ts":"2026-01-01T00:00:00Z","values":{"d":"1.5"}}',
    "NUL in an id": b'{"asset_id":"a\\u0000b","part_id":"p","ts":"2026-01-01T00:00:00Z","values":{"d":1.0}}',
    "not an object": b"42",
}


def test_a_good_list_decodes_in_order_as_the_same_records_as_when_sent_alone():
    recs = _records(25)
    out = _one(_array([encode(r) for r in recs]))
    assert isinstance(out, list) and out == recs
    assert [r.event_id for r in out] == [r.event_id for r in decode_batch([encode(r) for r in recs], SpcRecord)]


@pytest.mark.parametrize("where", [0, 4, 9])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_one_bad_record_is_its_own_error_and_the_others_decode(where, kind):
    recs = _records(10)
    items = [encode(r) for r in recs]
    items[where] = BAD[kind]
    out = _one(_array(items))
    assert isinstance(out, list) and len(out) == 10
    err = out[where]
    assert isinstance(err, RecordError) and (err.index, err.count) == (where, 10)
    assert "SpcRecord failed validation" in str(err)
    assert json.loads(err.payload) == json.loads(BAD[kind]), "the payload is the bad record alone"
    assert [r for i, r in enumerate(out) if i != where] == [r for i, r in enumerate(recs) if i != where]


def test_several_bad_records_each_name_their_own_problem():
    recs = _records(6)
    items = [encode(r) for r in recs]
    items[1], items[5] = BAD["missing field"], BAD["wrong type"]
    out = _one(_array(items))
    assert [type(x).__name__ for x in out] == ["SpcRecord", "RecordError", "SpcRecord", "SpcRecord", "SpcRecord",
                                               "RecordError"]
    assert "part_id: Field required" in str(out[1]) and "values.d: Input should be a valid number" in str(out[5])


def test_every_record_bad_gives_only_record_errors():
    out = _one(_array([BAD["missing field"]] * 3))
    assert [e.index for e in out] == [0, 1, 2] and all(isinstance(e, RecordError) for e in out)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[", "invalid JSON for a list of SpcRecord records"),
    (b'[{"asset_id": "a1"} garbage', "invalid JSON for a list of SpcRecord records"),
    (b"[] trailing", "invalid JSON"),
    (b"[]", "empty JSON array"),
    (b"  \n [ ]", "empty JSON array"),
])
def test_a_broken_or_empty_list_is_one_error_for_the_message(raw, reason):
    out = _one(raw)
    assert isinstance(out, DataError) and not isinstance(out, RecordError)
    assert reason in str(out)


def test_more_records_than_the_limit_is_one_error_for_the_message():
    tiny = b'{"asset_id":"a","part_id":"p","ts":"2026-01-01T00:00:00Z","values":{"d":1}}'
    out = _one(_array([tiny] * (MAX_RECORDS_PER_MESSAGE + 1)))
    assert isinstance(out, DataError) and f"at most {MAX_RECORDS_PER_MESSAGE} per message" in str(out)


def test_a_list_over_the_byte_limit_is_one_error_for_the_message():
    recs = [encode(r) for r in _records(10)]
    raw = _array(recs * (MAX_BATCH_JSON_BYTES // (10 * len(recs[0])) + 1))
    assert len(raw) > MAX_BATCH_JSON_BYTES
    out = _one(raw)
    assert isinstance(out, DataError) and f"{MAX_BATCH_JSON_BYTES}-byte limit" in str(out)


def test_a_list_at_the_record_limit_with_one_bad_record_near_its_end_decodes():
    items = [b'{"asset_id":"a","part_id":"p%d","ts":"2026-01-01T00:00:00Z","values":{"d":1}}' % i
             for i in range(MAX_RECORDS_PER_MESSAGE)]
    items[-2] = BAD["wrong type"]
    raw = _array(items)
    assert len(raw) <= MAX_BATCH_JSON_BYTES
    out = _one(raw)
    assert len(out) == MAX_RECORDS_PER_MESSAGE
    assert [i for i, x in enumerate(out) if isinstance(x, RecordError)] == [MAX_RECORDS_PER_MESSAGE - 2]
    assert out[-1].part_id == f"p{MAX_RECORDS_PER_MESSAGE - 1}"


def test_single_records_and_lists_mix_in_one_batch_each_in_its_own_slot():
    recs = _records(5)
    raws = [encode(recs[0]), _array([encode(recs[1]), encode(recs[2])]), b"not json", None,
            _array([encode(recs[3])]), encode(recs[4])]
    out = decode_record_lists(raws, SpcRecord)
    assert out[0] == recs[0] and out[1] == [recs[1], recs[2]] and out[4] == [recs[3]] and out[5] == recs[4]
    assert isinstance(out[2], DataError) and "invalid JSON" in str(out[2])
    assert isinstance(out[3], DataError) and "tombstone" in str(out[3])


def test_an_array_is_told_from_a_record_by_its_first_non_blank_byte():
    assert is_record_list(b"[]") and is_record_list(b" \r\n\t[{}]")
    assert not is_record_list(b'{"values": [1]}') and not is_record_list(b"") and not is_record_list(None)
    assert not is_record_list(b"   ")
