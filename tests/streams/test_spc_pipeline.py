"""The SPC batch processor without Kafka: what the agent persists and publishes for a batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from linewatch.detectors.bundle import ModelBundle
from linewatch.schemas.codec import decode, encode
from linewatch.schemas.messages import Score
from linewatch.schemas.rows import DeadLetterRow, ScoreRow, SpcMeasurementRow
from linewatch.simulation.spc import simulate_spc
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import score_spc_batch


class OneModel:
    def __init__(self, bundle, asset=None):
        self.bundle, self.asset = bundle, asset

    def models_for(self, modality, asset_id, sku, camera="*"):
        return [self.bundle] if self.asset in (None, asset_id) else []


@pytest.fixture(scope="module")
def bundle():
    sim = simulate_spc(n_parts=3000, seed=0, fault_fraction=0.0)
    return ModelBundle.fit("robust_mahalanobis", sim.X, feature_names=sim.feature_names, target_far=0.01)


def msgs(payloads):
    return [RawMessage("spc", 0, i, b"k", p) for i, p in enumerate(payloads)]


def test_batch_produces_rows_in_table_column_order(bundle):
    recs = simulate_spc(n_parts=20, seed=1, fault_fraction=0.0).records()
    out = score_spc_batch(msgs([encode(r) for r in recs]), OneModel(bundle))
    assert out.counts["records"] == 20 and len(out.scores) == 20 and len(out.deadletters) == 0
    assert len(out.tables[SpcMeasurementRow]) == 20 * 6
    assert all(len(r) == len(ScoreRow.model_fields) for r in out.scores)
    assert all(len(r) == len(SpcMeasurementRow.model_fields) for r in out.tables[SpcMeasurementRow])
    score = decode(out.score_messages[0][1], Score)
    assert score.event_id == recs[0].event_id and score.model_version == bundle.version
    assert json.loads(out.scores[0][15])[0]["name"] == score.explanation[0].name
    assert sum(c.share for c in score.explanation) <= 1.0 + 1e-9


def test_bad_and_incomplete_records_become_dead_letters(bundle):
    recs = simulate_spc(n_parts=3, seed=2, fault_fraction=0.0).records()
    partial = recs[2].model_copy(update={"values": {"length_mm": 120.0}})
    out = score_spc_batch(msgs([encode(recs[0]), b"{oops", encode(partial), encode(recs[1])]), OneModel(bundle))
    assert out.counts["records"] == 2 and len(out.scores) == 2
    reasons = [d.reason for d in out.deadletters.items]
    assert "invalid JSON" in reasons[0] and "lacks characteristic" in reasons[1]
    assert [d.offset for d in out.deadletters.items] == [1, 2]
    assert all(len(r) == len(DeadLetterRow.model_fields) for r in out.deadletters.rows())


def test_records_without_a_model_are_stored_unscored(bundle):
    recs = simulate_spc(n_parts=4, seed=3, fault_fraction=0.0, assets=("other",)).records()
    out = score_spc_batch(msgs([encode(r) for r in recs]), OneModel(bundle, asset="press-1"))
    assert out.counts["unscored"] == 4 and out.unscored == {"other/housing-a": 4}
    assert not out.scores and len(out.tables[SpcMeasurementRow]) == 24


def test_same_batch_gives_same_rows(bundle):
    payloads = [encode(r) for r in simulate_spc(n_parts=10, seed=4).records()]
    a = score_spc_batch(msgs(payloads), OneModel(bundle))
    b = score_spc_batch(msgs(payloads), OneModel(bundle))
    strip = [r[:-1] for r in a.scores]  # all but scored_at
    assert strip == [r[:-1] for r in b.scores]
    assert np.isfinite([r[8] for r in a.scores]).all()


def test_score_json_survives_awkward_identifiers(bundle):
    rec = simulate_spc(n_parts=1, seed=5).records()[0]
    odd = rec.model_copy(update={"asset_id": 'line "A" \\ ü', "part_id": "p/1"})
    out = score_spc_batch(msgs([encode(odd)]), OneModel(bundle))
    score = decode(out.score_messages[0][1], Score)  # validates against the published schema
    assert score.asset_id == 'line "A" \\ ü' and score.part_id == "p/1"
    assert score.event_id == odd.event_id and len(score.explanation) == 5


class Models:
    def __init__(self, *bundles):
        self.bundles = list(bundles)

    def models_for(self, modality, asset_id, sku, camera="*"):
        return self.bundles


@pytest.fixture(scope="module")
def ewma():
    sim = simulate_spc(n_parts=3000, seed=0, fault_fraction=0.0)
    return ModelBundle.fit("ewma", sim.X, feature_names=sim.feature_names, target_far=0.01)


def test_every_detector_scores_each_record_and_measurements_are_stored_once(bundle, ewma):
    recs = simulate_spc(n_parts=12, seed=6).records()
    out = score_spc_batch(msgs([encode(r) for r in recs]), Models(bundle, ewma))
    assert len(out.scores) == 24 and len(out.tables[SpcMeasurementRow]) == 12 * 6
    assert {r[6] for r in out.scores} == {"robust_mahalanobis", "ewma"}


def test_chart_memory_continues_across_batches_per_asset(ewma):
    from linewatch.streams.spc_pipeline import StreamStates

    sim = simulate_spc(n_parts=60, seed=7, fault_fraction=0.0, assets=("a", "b"))
    payloads = [encode(r) for r in sim.records()]
    whole = score_spc_batch(msgs(payloads), Models(ewma), StreamStates())
    states = StreamStates()
    first = score_spc_batch(msgs(payloads[:25]), Models(ewma), states)
    second = score_spc_batch(msgs(payloads[25:]), Models(ewma), states)
    by_event = {r[1]: r[8] for r in whole.scores}
    split = {r[1]: r[8] for r in first.scores + second.scores}
    assert split.keys() == by_event.keys()
    assert all(split[k] == pytest.approx(by_event[k]) for k in by_event)
    assert len(states) == 2  # one chart per asset
    # A fresh chart for the second half alone differs: the memory really is carried over.
    alone = {r[1]: r[8] for r in score_spc_batch(msgs(payloads[25:]), Models(ewma), StreamStates()).scores}
    assert any(alone[k] != pytest.approx(split[k]) for k in alone)


def test_records_stamped_outside_the_event_time_window_are_dead_letters(bundle):
    from datetime import UTC, datetime, timedelta

    from linewatch.schemas.event_time import EventTimeWindow

    recs = simulate_spc(n_parts=3, seed=8, fault_fraction=0.0).records()
    now = datetime.now(UTC)
    future = recs[1].model_copy(update={"ts": now + timedelta(days=3)})
    ancient = recs[2].model_copy(update={"ts": datetime(1970, 1, 2, tzinfo=UTC)})
    out = score_spc_batch(msgs([encode(recs[0]), encode(future), encode(ancient)]), OneModel(bundle))
    assert out.counts["records"] == 1 and len(out.scores) == 1
    reasons = [d.reason for d in out.deadletters.items]
    assert "ahead of this worker's clock" in reasons[0] and "older than" in reasons[1]
    wide = EventTimeWindow(max_future_s=7 * 86400.0, max_age_s=60 * 365.25 * 86400)  # a replay of old history
    out = score_spc_batch(msgs([encode(future), encode(ancient)]), OneModel(bundle), event_window=wide)
    assert out.counts["records"] == 2 and not out.deadletters
