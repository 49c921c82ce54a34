"""Batched ``spc`` messages through the SPC batch processor: the rows of single records, per-record dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from linewatch.detectors.bundle import ModelBundle
from linewatch.schemas.codec import decode, encode
from linewatch.schemas.messages import DeadLetter, Score, SpcRecord
from linewatch.schemas.rows import ScoreRow, SpcMeasurementRow
from linewatch.simulation.spc import simulate_spc
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch
from tests.streams.test_spc_pipeline import OneModel


@pytest.fixture(scope="module")
def bundle():
    sim = simulate_spc(n_parts=1000, seed=0, fault_fraction=0.0)
    return ModelBundle.fit("robust_mahalanobis", sim.X, feature_names=sim.feature_names, target_far=0.01,
                           calibration_fraction=0.3)


@pytest.fixture(scope="module")
def ewma():
    sim = simulate_spc(n_parts=1000, seed=0, fault_fraction=0.0)
    return ModelBundle.fit("ewma", sim.X, feature_names=sim.feature_names, target_far=0.01)


def _array(recs: list[SpcRecord]) -> bytes:
    return b"[" + b",".join(encode(r) for r in recs) + b"]"


def _msgs(payloads: list[bytes], offset: int = 0) -> list[RawMessage]:
    return [RawMessage("spc", 3, offset + i, b"press-1", p) for i, p in enumerate(payloads)]


def _stable(rows: list[tuple]) -> list[tuple]:
    """Score rows without ``scored_at`` (the wall clock of scoring)."""
    at = list(ScoreRow.model_fields).index("scored_at")
    return [r[:at] + r[at + 1:] for r in rows]


class BothModels:
    def __init__(self, *bundles: ModelBundle) -> None:
        self.bundles = list(bundles)

    def models_for(self, modality, asset_id, sku, camera="*"):
        return self.bundles


def test_batched_records_give_the_rows_and_event_ids_they_give_when_sent_alone(bundle, ewma):
    recs = simulate_spc(n_parts=60, seed=3, fault_fraction=0.2, assets=("press-1", "press-2")).records()
    alone = score_spc_batch(_msgs([encode(r) for r in recs]), BothModels(bundle, ewma), StreamStates())
    batched = score_spc_batch(_msgs([_array(recs[:25]), _array(recs[25:26]), _array(recs[26:])]),
                              BothModels(bundle, ewma), StreamStates())
    assert batched.counts["records"] == alone.counts["records"] == 60 and len(batched.deadletters) == 0
    assert len(batched.scores) == 120
    assert _stable(batched.scores) == _stable(alone.scores)  # stateful EWMA too: the same arrival order
    assert batched.tables[SpcMeasurementRow] == alone.tables[SpcMeasurementRow]
    by_detector: dict[str, list] = {}
    for _, value, _ in batched.score_messages:
        score = decode(value, Score)
        by_detector.setdefault(score.detector, []).append(score.event_id)
    assert [sorted(ids) for ids in by_detector.values()] == [sorted(r.event_id for r in recs)] * 2


def test_a_bad_record_in_a_list_of_ten_is_dead_lettered_alone_with_its_index_and_origin(bundle):
    recs = simulate_spc(n_parts=10, seed=4, fault_fraction=0.0).records()
    items = [json.loads(encode(r)) for r in recs]
    items[3]["values"]["bore_diameter_mm"] = "25.0"  # a string where a number belongs
    raw = json.dumps(items).encode()
    out = score_spc_batch(_msgs([raw], offset=41), OneModel(bundle))
    assert out.counts["records"] == 9 and len(out.scores) == 9
    assert len(out.tables[SpcMeasurementRow]) == 9 * 6
    [dl] = out.deadletters.items
    assert dl.reason.startswith("record 3 of 10: SpcRecord failed validation: values.bore_diameter_mm")
    assert (dl.source_topic, dl.partition, dl.offset, dl.key) == ("spc", 3, 41, b"press-1")
    assert json.loads(dl.payload) == items[3], "the dead letter carries the bad record alone"
    [row] = out.deadletters.rows()
    assert json.loads(row[-1]) == items[3]
    assert decode(out.deadletters.messages()[0][1], DeadLetter).reason == dl.reason


def test_records_of_a_list_the_pipeline_rejects_after_decoding_are_dead_lettered_alone(bundle):
    recs = simulate_spc(n_parts=4, seed=5, fault_fraction=0.0).records()
    late = recs[1].model_copy(update={"ts": datetime.now(UTC) + timedelta(days=30)})
    partial = recs[2].model_copy(update={"values": {"length_mm": 120.0}})
    out = score_spc_batch(_msgs([_array([recs[0], late, partial, recs[3]])]), OneModel(bundle))
    assert out.counts["records"] == 2
    reasons = [d.reason for d in out.deadletters.items]
    assert reasons[0].startswith("record 1 of 4: ") and reasons[1].startswith("record 2 of 4: record lacks")
    assert [decode(d.payload, SpcRecord) for d in out.deadletters.items] == [late, partial]


def test_a_broken_list_is_one_dead_letter_carrying_the_whole_message(bundle):
    recs = simulate_spc(n_parts=3, seed=6, fault_fraction=0.0).records()
    broken = _array(recs)[:-1]
    out = score_spc_batch(_msgs([broken, b"[]", encode(recs[0])]), OneModel(bundle))
    assert out.counts["records"] == 1
    assert [(d.offset, d.payload) for d in out.deadletters.items] == [(0, broken), (1, b"[]")]
    assert "invalid JSON" in out.deadletters.items[0].reason and "empty" in out.deadletters.items[1].reason
