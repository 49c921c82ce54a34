"""Shadow verdicts travel the runtime's fallback paths too: one message at a time, and alone after a crash.

Published on ``shadow_scores`` (read back from the real broker), stored in ``shadow_scores`` (the
real database), never in ``scores``, and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.schemas.codec import decode, encode
from linewatch.schemas.messages import Score
from linewatch.simulation.spc import simulate_spc
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import BatchRuntime
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch

pytestmark = pytest.mark.integration

N = 6


class WorkerDied(BaseException):
    """Stands for a crash in native code: nothing after it runs."""


class Runtime(BatchRuntime):
    """Scores SPC with a champion and its shadow; a whole batch fails (``batch_bug``) or kills the worker once."""

    modality = "spc"
    unit = "records"
    train_hint = "linewatch train spc"

    def __init__(self, bundles: list[ModelBundle], *, die: bool = False, **kw) -> None:
        super().__init__(logger=logging.getLogger("test.shadow-runtime"), **kw)
        for b in bundles:
            self.models.add(b)
        self.die, self.states = die, StreamStates()

    def score(self, messages: list[RawMessage]) -> BatchResult:
        if self.die:
            raise WorkerDied
        if len(messages) > 1:
            raise ValueError("a detector bug that only a whole batch triggers")
        return score_spc_batch(messages, self.models, self.states)


@pytest.fixture(scope="module")
def asset_and_models() -> tuple[str, list[ModelBundle]]:
    asset = f"shr-{uuid.uuid4().hex[:6]}"
    sim = simulate_spc(n_parts=1500, seed=4, fault_fraction=0.0, assets=(asset,))
    champion = ModelBundle.fit("hotelling", sim.X, feature_names=sim.feature_names, target_far=0.01,
                               scope=Scope(asset))
    champion.meta["version"] = f"c-{asset}"
    shadow = dataclasses.replace(champion, meta={**champion.meta, "version": f"s-{asset}", "shadow": True})
    return asset, [champion, shadow]


def _count(database_url: str, table: str, asset: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} WHERE asset_id = %s AND model_version LIKE %s",
                            (asset, "_-shr-%")).fetchone()[0]


def _shadow_messages(bootstrap: str, key: bytes, expected: int) -> list[Score]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics("shadow_scores", timeout=10).topics["shadow_scores"].partitions
    consumer.assign([TopicPartition("shadow_scores", p, OFFSET_BEGINNING) for p in partitions])
    out: list[Score] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(out) < expected:
        out += [decode(m.value(), Score) for m in consumer.consume(500, 0.5) if m.error() is None and m.key() == key]
    consumer.close()
    return out


def _batch(asset: str, topic: str, seed: int) -> list[RawMessage]:
    records = simulate_spc(n_parts=N, seed=seed, fault_fraction=0.0, assets=(asset,)).records()
    return [RawMessage(topic, 0, i, asset.encode(), encode(r)) for i, r in enumerate(records)]


def test_one_message_at_a_time_publishes_and_stores_shadow_scores(settings, bootstrap, database_url,
                                                                  asset_and_models):
    asset, bundles = asset_and_models
    sub = f"{asset}-1"
    runtime = Runtime([dataclasses.replace(b, scope=Scope(sub)) for b in bundles], settings=settings,
                      bootstrap=bootstrap, database_url=database_url)
    out = runtime.process(_batch(sub, f"spc-shadow-{uuid.uuid4().hex[:6]}", seed=5))
    mine = [r for r in out.scores if r[7] == f"c-{asset}"]  # other tests' any-asset models may score it too
    assert len(out.shadow_scores) == len(mine) == N and len(out.deadletters) == 0
    assert runtime.stats.counts["shadow_scores"] == N and runtime.stats.counts["scores"] == len(out.scores)
    assert _count(database_url, "shadow_scores", sub) == N and _count(database_url, "scores", sub) == N
    got = _shadow_messages(bootstrap, sub.encode(), N)
    assert len(got) == N and all(s.shadow and s.model_version == f"s-{asset}" for s in got)


def test_messages_processed_alone_after_a_crash_publish_and_store_shadow_scores(settings, bootstrap, database_url,
                                                                                asset_and_models):
    asset, bundles = asset_and_models
    sub = f"{asset}-2"
    scoped = [dataclasses.replace(b, scope=Scope(sub)) for b in bundles]
    batch = _batch(sub, f"spc-shadow-{uuid.uuid4().hex[:6]}", seed=6)
    with pytest.raises(WorkerDied):
        Runtime(scoped, die=True, settings=settings, bootstrap=bootstrap, database_url=database_url).process(batch)
    restarted = Runtime(scoped, settings=settings, bootstrap=bootstrap, database_url=database_url)
    out = restarted.process(batch)  # every offset was in flight: each message is processed alone
    assert len(out.shadow_scores) == N and len(out.deadletters) == 0
    assert _count(database_url, "shadow_scores", sub) == N
    got = _shadow_messages(bootstrap, sub.encode(), N)
    assert {s.event_id for s in got} == {r[1] for r in out.shadow_scores}
