"""The SPC agent: take a batch from ``spc``, score it, persist it, publish it, then acknowledge.

The agent is thin. Faust acknowledges the events of a ``take_events`` batch only after the
loop body returns, and the body returns only after the rows are committed and the published
messages are confirmed, so a Kafka offset never runs ahead of durable data. Work that
blocks (scoring, COPY, flush) runs on one worker thread, keeping Faust's event loop free to
heartbeat and fetch the next batch.

Failure policy:
- bad data -> dead letter (topic and table) with the reason; the agent goes on;
- an unexpected error while scoring a batch -> the batch is re-scored one message at a time
  and only the message that fails is dead-lettered;
- database or broker unavailable after retries -> log and exit the process at once, without
  acknowledging, so the supervisor restarts the worker and the batch is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import faust

from linewatch.config import Settings
from linewatch.errors import InfrastructureError
from linewatch.schemas.codec import encode
from linewatch.schemas.topics import DEADLETTER, SCORES, SPC
from linewatch.storage.model_registry import ModelCache
from linewatch.storage.writer import BatchWriter, retry_schedule
from linewatch.streams.kafka import Publisher
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import SpcBatchResult, StreamStates, score_spc_batch

log = logging.getLogger(__name__)

#: Exit status when infrastructure stays unavailable (EX_SOFTWARE-like; supervisors restart on it).
EXIT_INFRASTRUCTURE = 70
#: Logged once the worker holds partitions; the demo and tests wait for it.
READY_MESSAGE = "linewatch worker ready:"
#: Seconds between throughput lines in the worker log.
STATS_EVERY_S = 5.0


@dataclass
class SpcStats:
    batches: int = 0
    records: int = 0
    scores: int = 0
    deadletters: int = 0
    anomalies: int = 0
    unscored: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Seconds spent per stage, so a slow worker says where its time goes.
    score_s: float = 0.0
    write_s: float = 0.0
    publish_s: float = 0.0


class SpcRuntime:
    """Owns the agent's state: model cache, writer, publisher and counters."""

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str) -> None:
        self.models = ModelCache(database_url=database_url, modality="spc", refresh_s=settings.model_refresh_s)
        self.writer = BatchWriter(database_url, retry_delays=retry_schedule(settings.db_retry_total_s))
        self.publisher = Publisher(bootstrap)
        self.streams = StreamStates()
        self.stats = SpcStats()
        self._last_log = time.monotonic()

    def process(self, messages: list[RawMessage]) -> SpcBatchResult:
        changed = self.models.refresh()
        if changed:
            log.warning("spc models loaded: %s", ", ".join(changed))
        t0 = time.perf_counter()
        try:
            result = score_spc_batch(messages, self.models, self.streams)
        except Exception:
            log.exception("scoring a batch of %d spc messages failed; retrying one by one", len(messages))
            result = self._one_by_one(messages)
        t1 = time.perf_counter()
        # Hand the messages to librdkafka first so delivery overlaps with the database write.
        self.publisher.publish(SCORES.name, result.score_messages)
        self.publisher.publish(DEADLETTER.name, ((d.key, encode(d)) for d in result.deadletters.items))
        t2 = time.perf_counter()
        self.writer.write(result.rows())
        t3 = time.perf_counter()
        self.publisher.flush()
        t4 = time.perf_counter()
        self.stats.score_s += t1 - t0
        self.stats.publish_s += (t2 - t1) + (t4 - t3)
        self.stats.write_s += t3 - t2
        self._count(result)
        return result

    def _one_by_one(self, messages: list[RawMessage]) -> SpcBatchResult:
        merged = SpcBatchResult()
        for msg in messages:
            try:
                part = score_spc_batch([msg], self.models, self.streams)
            except Exception as e:  # a detector bug must not take the agent down
                log.exception("spc message %s could not be scored", msg.origin)
                merged.deadletters.add(msg, e)
                continue
            merged.measurements += part.measurements
            merged.scores += part.scores
            merged.score_messages += part.score_messages
            merged.deadletters.items += part.deadletters.items
            merged.records += part.records
            merged.unscored += part.unscored
            merged.anomalies += part.anomalies
        return merged

    def _count(self, r: SpcBatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.records += r.records
        s.scores += len(r.scores)
        s.deadletters += len(r.deadletters)
        s.anomalies += r.anomalies
        s.unscored += r.unscored
        if len(r.deadletters):
            log.warning("%d spc message(s) dead-lettered, e.g. %s: %s", len(r.deadletters),
                        r.deadletters.items[0].origin, r.deadletters.items[0].reason[:200])
        if r.unscored:
            log.warning("%d spc record(s) stored without a score: no model for their asset/SKU yet "
                        "(train one with `linewatch train spc`)", r.unscored)
        now = time.monotonic()
        if now - self._last_log >= STATS_EVERY_S:
            self._last_log = now
            rate = s.records / max(now - s.started, 1e-9)
            log.warning("spc: %d records, %d scores, %d anomalies, %d dead letters (%.0f records/s; "
                        "busy %.1f s scoring, %.1f s writing, %.1f s publishing)",
                        s.records, s.scores, s.anomalies, s.deadletters, rate, s.score_s, s.write_s, s.publish_s)


def stop_without_ack(error: BaseException) -> None:
    """Exit the process at once so the current batch is redelivered to the next worker."""
    if isinstance(error, InfrastructureError):
        log.critical("stopping the worker: %s", error)
    else:
        log.critical("stopping the worker after an unexpected error", exc_info=error)
    logging.shutdown()
    os._exit(EXIT_INFRASTRUCTURE)


def to_raw(event: faust.types.EventT) -> RawMessage:
    m = event.message
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)


def register_spc_agent(app: faust.App, *, settings: Settings, bootstrap: str, database_url: str) -> None:
    topic = app.topic(SPC.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    runtime = SpcRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spc-batch")

    @app.on_partitions_assigned.connect
    async def _ready(sender: object, assigned: set, **_: object) -> None:
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(pool, lambda: runtime.models.refresh(force=True))
        log.warning("%s %d partition(s) assigned; spc models: %s", READY_MESSAGE, len(assigned),
                    ", ".join(loaded) or f"{len(runtime.models)} already loaded")

    @app.agent(topic, name="linewatch.score_spc")
    async def score_spc(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            messages = [to_raw(e) for e in events]
            try:
                await loop.run_in_executor(pool, runtime.process, messages)
            except BaseException as e:
                # Faust acks a take_events batch in a finally block, even when the body raises;
                # exiting here, before that runs, is what keeps an unwritten batch unacknowledged.
                stop_without_ack(e)
