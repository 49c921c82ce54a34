"""A message that stops the worker is found and set aside after a restart instead of stopping every worker.

The crash is simulated: the test scorer raises an exception that is not an ``Exception`` (as far as
the runtime can tell, the process died there), and a fresh runtime plays the restarted worker. The
offsets in flight are recorded in the real database, the messages published to the real broker.
"""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest

from linewatch.schemas.codec import encode
from linewatch.simulation.spc import simulate_spc
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import BatchRuntime
from linewatch.streams.spc_pipeline import score_spc_batch

pytestmark = pytest.mark.integration


class WorkerDied(BaseException):
    """Stands for a crash in native code or the OOM killer: nothing after it runs."""


class Runtime(BatchRuntime):
    modality = "spc"
    unit = "records"
    train_hint = "linewatch train spc"

    def __init__(self, poison: bytes, **kw) -> None:
        super().__init__(logger=logging.getLogger("test.poison"), **kw)
        self.poison = poison

    def score(self, messages: list[RawMessage]) -> BatchResult:
        if any(m.value == self.poison for m in messages):
            raise WorkerDied
        return score_spc_batch(messages, self.models)


def _in_flight(database_url: str, topic: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute('SELECT "partition", first_offset, last_offset, attempts FROM processing_attempts '
                            "WHERE topic = %s ORDER BY first_offset, last_offset", (topic,)).fetchall()


def test_the_message_that_stops_workers_is_dead_lettered_after_a_restart(settings, bootstrap, database_url):
    topic = f"spc-poison-{uuid.uuid4().hex[:6]}"  # a topic name of its own keeps the attempt rows apart
    asset = f"it-{uuid.uuid4().hex[:6]}"
    records = simulate_spc(n_parts=8, seed=31, fault_fraction=0.0, assets=(asset,)).records()
    poison = encode(records[3])
    batch = [RawMessage(topic, 0, 100 + i, asset.encode(), encode(r)) for i, r in enumerate(records[:6])]

    def runtime() -> Runtime:
        return Runtime(poison, settings=settings, bootstrap=bootstrap, database_url=database_url)

    with pytest.raises(WorkerDied):
        runtime().process(batch)  # the first worker dies somewhere in offsets 100-105
    assert _in_flight(database_url, topic) == [(0, 100, 105, 1)]

    for _ in range(2):  # the next ones process those offsets alone and die at 103, twice
        with pytest.raises(WorkerDied):
            runtime().process(batch)
    assert (0, 103, 103, 2) in _in_flight(database_url, topic)

    # A later take of the same offsets, cut differently (Faust's batches follow timing), sets 103
    # aside, stores the others and leaves nothing in flight.
    longer = [*batch, *(RawMessage(topic, 0, 106 + i, asset.encode(), encode(r)) for i, r in enumerate(records[6:]))]
    out = runtime().process(longer)
    assert [d.offset for d in out.deadletters.items] == [103]
    assert "stopped a worker 2 time(s)" in out.deadletters.items[0].reason
    assert out.counts["records"] == 7
    assert _in_flight(database_url, topic) == []
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM deadletters WHERE source_topic = %s AND \"offset\" = 103",
                              (topic,)).fetchone()[0]
    assert stored == 1

    clean = runtime().process([RawMessage(topic, 0, 108, asset.encode(), encode(records[0]))])
    assert not clean.deadletters and _in_flight(database_url, topic) == []  # normal batches again


def test_a_worker_killed_once_costs_no_message(settings, bootstrap, database_url):
    """Killed from outside while a batch held one message of a partition: that message is not condemned."""
    topic = f"spc-kill-{uuid.uuid4().hex[:6]}"
    asset = f"it-{uuid.uuid4().hex[:6]}"
    records = simulate_spc(n_parts=3, seed=32, fault_fraction=0.0, assets=(asset,)).records()
    batch = [RawMessage(topic, 0, 7, asset.encode(), encode(records[0])),
             RawMessage(topic, 1, 40, asset.encode(), encode(records[1])),
             RawMessage(topic, 1, 41, asset.encode(), encode(records[2]))]
    dying = Runtime(encode(records[2]), settings=settings, bootstrap=bootstrap, database_url=database_url)
    with pytest.raises(WorkerDied):
        dying.process(batch)  # a kill, as far as the records can tell
    out = Runtime(b"", settings=settings, bootstrap=bootstrap, database_url=database_url).process(batch)
    assert not out.deadletters and out.counts["records"] == 3
    assert _in_flight(database_url, topic) == []
