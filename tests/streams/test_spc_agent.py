"""The SPC path end to end through the real broker, the real worker and the real database."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from linewatch.producers.spc import produce_spc
from linewatch.schemas.codec import decode
from linewatch.schemas.messages import MAX_DEADLETTER_EXCERPT_BYTES, DeadLetter, Score
from linewatch.simulation.spc import simulate_spc
from linewatch.training import register, train_and_register
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(settings, database_url):
    normal = simulate_spc(n_parts=4000, seed=11, fault_fraction=0.0)
    bundle, ref = train_and_register(normal.X, feature_names=normal.feature_names, database_url=database_url,
                                       model_dir=settings.model_dir, target_far=0.01, seed=0)
    yield bundle
    # It (and the newer version a test registers) serves every asset of the session database: later
    # modules' assets must not be scored by it too.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE model_versions SET active = false WHERE model_id = %s", (ref.model_id,))


def _parts(asset: str, n: int, seed: int, fault_fraction: float = 0.0):
    start = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=seed)
    sim = simulate_spc(n_parts=n, seed=seed, fault_fraction=fault_fraction, assets=(asset,), start=start,
                       episode_length=20)
    return sim, sim.records()


def _reader(bootstrap: str, topic: str) -> Consumer:
    """A group-less consumer reading every partition from the start (no group join to wait for)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def _count(database_url: str, sql: str, *params) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_record_becomes_score_row_and_message(worker, trained, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    sim, records = _parts(asset, 50, seed=1)
    produce_spc(bootstrap, records)
    n = wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 50, database_url)
    assert n == 50
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT event_id, model_version, detector, top_feature, jsonb_array_length(explanation) "
            "FROM scores WHERE asset_id = %s ORDER BY ts LIMIT 1", (asset,)).fetchone()
        n_meas = conn.execute("SELECT count(*) FROM spc_measurements WHERE asset_id = %s", (asset,)).fetchone()[0]
    assert row[0] == records[0].event_id
    assert row[1] == trained.version and row[2] == "robust_mahalanobis"
    assert row[3] in sim.feature_names and row[4] == 5
    assert n_meas == 50 * len(sim.feature_names)

    consumer = _reader(bootstrap, "scores")
    seen: set[uuid.UUID] = set()
    for _ in range(60):
        for m in consumer.consume(500, 1.0):
            if m.error() is None and m.key() == asset.encode():
                seen.add(decode(m.value(), Score).event_id)
        if len(seen) == 50:
            break
    consumer.close()
    assert seen == {r.event_id for r in records}


def test_redelivered_batch_adds_no_rows(worker, trained, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    _, records = _parts(asset, 40, seed=2)
    produce_spc(bootstrap, records)
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 40, database_url) == 40
    produce_spc(bootstrap, records)  # the same events again, as after a crash before the commit
    marker = f"it-{uuid.uuid4().hex[:6]}"
    _, after = _parts(marker, 5, seed=3)
    produce_spc(bootstrap, after)  # same partition order is not guaranteed, so wait on a later marker too
    wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (marker,), 5, database_url)
    # Give the redelivered copies time to be processed (they were produced before the marker).
    wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND false", (asset,), 1, database_url, timeout=2)
    assert _count(database_url, "SELECT count(*) FROM scores WHERE asset_id = %s", asset) == 40
    assert _count(database_url, "SELECT count(*) FROM spc_measurements WHERE asset_id = %s", asset) == 40 * 6


