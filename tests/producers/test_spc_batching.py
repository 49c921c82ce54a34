"""Producers that batch: each asset's records as JSON arrays, in order, every record sent, within the limits."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from linewatch.errors import ConfigError
from linewatch.producers.plant import batched_spc
from linewatch.producers.spc import batched_by_key
from linewatch.schemas.codec import MAX_BATCH_JSON_BYTES, decode_record_lists, encode
from linewatch.schemas.messages import MAX_RECORDS_PER_MESSAGE, SpcRecord
from linewatch.schemas.topics import SPC
from linewatch.simulation.plant import PlantConfig, simulate_plant
from linewatch.simulation.spc import simulate_spc


def test_each_assets_records_go_out_in_order_in_arrays_of_at_most_n():
    recs = simulate_spc(n_parts=95, seed=1, fault_fraction=0.0, assets=("a", "b", "c")).records()
    out = list(batched_by_key(((r.asset_id.encode(), encode(r)) for r in recs), 10))
    assert all(1 <= n <= 10 for _, _, n in out)
    decoded = decode_record_lists([v for _, v, _ in out], SpcRecord)
    assert [len(d) for d in decoded] == [n for _, _, n in out]
    for key, records in zip((k for k, _, _ in out), decoded, strict=True):
        assert {r.asset_id.encode() for r in records} == {key}
    for asset in ("a", "b", "c"):
        sent = [r for d in decoded for r in d if r.asset_id == asset]
        assert sent == [r for r in recs if r.asset_id == asset]


def test_an_array_is_closed_before_it_would_pass_the_byte_limit():
    value = b'{"x":"' + b"y" * 300_000 + b'"}'
    out = list(batched_by_key([(b"k", value)] * 7, 100))
    assert [n for _, _, n in out] == [3, 3, 1]
    assert all(len(v) <= MAX_BATCH_JSON_BYTES for _, v, _ in out)
    assert all(len(json.loads(v)) == n for _, v, n in out)


@pytest.mark.parametrize("n", [0, MAX_RECORDS_PER_MESSAGE + 1])
def test_records_per_message_outside_the_limit_is_refused_with_the_range(n):
    with pytest.raises(ConfigError, match=f"1 to {MAX_RECORDS_PER_MESSAGE}"):
        list(batched_by_key([(b"k", b"{}")], n))


def test_the_plant_batches_its_spc_records_and_keeps_event_time_order():
    start = datetime(2026, 1, 5, 6, tzinfo=UTC)
    sim = simulate_plant(replace(PlantConfig(), duration_s=120.0, frame_size=32), faults=[], idle=[], start=start)
    plain = sim.messages(encoding="raw")
    batched = list(batched_spc(iter(plain), 4))
    assert [m for m in batched if m[0] != SPC.name] == [m for m in plain if m[0] != SPC.name]
    times = [m[3] for m in batched]
    assert times == sorted(times) and times[-1] - times[0] <= timedelta(seconds=120)
    spc = decode_record_lists([m[2] for m in batched if m[0] == SPC.name], SpcRecord)
    assert Counter(len(d) for d in spc).most_common(1)[0][0] == 4
    sent = [r for d in spc for r in d]
    alone = [SpcRecord.model_validate_json(m[2]) for m in plain if m[0] == SPC.name]
    assert len(sent) == len(alone) and {r.event_id for r in sent} == {r.event_id for r in alone}
    for asset in {r.asset_id for r in alone}:  # every record once, each asset's in its own order
        assert [r for r in sent if r.asset_id == asset] == [r for r in alone if r.asset_id == asset]
