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
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, ClassVar

import faust
import psycopg

from linewatch.config import Settings
from linewatch.defects.stream import defect_layer
from linewatch.errors import DataError, InfrastructureError
from linewatch.kafka import Publisher
from linewatch.lifecycle import EXIT_INFRASTRUCTURE, READY_MESSAGE
from linewatch.schemas.event_time import EventTimeWindow
from linewatch.schemas.topics import DEADLETTER, SCORES, SHADOW_SCORES
from linewatch.storage.model_registry import ModelCache
from linewatch.storage.writer import BatchWriter, Span, retry_schedule, spans_of
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage

log = logging.getLogger(__name__)

#: Seconds between throughput lines in the worker log.
STATS_EVERY_S = 5.0
#: Dead-letter reasons are counted by their first this many characters (the detail after is per message).
REASON_PREFIX_CHARS = 80
#: Distinct reason prefixes a runtime counts; later new ones add to :data:`OTHER_REASONS`, so memory stays bounded.
MAX_DEADLETTER_REASONS = 50
OTHER_REASONS = "(other reasons)"
#: A message that was being processed alone when a worker died this many times is dead-lettered. Two,
#: not one: a worker killed from outside (an operator, the OOM killer for another reason) while a
#: message happened to be in flight alone must not cost that message.
MAX_MESSAGE_ATTEMPTS = 2


@dataclass
class BatchStats:
    """Counters every agent keeps: its batch results' counts summed, and wall seconds per stage."""

    batches: int = 0
    deadletters: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    #: Thread-seconds a modality measures itself (frames: decoding, scoring), summed.
    seconds: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    #: Wall seconds per stage, so a slow worker says where its time goes.
    score_s: float = 0.0
    write_s: float = 0.0
    publish_s: float = 0.0
    #: Dead letters by the first :data:`REASON_PREFIX_CHARS` characters of their reason (bounded).
    deadletter_reasons: Counter[str] = field(default_factory=Counter)
    #: Wall-clock time (``time.time()``) the last batch was stored and published; None before the first.
    last_batch_at: float | None = None

    @property
    def scores(self) -> int:
        return self.counts["scores"]

    def count_reasons(self, reasons: Iterable[str]) -> None:
        """Add dead-letter reasons by prefix; past :data:`MAX_DEADLETTER_REASONS` prefixes, new ones are pooled.

        >>> s = BatchStats()
        >>> s.count_reasons(["bad json: line 1", "bad json: line 1", "x" * 100])
        >>> s.deadletter_reasons["bad json: line 1"], len(max(s.deadletter_reasons, key=len))
        (2, 80)
        """
        counter = self.deadletter_reasons
        for reason in reasons:
            key = reason[:REASON_PREFIX_CHARS]
            if key not in counter and len(counter) >= MAX_DEADLETTER_REASONS:
                key = OTHER_REASONS
            counter[key] += 1