def test_garbage_goes_to_deadletter_and_scoring_continues(worker, trained, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    _, records = _parts(asset, 30, seed=4)
    garbage = [b"\x00\x01 garbage " + uuid.uuid4().bytes,
               json.dumps({"asset_id": asset, "part_id": "x", "ts": "2026-01-01T00:00:00Z",
                           "values": {"a": 1.0}, "unknown": 1}).encode()]
    before = _count(database_url, "SELECT count(*) FROM deadletters")
    produce_spc(bootstrap, records[:10])
    produce_spc(bootstrap, records[10:], extra=garbage)
    produce_spc(bootstrap, records[:0], extra=[])
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 30, database_url) == 30
    assert wait_for("SELECT count(*) FROM deadletters", (), before + 2, database_url) >= before + 2
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT source_topic, reason, payload FROM deadletters ORDER BY received_at DESC "
                            "LIMIT 2").fetchall()
    payloads = {bytes(r[2]) for r in rows}
    assert set(garbage) <= payloads
    assert all(r[0] == "spc" for r in rows)
    reasons = " | ".join(r[1] for r in rows)
    assert "invalid JSON" in reasons and "Extra inputs are not permitted" in reasons

    # ... and the dead-letter topic carries the original bytes with where they came from.
    consumer = _reader(bootstrap, "deadletter")
    found: list[DeadLetter] = []
    for _ in range(30):
        for m in consumer.consume(500, 1.0):
            if m.error() is None:
                dl = decode(m.value(), DeadLetter)
                if dl.payload in garbage:
                    found.append(dl)
        if len(found) >= 2:
            break
    consumer.close()
    assert len(found) == 2
    assert all(d.source_topic == "spc" and d.offset >= 0 for d in found)
    assert worker.poll() is None, "the worker must survive bad input"


def test_poison_pills_of_any_size_or_content_do_not_stop_the_worker(worker, trained, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    _, records = _parts(asset, 20, seed=9)
    huge = b'{"asset_id":"' + asset.encode() + b'","pad":"' + b"x" * 990_000 + b'"'  # bad JSON, just under 1 MB
    nul_key = json.dumps({"asset_id": asset, "part_id": "nul", "ts": "2026-01-01T00:00:00Z",
                          "values": {"bore\u0000mm": 1.0}}).encode()
    assert b"\\u0000" in nul_key
    produce_spc(bootstrap, records[:10], extra=[huge, nul_key])
    produce_spc(bootstrap, records[10:])  # behind the poison: must still be scored
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 20, database_url) == 20
    digest = hashlib.sha256(huge).hexdigest()
    assert wait_for("SELECT count(*) FROM deadletters WHERE payload IN (%s, %s)", (huge, nul_key), 2,
                    database_url) == 2
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT length(payload), reason FROM deadletters WHERE payload = %s",
                              (huge,)).fetchone()
        nul_reason = conn.execute("SELECT reason FROM deadletters WHERE payload = %s", (nul_key,)).fetchone()[0]
    assert stored[0] == len(huge) and "exceeds" in stored[1]  # the table keeps every byte
    assert "\\x00" in nul_reason and "\x00" not in nul_reason

    consumer = _reader(bootstrap, "deadletter")
    found = None
    for _ in range(30):
        for m in consumer.consume(500, 1.0):
            if m.error() is None and len(m.value()) < 200_000:
                dl = decode(m.value(), DeadLetter)
                if dl.payload_sha256 == digest:
                    found = dl
        if found:
            break
    consumer.close()
    assert found is not None and found.payload_truncated and found.payload_size == len(huge)
    assert huge.startswith(found.payload) and len(found.payload) == MAX_DEADLETTER_EXCERPT_BYTES
    assert worker.poll() is None, "the worker must survive poison pills"


def test_correlation_break_is_flagged_and_blamed_on_the_pair(worker, trained, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    sim, records = _parts(asset, 600, seed=5, fault_fraction=0.3)
    produce_spc(bootstrap, records)
    wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 600, database_url)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT event_id, is_anomaly, top_feature FROM scores WHERE asset_id = %s",
                            (asset,)).fetchall()
    by_id = {r[0]: (r[1], r[2]) for r in rows}
    labels = np.array([sim.fault[i] for i in range(len(sim))])
    ids = [r.event_id for r in records]
    brk = [by_id[e] for e, f in zip(ids, labels, strict=True) if f == "correlation_break"]
    normal = [by_id[e] for e, f in zip(ids, labels, strict=True) if f == "none"]
    assert brk, "the simulation must contain a correlation break"
    hit_rate = np.mean([a for a, _ in brk])
    false_rate = np.mean([a for a, _ in normal])
    assert hit_rate > 0.2 > false_rate + 0.1
    blamed = [t for a, t in brk if a]
    assert blamed
    assert max(set(blamed), key=blamed.count) in {"bore_diameter_mm", "shaft_runout_um"}


