"""What every scoring agent shares: the batch runtime, its failure policy and the Faust agent body.

The SPC, signals and frames agents differ in how they score a batch and what they count; how
a batch travels does not, and must not, since a worker has to behave the same whichever input
broke. :class:`BatchRuntime` holds that common path: refresh the models, score (re-scoring one
message at a time when a whole batch fails, so only the failing message is dead-lettered),
publish scores and dead letters, COPY the rows, flush the publisher, and keep per-stage timings.
:func:`register_batch_agent` wires a runtime into Faust: ``take_events`` batches run on one
worker thread, so Faust's event loop stays free to heartbeat and fetch, and the loop body
returns (letting Faust acknowledge the events) only after the rows are committed and the
published messages confirmed, so a Kafka offset never runs ahead of durable data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import faust

from linewatch.errors import InfrastructureError
from linewatch.schemas.codec import encode
from linewatch.schemas.topics import DEADLETTER, SCORES
from linewatch.storage.writer import BatchWriter
from linewatch.streams.kafka import Publisher
from linewatch.streams.messages import DeadLetters, RawMessage

log = logging.getLogger(__name__)

#: Exit status when infrastructure stays unavailable (EX_SOFTWARE-like; supervisors restart on it).
EXIT_INFRASTRUCTURE = 70
#: Logged once the worker holds partitions; the demo and tests wait for it.
READY_MESSAGE = "linewatch worker ready:"
#: Seconds between throughput lines in the worker log.
STATS_EVERY_S = 5.0


class BatchResult(Protocol):
    """What a modality's batch processor returns, as far as the shared runtime needs to know."""

    score_messages: list[tuple[bytes, bytes]]
    deadletters: DeadLetters

    def rows(self) -> dict[type, list[tuple]]: ...


R = TypeVar("R", bound=BatchResult)


@dataclass
class BatchStats:
    """Counters every agent keeps; subclasses add their modality's own."""

    batches: int = 0
    deadletters: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Seconds spent per stage, so a slow worker says where its time goes.
    score_s: float = 0.0
    write_s: float = 0.0
    publish_s: float = 0.0


class BatchRuntime(ABC, Generic[R]):
    """Owns an agent's state (models, writer, publisher, counters) and processes one batch.

    Subclasses say how to score (:meth:`score`, :meth:`score_one`), how to build and merge
    results (:meth:`empty_result`, :meth:`merge`), what to count and warn about (:meth:`count`)
    and what their throughput line says (:meth:`log_stats`). The nouns below keep each agent's
    log lines worded as they always were (operators and tests grep for them).
    """

    #: "<models_noun> loaded: ..." and the readiness line, e.g. ``"spc models"``.
    models_noun: ClassVar[str]
    #: "scoring a batch of N <batch_noun> failed", e.g. ``"spc messages"``.
    batch_noun: ClassVar[str]
    #: "<message_noun> ORIGIN could not be scored", e.g. ``"spc message"``.
    message_noun: ClassVar[str]
    #: "N <deadletter_noun> dead-lettered", e.g. ``"spc message(s)"``.
    deadletter_noun: ClassVar[str]

    def __init__(self, *, models: Any, writer: BatchWriter, publisher: Publisher, stats: BatchStats,
                 logger: logging.Logger) -> None:
        #: A model cache (``refresh(force=...)`` -> changed ids, ``len``); typed loosely because each
        #: modality's scorer wants its own cache class.
        self.models = models
        self.writer = writer
        self.publisher = publisher
        self.stats = stats
        self.log = logger
        self._last_log = time.monotonic()

    @abstractmethod
    def score(self, messages: list[RawMessage]) -> R:
        """Score a whole batch (may raise on a detector bug; :meth:`process` then falls back)."""

    def score_one(self, message: RawMessage) -> R:
        """Score one message during the one-by-one fallback."""
        return self.score([message])

    @abstractmethod
    def empty_result(self) -> R:
        """A result with nothing in it, which the one-by-one fallback fills."""

    def merge(self, into: R, part: R) -> None:
        """Append ``part`` to ``into`` (results that have a ``merge`` method need no override)."""
        into.merge(part)  # type: ignore[attr-defined]

    def add_score_time(self, result: R, seconds: float) -> None:
        """Account the wall time :meth:`process` spent scoring ``result``."""
        self.stats.score_s += seconds

    def count(self, result: R) -> None:
        """Add ``result``'s modality counters to the stats and log its warnings."""

    @abstractmethod
    def log_stats(self, now: float) -> None:
        """Log the throughput line (called every :data:`STATS_EVERY_S` at most)."""

    def process(self, messages: list[RawMessage]) -> R:
        changed = self.models.refresh()
        if changed:
            self.log.warning("%s loaded: %s", self.models_noun, ", ".join(changed))
        t0 = time.perf_counter()
        try:
            result = self.score(messages)
        except Exception:
            self.log.exception("scoring a batch of %d %s failed; retrying one by one", len(messages),
                               self.batch_noun)
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
        self.add_score_time(result, t1 - t0)
        self.stats.publish_s += (t2 - t1) + (t4 - t3)
        self.stats.write_s += t3 - t2
        self._count(result)
        return result

    def _one_by_one(self, messages: list[RawMessage]) -> R:
        merged = self.empty_result()
        for msg in messages:
            try:
                part = self.score_one(msg)
            except Exception as e:  # a detector bug must not take the agent down
                self.log.exception("%s %s could not be scored", self.message_noun, msg.origin)
                merged.deadletters.add(msg, e)
                continue
            self.merge(merged, part)
        return merged

    def _count(self, r: R) -> None:
        s = self.stats
        s.batches += 1
        s.deadletters += len(r.deadletters)
        if len(r.deadletters):
            self.log.warning("%d %s dead-lettered, e.g. %s: %s", len(r.deadletters), self.deadletter_noun,
                             r.deadletters.items[0].origin, r.deadletters.items[0].reason[:200])
        self.count(r)
        now = time.monotonic()
        if now - self._last_log >= STATS_EVERY_S:
            self._last_log = now
            self.log_stats(now)


