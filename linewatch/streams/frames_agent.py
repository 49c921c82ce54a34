"""The frames agent: take a batch from ``frames``, score it, persist it, publish it, then acknowledge.

It mirrors the SPC agent (:mod:`linewatch.streams.spc_agent`) and shares its failure policy,
readiness line and exit path (all in :mod:`linewatch.streams.runtime`), because a worker must
behave the same whichever input broke:

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

import logging
import os

import faust
from threadpoolctl import threadpool_limits

from linewatch.config import Settings
from linewatch.schemas.topics import FRAMES
from linewatch.streams.batch import BatchResult
from linewatch.streams.frames_pipeline import HEATMAPS_ALARMS, ScoringPool, score_frames_batch
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import BatchRuntime, raw_topic, register_batch_agent

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


class FramesRuntime(BatchRuntime):
    """The frames agent's state: the shared runtime plus its scoring threads and heat-map policy.

    Its throughput line's ``busy ... scoring`` is the batch processor's wall time; the
    ``thread-seconds`` are summed over the scoring threads (decoding, scoring).
    """

    modality = "frames"
    unit = "frames"
    train_hint = "linewatch train frames --data DIR --sku SKU [--camera CAMERA]"

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str,
                 heatmaps: str = HEATMAPS_ALARMS, scoring_threads: int = 1) -> None:
        super().__init__(settings=settings, bootstrap=bootstrap, database_url=database_url, logger=log)
        self.heatmaps = heatmaps
        self.pool = ScoringPool(scoring_threads)

    def score(self, messages: list[RawMessage]) -> BatchResult:
        return score_frames_batch(messages, self.models, heatmaps=self.heatmaps, pool=self.pool,
                                  event_window=self.event_window, defects=self.defects)

    def score_one(self, message: RawMessage) -> BatchResult:
        # One frame on this thread, without the scoring pool (the batch path uses it; this fallback never did).
        return score_frames_batch([message], self.models, heatmaps=self.heatmaps, event_window=self.event_window,
                                  defects=self.defects)


def register_frames_agent(app: faust.App, *, settings: Settings, bootstrap: str, database_url: str,
                          heatmaps: str = HEATMAPS_ALARMS, scoring_threads: int | None = None) -> FramesRuntime:
    """Add the frames agent to ``app`` (called by :func:`linewatch.streams.app.build_app`); returns its runtime.

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
    topic = raw_topic(app, FRAMES.name, maxsize=FRAMES_BUFFER_MAXSIZE)
    runtime = FramesRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url, heatmaps=heatmaps,
                            scoring_threads=scoring_threads or default_scoring_threads())
    # Its own batch thread (register_batch_agent gives each agent one): scoring a frames batch
    # must never queue behind (or delay) an SPC batch.
    register_batch_agent(app, topic, runtime, batch_size=FRAMES_BATCH_SIZE, within=settings.batch_within_s,
                         name=AGENT_NAME, thread_name_prefix="frames-batch")
    return runtime
