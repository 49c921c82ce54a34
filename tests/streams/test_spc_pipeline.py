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
    # A hold-out calibration (one robust fit, not six cross-fitted ones): these tests are about the pipeline.
    return ModelBundle.fit("robust_mahalanobis", sim.X, feature_names=sim.feature_names, target_far=0.01,
                           calibration_fraction=0.3)


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


# --------------------------------------------------------------------------- run rules, coverage, restarts


@pytest.fixture(scope="module")
def covered():
    """A Hotelling model of the hand-built parts, trained with its context and a rule baseline."""
    from linewatch.training import fit_model
    from tests.spc_parts import FEATURES, good_context, good_rows

    return fit_model(good_rows(2000, 40), detector="hotelling", feature_names=FEATURES, target_far=0.01,
                     context=good_context(2000, "press-9"))


def _run(asset: str, n: int, bore_z: float) -> list:
    """``n`` parts with bore ``bore_z`` σ above centre and runout alternating ±0.3σ (no pattern of its own)."""
    from tests.spc_parts import part

    return [part(asset, i, (bore_z, 0.3 if i % 2 else -0.3)) for i in range(n)]


def _notes(out, kind: str) -> dict[str, list[tuple[str, str]]]:
    """part_id -> [(name, detail)] of the explanation entries of ``kind``, read back from the score rows."""
    got: dict[str, list[tuple[str, str]]] = {}
    for row in out.scores:
        for e in json.loads(row[15]):
            if e.get("kind") == kind:
                got.setdefault(row[5], []).append((e["name"], e["detail"]))
    return got


def test_run_rules_are_evaluated_live_across_batches(covered):
    from linewatch.streams.spc_pipeline import StreamStates

    assert covered.meta["run_rules"]["rules"] == "western_electric"
    recs = _run("press-9", 11, 0.5)  # 8 in a row above centre completes we4 at p07, then p08, p09, p10
    states = StreamStates()
    first = score_spc_batch(msgs([encode(r) for r in recs[:5]]), OneModel(covered), states)
    second = score_spc_batch(msgs([encode(r) for r in recs[5:]]), OneModel(covered), states)
    assert not _notes(first, "rule")
    rules = _notes(second, "rule")
    assert rules == {f"p{i:02d}": [("bore_mm", "we4")] for i in (7, 8, 9, 10)}
    assert second.counts["rule_violations"] == 4
    # The message says the same as the row, and it validates against the published schema.
    by_part = {decode(m[1], Score).part_id: decode(m[1], Score) for m in second.score_messages}
    note = next(c for c in by_part["p07"].explanation if c.kind == "rule")
    assert note.name == "bore_mm" and note.detail == "we4" and note.share == 0.0 and note.value == pytest.approx(
        0.5, abs=0.1)
    assert by_part["p07"].explanation[0].kind == "feature"  # the score's own contributions come first
    # Without the state carried over, the second batch alone has no run of eight.
    alone = score_spc_batch(msgs([encode(r) for r in recs[5:]]), OneModel(covered), StreamStates())
    assert not _notes(alone, "rule")


def test_rule_state_is_per_asset(covered):
    from linewatch.streams.spc_pipeline import StreamStates

    a, b = _run("press-9", 6, 0.5), _run("press-8", 6, 0.5)
    mixed = [r for pair in zip(a, b, strict=True) for r in pair]  # interleaved: 12 above centre, 6 per asset
    out = score_spc_batch(msgs([encode(r) for r in mixed]), OneModel(covered), StreamStates())
    assert not _notes(out, "rule")


def test_parts_from_an_unseen_context_are_flagged(covered):
    from tests.spc_parts import part

    recs = [part("press-9", 0, (0.0, 0.0)),
            part("press-9", 1, (0.0, 0.0), shift="night"),
            part("press-9", 2, (0.0, 0.0), lot="L7", machine_state=None, minutes=17 * 60),  # 03:00 UTC next day
            part("press-2", 3, (0.0, 0.0), sku="housing-z")]
    out = score_spc_batch(msgs([encode(r) for r in recs]), OneModel(covered))
    notes = _notes(out, "unseen_context")
    assert notes == {
        "p01": [("shift", "shift=night never in training")],
        "p02": [("lot", "lot=L7 never in training"), ("hour", "hour 03 never in training")],
        # The training data had no SKU column: SKUs are not judged, the asset is.
        "p03": [("asset", "asset=press-2 never in training")],
    }
    assert out.counts["unseen_context"] == 3


def test_a_chart_restarts_after_its_signal_in_the_live_path():
    from linewatch.streams.spc_pipeline import StreamStates
    from linewatch.training import fit_model
    from tests.spc_parts import FEATURES, good_rows, part

    cusum = fit_model(good_rows(2000, 41), detector="cusum", feature_names=FEATURES, target_far=0.01)
    hold = fit_model(good_rows(2000, 41), detector="cusum", feature_names=FEATURES, target_far=0.01,
                     detector_params={"after_alarm": "hold"})
    rng = np.random.default_rng(42)
    z = rng.normal(size=(120, 2))
    z[40:60, 0] += 2.5  # a 2.5σ bore shift for 20 parts, then back
    payloads = [encode(part("press-9", i, tuple(z[i]))) for i in range(120)]

    def alarms(bundle) -> list[int]:
        states, flagged = StreamStates(), []
        for i in range(0, 120, 10):  # batches of ten, as a worker takes them
            out = score_spc_batch(msgs(payloads[i:i + 10]), OneModel(bundle), states)
            flagged += [int(r[5][1:]) for r in out.scores if r[12]]
        return sorted(flagged)

    restart, held = alarms(cusum), alarms(hold)
    assert any(40 <= i < 60 for i in restart)
    assert len([i for i in restart if i >= 65]) <= 1  # silent again a few parts after the return
    assert len([i for i in held if i >= 60]) > len([i for i in restart if i >= 60])


def test_a_context_note_is_never_the_top_feature():
    from linewatch.training import fit_model
    from tests.spc_parts import FEATURES, good_context, good_rows, part

    forest = fit_model(good_rows(500, 43), detector="isolation_forest", feature_names=FEATURES, target_far=0.05,
                       context=good_context(500, "press-9"), detector_params={"n_estimators": 10})
    out = score_spc_batch(msgs([encode(part("press-9", 0, (0.0, 0.0), shift="night"))]), OneModel(forest))
    entries = json.loads(out.scores[0][15])
    assert [e["kind"] for e in entries] == ["unseen_context"]  # the forest explains nothing itself
    assert out.scores[0][14] is None