def stop_without_ack(error: BaseException, logger: logging.Logger = log) -> None:
    """Exit the process at once so the current batch is redelivered to the next worker."""
    if isinstance(error, InfrastructureError):
        logger.critical("stopping the worker: %s", error)
    else:
        logger.critical("stopping the worker after an unexpected error", exc_info=error)
    logging.shutdown()
    os._exit(EXIT_INFRASTRUCTURE)


def to_raw(event: faust.types.EventT) -> RawMessage:
    m = event.message
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)


def raw_topic(app: faust.App, name: str, **options: Any) -> faust.TopicT:
    """A topic of undecoded bytes: the batch processors decode (and dead-letter) themselves."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     **options)


def register_batch_agent(
    app: faust.App,
    topic: faust.TopicT,
    runtime: BatchRuntime[Any],
    *,
    batch_size: int,
    within: float,
    name: str,
    thread_name_prefix: str,
    ready_message: str = READY_MESSAGE,
    fatal: type[BaseException] | tuple[type[BaseException], ...] = BaseException,
) -> ThreadPoolExecutor:
    """Add an agent that feeds ``topic``'s ``take_events`` batches to ``runtime.process``.

    Each agent gets its own single thread, so one modality's batch never queues behind (or
    delays) another's, and state touched by ``process`` is touched by one thread only; the
    executor is returned for other hooks that must not overlap a batch (the signals agent
    saves its state on it). Once partitions are assigned the models are loaded on that thread
    and ``ready_message`` is logged. An exception of type ``fatal`` from ``process`` exits the
    process through :func:`stop_without_ack`; anything else propagates to Faust.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name_prefix)

    @app.on_partitions_assigned.connect
    async def _ready(sender: object, assigned: set, **_: object) -> None:
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(pool, lambda: runtime.models.refresh(force=True))
        runtime.log.warning("%s %d partition(s) assigned; %s: %s", ready_message, len(assigned),
                            runtime.models_noun, ", ".join(loaded) or f"{len(runtime.models)} already loaded")

    @app.agent(topic, name=name)
    async def score_batches(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(batch_size, within=within):
            messages = [to_raw(e) for e in events]
            try:
                await loop.run_in_executor(pool, runtime.process, messages)
            except fatal as e:
                # Faust acks a take_events batch in a finally block, even when the body raises;
                # exiting here, before that runs, is what keeps an unwritten batch unacknowledged.
                stop_without_ack(e, runtime.log)

    return pool
