"""The frames agent: take a batch from ``frames``, score it, persist it, publish it, then acknowledge.

It mirrors the SPC agent (:mod:`linewatch.streams.spc_agent`) and shares its failure policy,
readiness line and exit path, because a worker must behave the same whichever input broke:

- bad data (an undecodable envelope or image) -> dead letter (topic and table) with the
  reason; the agent goes on;
- an unexpected error while scoring a batch -> the batch is re-scored one frame at a time
  and only the frame that fails is dead-lettered;
- database or broker unavailable after retries -> log and exit the process at once, without
  acknowledging, so the supervisor restarts the worker and the batch is redelivered.

What differs is the batch: a frame costs about 20 ms of CPU where an SPC record costs 20 µs,
so the agent takes :data:`FRAMES_BATCH_SIZE` frames at a time (enough to fill the backbone's
batches, small enough that a batch finishes well inside the session timeout and latency
stays a fraction of a second), and the topic's in-memory buffer is bounded by
:data:`FRAMES_BUFFER_MAXSIZE` frames: Faust's default buffer (thousands of messages) would
hold hundreds of MB of encoded images while the scorer is busy, and Faust pauses only the
``frames`` partitions when this buffer is full, so the SPC agent keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import faust
from threadpoolctl import threadpool_limits

from linewatch.config import Settings
from linewatch.images.registry import ImageModelCache
from linewatch.schemas.codec import encode
from linewatch.schemas.topics import DEADLETTER, FRAMES, SCORES
from linewatch.storage.writer import BatchWriter, retry_schedule
from linewatch.streams.frames_pipeline import HEATMAPS_ALARMS, FramesBatchResult, ScoringPool, score_frames_batch
from linewatch.streams.kafka import Publisher
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_agent import READY_MESSAGE, STATS_EVERY_S, stop_without_ack, to_raw

log = logging.getLogger(__name__)

#: Frames per batch: two backbone batches of 8, ~0.3 s of work at 256x256 on one core.
FRAMES_BATCH_SIZE = 16
#: Frames Faust may hold in memory for this agent before it pauses the ``frames`` partitions.
FRAMES_BUFFER_MAXSIZE = 4 * FRAMES_BATCH_SIZE
AGENT_NAME = "linewatch.score_frames"
#: Scoring threads at most: a batch of 16 in chunks of 4 keeps each backbone call efficient.
MAX_SCORING_THREADS = 4


def default_scoring_threads() -> int:
    """One scoring thread per core, up to :data:`MAX_SCORING_THREADS` (two on a 2-core line PC)."""
    return max(1, min(MAX_SCORING_THREADS, os.cpu_count() or 1))


@dataclass
class FramesStats:
    batches: int = 0
    frames: int = 0
    scores: int = 0
    heatmaps: int = 0
    deadletters: int = 0
    anomalies: int = 0
    unscored: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Seconds spent per stage, so a slow worker says where its time goes: ``batch_s`` is the wall
    #: time of the batch processor, ``decode_s`` and ``score_s`` its thread-seconds in each part.
    batch_s: float = 0.0
    decode_s: float = 0.0
    score_s: float = 0.0
    write_s: float = 0.0
    publish_s: float = 0.0


class FramesRuntime:
    """Owns the agent's state: image model cache, writer, publisher and counters."""

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str,
                 heatmaps: str = HEATMAPS_ALARMS, scoring_threads: int = 1) -> None:
        self.models = ImageModelCache(database_url=database_url, refresh_s=settings.model_refresh_s)
        self.writer = BatchWriter(database_url, retry_delays=retry_schedule(settings.db_retry_total_s))
        self.publisher = Publisher(bootstrap)
        self.heatmaps = heatmaps
        self.pool = ScoringPool(scoring_threads)
        self.stats = FramesStats()
        self._last_log = time.monotonic()
        self._warned_unscored: set[tuple[str, str]] = set()

    def process(self, messages: list[RawMessage]) -> FramesBatchResult:
        changed = self.models.refresh()
        if changed:
            log.warning("image models loaded: %s", ", ".join(changed))
        t0 = time.perf_counter()
        try:
            result = score_frames_batch(messages, self.models, heatmaps=self.heatmaps, pool=self.pool)
        except Exception:
            log.exception("scoring a batch of %d frames failed; retrying one by one", len(messages))
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
        s = self.stats
        s.decode_s += result.decode_s
        s.score_s += result.score_s
        s.batch_s += t1 - t0
        s.publish_s += (t2 - t1) + (t4 - t3)
        s.write_s += t3 - t2
        self._count(result)
        return result

    def _one_by_one(self, messages: list[RawMessage]) -> FramesBatchResult:
        merged = FramesBatchResult()
        for msg in messages:
            try:
                merged.merge(score_frames_batch([msg], self.models, heatmaps=self.heatmaps))
            except Exception as e:  # a detector bug must not take the agent down
                log.exception("frame %s could not be scored", msg.origin)
                merged.deadletters.add(msg, e)
        return merged

    def _count(self, r: FramesBatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.frames += r.frames
        s.scores += len(r.scores)
        s.heatmaps += len(r.heatmaps)
        s.deadletters += len(r.deadletters)
        s.anomalies += r.anomalies
        s.unscored += sum(r.unscored.values())
        if len(r.deadletters):
            log.warning("%d frame message(s) dead-lettered, e.g. %s: %s", len(r.deadletters),
                        r.deadletters.items[0].origin, r.deadletters.items[0].reason[:200])
        new = [k for k in r.unscored if k not in self._warned_unscored]
        if new:
            # Once per (SKU, camera): a camera without a model sends a frame every part.
            self._warned_unscored.update(new)
            log.warning("frames of SKU/camera %s are not scored: no image model for them yet (train one with "
                        "`linewatch train frames --data DIR --sku SKU [--camera CAMERA]`)",
                        ", ".join(f"{sku}/{cam}" for sku, cam in sorted(new)))
        now = time.monotonic()
        if now - self._last_log >= STATS_EVERY_S:
            self._last_log = now
            rate = s.frames / max(now - s.started, 1e-9)
            log.warning("frames: %d frames, %d scores, %d anomalies, %d heat maps, %d unscored, %d dead letters "
                        "(%.1f frames/s; busy %.1f s scoring batches, %.1f s writing, %.1f s publishing; "
                        "thread-seconds %.1f decoding, %.1f scoring)",
                        s.frames, s.scores, s.anomalies, s.heatmaps, s.unscored, s.deadletters, rate,
                        s.batch_s, s.write_s, s.publish_s, s.decode_s, s.score_s)


def register_frames_agent(app: faust.App, *, settings: Settings, bootstrap: str, database_url: str,
                          heatmaps: str = HEATMAPS_ALARMS, scoring_threads: int | None = None) -> None:
    """Add the frames agent to ``app`` (called by :func:`linewatch.streams.app.build_app`).

    ``heatmaps`` is ``"alarms"`` (draw and store heat maps for flagged frames only) or ``"all"``;
    ``scoring_threads`` defaults to :func:`default_scoring_threads`.

    It also limits BLAS to one thread for the whole worker process. The image search enters a
    one-thread BLAS limit around every call, and threadpoolctl's limits are process-wide: with
    scoring threads side by side, each would restore the other's setting on exit and leave BLAS
    at a random thread count. Parallelism in a worker comes from its threads (scoring chunks,
    agents), never from BLAS spinning threads competing for the same cores; the SPC and signal
    detectors multiply matrices far too small for BLAS threads to matter.
    """
    threadpool_limits(limits=1, user_api="blas")
    topic = app.topic(FRAMES.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                      maxsize=FRAMES_BUFFER_MAXSIZE)
    runtime = FramesRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url, heatmaps=heatmaps,
                            scoring_threads=scoring_threads or default_scoring_threads())
    # Its own thread: scoring a frames batch must never queue behind (or delay) an SPC batch.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frames-batch")

    @app.on_partitions_assigned.connect
    async def _ready(sender: object, assigned: set, **_: object) -> None:
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(pool, lambda: runtime.models.refresh(force=True))
        log.warning("%s %d partition(s) assigned; image models: %s", READY_MESSAGE, len(assigned),
                    ", ".join(loaded) or f"{len(runtime.models)} already loaded")

    @app.agent(topic, name=AGENT_NAME)
    async def score_frames(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(FRAMES_BATCH_SIZE, within=settings.batch_within_s):
            messages = [to_raw(e) for e in events]
            try:
                await loop.run_in_executor(pool, runtime.process, messages)
            except BaseException as e:
                # Faust acks a take_events batch in a finally block, even when the body raises;
                # exiting here, before that runs, is what keeps an unwritten batch unacknowledged.
                stop_without_ack(e)