def test_worker_picks_up_a_new_model_version_without_restart(worker, trained, settings, bootstrap, database_url):
    # A new version of the same fitted model (same threshold: the session's later tests see the same
    # scores), registered as an operator's threshold change is (feedback.apply); a refit costs ~10 s of MCD.
    newer = trained.with_threshold(trained.threshold, reason="a new version for the worker to pick up")
    register(newer, database_url=database_url, model_dir=settings.model_dir)
    asset = f"it-{uuid.uuid4().hex[:6]}"
    deadline_parts = 0
    for attempt in range(20):  # the worker refreshes its models every second
        _, records = _parts(asset, 5, seed=100 + attempt)
        produce_spc(bootstrap, records)
        deadline_parts += 5
        wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), deadline_parts, database_url)
        versions = {r[0] for r in psycopg.connect(database_url).execute(
            "SELECT DISTINCT model_version FROM scores WHERE asset_id = %s", (asset,)).fetchall()}
        if newer.version in versions:
            break
    assert newer.version in versions
    assert worker.poll() is None


def test_batched_messages_are_scored_per_record_and_a_bad_record_is_dead_lettered_alone(
        worker, trained, bootstrap, database_url):
    asset = f"it-{uuid.uuid4().hex[:6]}"
    _, records = _parts(asset, 30, seed=9)
    items = [json.loads(r.model_dump_json(exclude_none=True)) for r in records[20:]]
    items[3]["values"]["length_mm"] = "120.0"  # a string where a number belongs
    bad_list = json.dumps(items).encode()
    produce_spc(bootstrap, records[:20], records_per_message=8)  # arrays of 8, 8 and 4
    produce_spc(bootstrap, [], extra=[bad_list])
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 29, database_url) == 29
    with psycopg.connect(database_url) as conn:
        ids = {r[0] for r in conn.execute("SELECT event_id FROM scores WHERE asset_id = %s", (asset,))}
    assert ids == {r.event_id for i, r in enumerate(records) if i != 23}
    payload = json.dumps(items[3], separators=(",", ":")).encode()
    found = wait_for("SELECT count(*) FROM deadletters WHERE payload = %s", (payload,), 1, database_url)
    assert found == 1, "the bad record's own bytes are the dead letter's payload"
    with psycopg.connect(database_url) as conn:
        reason = conn.execute("SELECT reason FROM deadletters WHERE payload = %s", (payload,)).fetchone()[0]
    assert reason.startswith("record 3 of 10: SpcRecord failed validation: values.length_mm")
    assert worker.poll() is None


def test_a_batch_of_large_batched_messages_is_written_in_runs_of_bounded_size(worker, trained, settings, bootstrap,
                                                                             database_url):
    # Five arrays of 1,000 records (~700 KB each) arrive within one take_events batch; the agent cuts
    # it into runs of batch_size KiB, so no transaction holds all 5,000 records.
    from linewatch.streams.spc_agent import BYTES_PER_RECORD

    asset = f"it-{uuid.uuid4().hex[:6]}"
    _, records = _parts(asset, 5000, seed=12)
    produce_spc(bootstrap, records, records_per_message=1000)
    assert wait_for("SELECT count(DISTINCT event_id) FROM scores WHERE asset_id = %s", (asset,), 5000,
                    database_url, timeout=120) == 5000
    with psycopg.connect(database_url) as conn:
        per_tx = [n for n, in conn.execute(
            "SELECT count(DISTINCT event_id) FROM scores WHERE asset_id = %s GROUP BY xmin::text", (asset,))]
        doubled = conn.execute("SELECT count(*) - count(DISTINCT (event_id, detector)) FROM scores "
                               "WHERE asset_id = %s", (asset,)).fetchone()[0]
    record_bytes = min(len(r.model_dump_json(exclude_none=True)) for r in records)
    assert max(per_tx) <= settings.batch_size * BYTES_PER_RECORD / record_bytes + 1000, per_tx
    assert len(per_tx) >= 3 and doubled == 0
    assert worker.poll() is None
