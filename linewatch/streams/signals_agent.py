"""The signals agent: take a batch from ``signals``, score it, persist it, publish it, then acknowledge.

Thin, like the SPC agent (:mod:`linewatch.streams.spc_agent`), with the same guarantees: the
body of the ``take_events`` loop returns only after the ``signal_features``, ``scores`` and
dead-letter rows are committed and the published messages are confirmed, so a Kafka offset
never runs ahead of durable data; scoring, COPY and flush run on one worker thread so the
event loop keeps heartbeating. Same failure policy:

- bad data -> dead letter (topic and table) with the reason; the agent goes on;
- an unexpected error while scoring a batch -> the batch is re-scored one message at a time
  and only the message that fails is dead-lettered;
- database or broker unavailable after retries -> log and exit the process at once without
  acknowledging, so the supervisor restarts the worker and the batch is redelivered.

Batches are capped at :data:`MAX_BATCH_WINDOWS` windows whatever ``batch_size`` says: a 1 s
vibration window at 10 kHz is 40 kB, two orders of magnitude more than an SPC record.

The per-asset state (partial frames, online detector copies, lagged rows) is saved to
``<data_dir>/signals-state`` when the worker shuts down and restored when it starts, so a
restart does not lose the frames waiting for a slow sensor nor the online models' learning.
Redelivered windows are recognised by their event id and do not score twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import faust

from linewatch.config import Settings
from linewatch.errors import InfrastructureError
from linewatch.schemas.codec import encode
from linewatch.schemas.topics import DEADLETTER, SCORES, SIGNALS
from linewatch.storage.model_registry import ModelCache
from linewatch.storage.writer import BatchWriter
from linewatch.streams.kafka import Publisher
from linewatch.streams.messages import RawMessage
from linewatch.streams.signals_pipeline import SignalsBatchResult, SignalsState, score_signals_batch
from linewatch.streams.spc_agent import EXIT_INFRASTRUCTURE, STATS_EVERY_S, to_raw

log = logging.getLogger(__name__)

#: Windows per batch at most: 500 vibration windows of 10 kHz x 1 s are 20 MB of samples, enough
#: to amortise a COPY and a flush, small enough that features never hold more than ~150 MB.
MAX_BATCH_WINDOWS = 500
#: Logged (at warning level, like the SPC agent's line) once the signals models are loaded.
SIGNALS_READY_MESSAGE = "linewatch signals agent ready:"
STATE_DIR = "signals-state"


@dataclass
class SignalsStats:
    batches: int = 0
    windows: int = 0
    samples: int = 0
    frames: int = 0
    scores: int = 0
    anomalies: int = 0
    suppressed: int = 0
    deadletters: int = 0
    unscored: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Seconds spent per stage, so a slow worker says where its time goes.
    score_s: float = 0.0
    write_s: float = 0.0
    publish_s: float = 0.0


class SignalsRuntime:
    """Owns the agent's state: model cache, writer, publisher, per-asset signal state and counters."""

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str,
                 state_dir: Path | None = None) -> None:
        self.models = ModelCache(database_url=database_url, modality="signals", refresh_s=settings.model_refresh_s)
        self.writer = BatchWriter(database_url)
        self.publisher = Publisher(bootstrap)
        self.state_dir = state_dir if state_dir is not None else settings.data_dir / STATE_DIR
        self.state = self._restore()
        self.stats = SignalsStats()
        self._last_log = time.monotonic()

    def _restore(self) -> SignalsState:
        if not (self.state_dir / "metadata.json").exists():
            return SignalsState()
        try:
            state = SignalsState.load(self.state_dir)
        except (OSError, ValueError, KeyError) as e:
            log.error("cannot restore the signals state from %s (%s); starting with empty frames and fresh "
                      "online models", self.state_dir, e)
            return SignalsState()
        log.warning("signals state restored from %s (%d asset(s))", self.state_dir, len(state.frames.assets))
        return state

    def save_state(self) -> None:
        """Write the state next to the worker's data (a fresh directory, then swapped in)."""
        tmp = self.state_dir.with_name(self.state_dir.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        self.state.save(tmp)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        tmp.rename(self.state_dir)

    def process(self, messages: list[RawMessage]) -> SignalsBatchResult:
        changed = self.models.refresh()
        if changed:
            log.warning("signals models loaded: %s", ", ".join(changed))
        t0 = time.perf_counter()
        try:
            result = score_signals_batch(messages, self.models, self.state)
        except Exception:
            log.exception("scoring a batch of %d signals messages failed; retrying one by one", len(messages))
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

    def _one_by_one(self, messages: list[RawMessage]) -> SignalsBatchResult:
        merged = SignalsBatchResult()
        for msg in messages:
            try:
                part = score_signals_batch([msg], self.models, self.state)
            except Exception as e:  # a detector bug must not take the agent down
                log.exception("signals message %s could not be scored", msg.origin)
                merged.deadletters.add(msg, e)
                continue
            merged.merge(part)
        return merged

    def _count(self, r: SignalsBatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.windows += r.windows
        s.samples += r.samples
        s.frames += r.frames
        s.scores += len(r.scores)
        s.anomalies += r.anomalies
        s.suppressed += r.suppressed
        s.deadletters += len(r.deadletters)
        s.unscored += r.unscored
        if len(r.deadletters):
            log.warning("%d signals message(s) dead-lettered, e.g. %s: %s", len(r.deadletters),
                        r.deadletters.items[0].origin, r.deadletters.items[0].reason[:200])
        for problem in sorted(set(r.problems))[:3]:
            log.warning("signals frame not scored: %s", problem)
        if r.unscored:
            log.warning("%d signals window(s) stored without a score: no signals model for their asset yet "
                        "(train one with linewatch.signals.training.train_signals_model)", r.unscored)
        now = time.monotonic()
        if now - self._last_log >= STATS_EVERY_S:
            self._last_log = now
            elapsed = max(now - s.started, 1e-9)
            c = self.state.frames.counters()
            log.warning("signals: %d windows, %d frames, %d anomalies, %d suppressed, %d dead letters; "
                        "%d late frames, %d missing, %d duplicate windows "
                        "(%.0f windows/s, %.2f M samples/s; busy %.1f s scoring, %.1f s writing, %.1f s publishing)",
                        s.windows, s.frames, s.anomalies, s.suppressed, s.deadletters, c["late"], c["missing"],
                        c["duplicate"], s.windows / elapsed, s.samples / elapsed / 1e6, s.score_s, s.write_s,
                        s.publish_s)


def register_signals_agent(app: faust.App, *, settings: Settings, bootstrap: str, database_url: str) -> None:
    """Add the signals agent to ``app`` (called by :func:`linewatch.streams.app.build_app`)."""
    topic = app.topic(SIGNALS.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    runtime = SignalsRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signals-batch")
    batch = min(settings.batch_size, MAX_BATCH_WINDOWS)

    @app.on_partitions_assigned.connect
    async def _ready(sender: object, assigned: set, **_: object) -> None:
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(pool, lambda: runtime.models.refresh(force=True))
        log.warning("%s %d partition(s) assigned; signals models: %s", SIGNALS_READY_MESSAGE, len(assigned),
                    ", ".join(loaded) or f"{len(runtime.models)} already loaded")

    @app.on_before_shutdown.connect
    async def _save(sender: object, **_: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            # On the batch thread, so no batch is half-way through the state while it is written.
            await loop.run_in_executor(pool, runtime.save_state)
        except OSError as e:
            log.error("could not save the signals state to %s: %s", runtime.state_dir, e)

    @app.agent(topic, name="linewatch.score_signals")
    async def score_signals(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(batch, within=settings.batch_within_s):
            messages = [to_raw(e) for e in events]
            try:
                await loop.run_in_executor(pool, runtime.process, messages)
            except InfrastructureError as e:
                # Exit before Faust's finally-block acks these events: they must be redelivered.
                log.critical("stopping the worker: %s", e)
                logging.shutdown()
                os._exit(EXIT_INFRASTRUCTURE)