class BatchRuntime(ABC):
    """Owns an agent's state (models, writer, publisher, counters) and processes one batch.

    A modality says only what differs: its name, how it decodes and scores a batch
    (:meth:`score`), which counter its rate is of (``unit``) and how a model is trained for
    events that have none yet (``train_hint``). Everything else (model refresh, the
    one-by-one fallback, publish, COPY, flush, counters, log lines) is the same for all.
    """

    #: The modality: the ``model_versions.modality`` its models have and the log lines' first word.
    modality: ClassVar[str]
    #: The counter the throughput line's rate is of (``"records"``, ``"windows"``, ``"frames"``).
    unit: ClassVar[str]
    #: The command that trains a model for events that have none yet (said once per scope).
    train_hint: ClassVar[str]
    #: Whether its events are input a defect classifier reads (the modalities; not fusion or dispositions).
    classifies: ClassVar[bool] = True

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str, logger: logging.Logger) -> None:
        self.models = ModelCache(database_url=database_url, modalities=(self.modality,),
                                 refresh_s=settings.model_refresh_s, cache_dir=settings.model_cache_dir)
        #: The Day-30 layer: the scopes' defect classifiers, consulted beside the anomaly models.
        self.defects = (defect_layer(database_url, refresh_s=settings.model_refresh_s,
                                     cache_dir=settings.model_cache_dir, modalities=(self.modality,))
                        if self.classifies else None)
        self.writer = BatchWriter(database_url, retry_delays=retry_schedule(settings.db_retry_total_s))
        self.publisher = Publisher(bootstrap, security=settings.kafka_client_config())
        self.stats = BatchStats()
        #: Event times the modality's pipeline accepts (a clock fault at the source is a dead letter).
        self.event_window = EventTimeWindow(max_future_s=settings.event_time_max_future_s,
                                            max_age_s=settings.event_time_max_age_s)
        self.log = logger
        self._last_log = time.monotonic()
        self._warned_unscored: set[str] = set()

    @abstractmethod
    def score(self, messages: list[RawMessage]) -> BatchResult:
        """Decode and score a whole batch (may raise on a detector bug; :meth:`process` then falls back)."""

    def score_one(self, message: RawMessage) -> BatchResult:
        """Score one message during the one-by-one fallback."""
        return self.score([message])

    def extra_stats(self) -> str:
        """More for the throughput line (e.g. the signals frame builder's late/missing counts)."""
        return ""

    def process(self, messages: list[RawMessage]) -> BatchResult:
        changed = self.models.refresh()
        if changed:
            self.log.warning("%s models loaded: %s", self.modality, ", ".join(changed))
        classifiers = self.defects.refresh() if self.defects is not None else []
        if classifiers:
            self.log.warning("defect classifiers loaded: %s", ", ".join(classifiers))
        spans = spans_of(messages)
        # Durably marked in flight first: if this process dies while these offsets are being
        # processed, the next worker to take them knows, and looks for the message at fault.
        stale = self.writer.begin_batch(spans)
        result = self._recover(messages, spans, stale) if stale else self._process_batch(messages, finished=spans)
        self._count(result)
        return result

    def _process_batch(self, messages: list[RawMessage], *, finished: list[Span]) -> BatchResult:
        """Score, publish, store (clearing ``finished`` in the same transaction) and confirm one batch."""
        t0 = time.perf_counter()
        try:
            result = self.score(messages)
        except Exception:
            self.log.exception("scoring a batch of %d %s messages failed; retrying one by one", len(messages),
                               self.modality)
            result = self._one_by_one(messages)
        t1 = time.perf_counter()
        # Hand the messages to librdkafka first so delivery overlaps with the database write.
        self._publish(result)
        t2 = time.perf_counter()
        self.writer.write(result.rows(), finished=finished)
        t3 = time.perf_counter()
        self.publisher.flush()
        t4 = time.perf_counter()
        self.stats.score_s += t1 - t0
        self.stats.publish_s += (t2 - t1) + (t4 - t3)
        self.stats.write_s += t3 - t2
        return result

    def _recover(self, messages: list[RawMessage], spans: list[Span], stale: list[Span]) -> BatchResult:
        """A batch overlapping offsets a worker died on: those messages alone, the others as batches, in order.

        Order is kept (runs of consecutive messages), so charts with memory see an asset's parts in
        the same sequence as ever. The batch's own in-flight record is cleared only at the end.
        """
        def suspect(m: RawMessage) -> bool:
            return any(t == m.topic and p == m.partition and a <= m.offset <= b for t, p, a, b in stale)

        where = ", ".join(f"{t}[{p}]@{a}-{b}" for t, p, a, b in sorted(set(stale)))
        n_suspect = sum(map(suspect, messages))
        self.log.warning("a worker stopped while processing %s; processing those %d %s message(s) one at a time "
                         "to set aside the one at fault", where, n_suspect, self.modality)
        total = BatchResult()
        for is_suspect, run in groupby(messages, key=suspect):
            run_list = list(run)
            total.merge(self._isolate(run_list) if is_suspect else self._process_batch(run_list, finished=[]))
        self.writer.write({}, finished=spans)  # every message of the batch is durable now
        return total

    def _isolate(self, messages: list[RawMessage]) -> BatchResult:
        """One message at a time, setting aside a message that was in flight alone when workers died.

        Each message is marked in flight alone before it is scored and cleared in the transaction
        that stores its rows, so a message that stopped a worker while processed alone
        :data:`MAX_MESSAGE_ATTEMPTS` times is dead-lettered instead of stopping this worker too. A
        message whose rows the database refuses (bad content, not an outage) is dead-lettered too.
        """
        total = BatchResult()
        for msg in messages:
            span = (msg.topic, msg.partition, msg.offset, msg.offset)
            tries = self.writer.begin_alone(span)
            if tries >= MAX_MESSAGE_ATTEMPTS:
                part = BatchResult()
                part.deadletters.add(msg, DataError(
                    f"this message stopped a worker {tries} time(s) while it was being processed alone; set aside "
                    "so the messages behind it flow (the worker log of that time says more)"))
            else:
                try:
                    part = self.score_one(msg)
                except Exception as e:  # a detector bug must not take the agent down
                    self.log.exception("%s message %s could not be scored", self.modality, msg.origin)
                    part = BatchResult()
                    part.deadletters.add(msg, e)
            self._publish(part)
            try:
                self.writer.write(part.rows(), finished=[span], alone=True)
            except psycopg.Error as e:  # outages are InfrastructureError by now: this is the content
                self.log.error("the database refused the rows of %s message %s: %s", self.modality, msg.origin, e)
                part = BatchResult()
                part.deadletters.add(msg, DataError(f"the database refused this message's rows: {e}"))
                self.publisher.publish(DEADLETTER.name, part.deadletters.messages())
                self.writer.write(part.rows(), finished=[span], alone=True)
            self.publisher.flush()
            total.merge(part)
        return total

    def _publish(self, result: BatchResult) -> None:
        self.publisher.publish(SCORES.name, result.score_messages)
        self.publisher.publish(SHADOW_SCORES.name, result.shadow_messages)
        for topic, messages in result.messages.items():
            self.publisher.publish(topic, messages)
        self.publisher.publish(DEADLETTER.name, result.deadletters.messages())

    def _one_by_one(self, messages: list[RawMessage]) -> BatchResult:
        merged = BatchResult()
        for msg in messages:
            try:
                part = self.score_one(msg)
            except Exception as e:  # a detector bug must not take the agent down
                self.log.exception("%s message %s could not be scored", self.modality, msg.origin)
                merged.deadletters.add(msg, e)
                continue
            merged.merge(part)
        return merged

    def _count(self, r: BatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.last_batch_at = time.time()
        s.deadletters += len(r.deadletters)
        s.count_reasons(d.reason for d in r.deadletters.items)
        s.counts.update(r.counts)
        s.counts["scores"] += len(r.scores)
        s.counts["shadow_scores"] += len(r.shadow_scores)
        s.seconds.update(r.seconds)
        if len(r.deadletters):
            self.log.warning("%d %s message(s) dead-lettered, e.g. %s: %s", len(r.deadletters), self.modality,
                             r.deadletters.items[0].origin, r.deadletters.items[0].reason[:200])
        new = sorted(k for k in r.unscored if k not in self._warned_unscored)
        if new:
            # Once per scope: an asset or camera without a model sends an event every part.
            self._warned_unscored.update(new)
            self.log.warning("%s events of %s are not scored: no model for them yet (train one with `%s`)",
                             self.modality, ", ".join(new), self.train_hint)
        for problem in sorted(set(r.problems))[:3]:
            self.log.warning("%s not scored: %s", self.modality, problem)
        now = time.monotonic()
        if now - self._last_log >= STATS_EVERY_S:
            self._last_log = now
            self.log_stats(now)

    def health(self) -> dict[str, Any]:
        """A JSON-able snapshot of this agent for the worker's ``/health`` (:mod:`linewatch.streams.health`).

        It lives here, not in the health module, because for the SPC agent only the scoring child
        process holds the counters, the writer and the models: the parent asks the child for this
        dict (:meth:`linewatch.streams.isolated.IsolatedRuntime.health`). It is called from another
        thread while a batch may be running; each value is one attribute read or one C-level dict
        copy, so a snapshot may be a batch behind but never raises mid-update.
        """
        s = self.stats
        return {
            "modality": self.modality,
            "unit": self.unit,
            "pid": os.getpid(),
            "processed": _plain(s.counts.get(self.unit, 0)),
            "batches": s.batches,
            "counts": {k: _plain(v) for k, v in dict(s.counts).items()},
            "sink": self.writer.state,
            "last_batch_at": s.last_batch_at,
            "deadletters": s.deadletters,
            "deadletters_by_reason": dict(s.deadletter_reasons),
            "models": self.models.loaded(),
        }

    def log_stats(self, now: float) -> None:
        """The throughput line; ``linewatch bench e2e`` prints the part after ``"<modality>: "`` with "busy"."""
        s = self.stats
        counts = ", ".join(f"{v} {k}" for k, v in sorted(s.counts.items()))
        rate = s.counts[self.unit] / max(now - s.started, 1e-9)
        threads = "".join(f", {v:.1f} s {k}" for k, v in sorted(s.seconds.items()))
        self.log.warning("%s: %s, %d dead letters%s (%.1f %s/s; busy %.1f s scoring, %.1f s writing, "
                         "%.1f s publishing%s)", self.modality, counts, s.deadletters, self.extra_stats(), rate,
                         self.unit, s.score_s, s.write_s, s.publish_s,
                         f"; thread-seconds{threads[1:]}" if threads else "")


def _plain(value: Any) -> int | float:
    """A counter value as a JSON number (pipelines may count with numpy integers)."""
    number = float(value)
    return int(number) if number.is_integer() else number


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


def split_by_bytes(messages: list[RawMessage], max_bytes: int | None) -> list[list[RawMessage]]:
    """Consecutive runs of ``messages`` whose values total at most ``max_bytes`` (one message at least).

    Why: a ``take_events`` batch is counted in messages, and a batched ``spc`` message carries up to
    hundreds of records, so a batch of them can hold a hundred times the records a batch was sized
    for: minutes of scoring in one transaction, one span to re-do after a crash, and an agent that
    cannot finish its batch within a rebalance. Bytes are the bound that is known before decoding.
    Runs keep the order, so each partition's offsets stay in order across them and their spans
    never overlap.

    >>> m = [RawMessage("spc", 0, i, None, b"x" * n) for i, n in enumerate((400, 400, 900, 5000, 10))]
    >>> [[x.offset for x in run] for run in split_by_bytes(m, 1000)]
    [[0, 1], [2], [3], [4]]
    >>> len(split_by_bytes(m, None)), split_by_bytes([], 1000)
    (1, [])
    """
    if max_bytes is None or not messages:
        return [messages] if messages else []
    runs: list[list[RawMessage]] = [[]]
    size = 0
    for m in messages:
        n = len(m.value or b"")
        if runs[-1] and size + n > max_bytes:
            runs.append([])
            size = 0
        runs[-1].append(m)
        size += n
    return runs


def raw_topic(app: faust.App, *names: str, **options: Any) -> faust.TopicT:
    """A topic (or several, as one stream) of undecoded bytes; the batch processors decode and dead-letter."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     **options)


def register_batch_agent(
    app: faust.App,
    topic: faust.TopicT,
    runtime: Any,
    *,
    batch_size: int,
    within: float,
    name: str,
    thread_name_prefix: str,
    ready_message: str = READY_MESSAGE,
    fatal: type[BaseException] | tuple[type[BaseException], ...] = BaseException,
    max_bytes: int | None = None,
) -> ThreadPoolExecutor:
    """Add an agent that feeds ``topic``'s ``take_events`` batches to ``runtime.process``.

    With ``max_bytes`` a batch is processed as consecutive runs of at most that many bytes
    (:func:`split_by_bytes`), each its own transaction; Faust acknowledges the whole batch after
    the last run, so a crash part-way redelivers it and the runs already written are no-ops.

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
        runtime.log.warning("%s %d partition(s) assigned; %s models: %s", ready_message, len(assigned),
                            runtime.modality, ", ".join(loaded) or f"{len(runtime.models)} already loaded")

    @app.agent(topic, name=name)
    async def score_batches(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(batch_size, within=within):
            for run in split_by_bytes([to_raw(e) for e in events], max_bytes):
                try:
                    await loop.run_in_executor(pool, runtime.process, run)
                except fatal as e:
                    # Faust acks a take_events batch in a finally block, even when the body raises;
                    # exiting here, before that runs, is what keeps an unwritten batch unacknowledged.
                    stop_without_ack(e, runtime.log)

    return pool
