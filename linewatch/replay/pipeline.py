"""The live worker's processing, without Kafka or the database: one input slice in, rows and messages out.

A replay must decide exactly what the worker would have decided, so it runs the agents' own batch
functions (:func:`~linewatch.streams.spc_pipeline.score_spc_batch`,
:func:`~linewatch.streams.signals_pipeline.score_signals_batch`,
:func:`~linewatch.streams.frames_pipeline.score_frames_batch`) with the same per-asset state the
agents keep (chart memory, signal frames and online models), and feeds the ``scores`` and
``shadow_scores`` messages they encode, byte for byte, to the fusion agent's
:class:`~linewatch.streams.fusion_stage.FusionStage`. What differs from the worker is only where
bytes come from and go to, and the clock: history is old, so the event-time window that guards a
live worker against broken source clocks accepts any past time here.

Inputs are taken in the order the source gives them (per asset, the order the worker saw them:
a Kafka partition's order, or event time for files and the database), in slices; each modality's
messages of a slice are scored in batches of the agent's size, then the slice's scores are fused.
Messages already on ``scores`` / ``shadow_scores`` (a replay of stored scores) go straight to fusion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from linewatch.config import Settings
from linewatch.defects.stream import DefectLayer
from linewatch.fusion.engine import FusionConfig
from linewatch.schemas.event_time import EventTimeWindow
from linewatch.schemas.topics import FRAMES, MACHINE_STATES, SCORES, SHADOW_SCORES, SIGNALS, SPC
from linewatch.signals.framing import BearingEnvelope
from linewatch.streams.batch import BatchResult, ModelSource
from linewatch.streams.frames_agent import FRAMES_BATCH_SIZE
from linewatch.streams.frames_pipeline import HEATMAPS_ALARMS, ScoringPool, score_frames_batch
from linewatch.streams.fusion_stage import FusionStage
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import split_by_bytes
from linewatch.streams.signals_agent import MAX_BATCH_WINDOWS
from linewatch.streams.signals_pipeline import SignalsState, score_signals_batch
from linewatch.streams.spc_agent import BYTES_PER_RECORD as SPC_BYTES_PER_RECORD
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch

#: A replay accepts events up to this old (a live worker's default is ten years; history can be older).
REPLAY_MAX_AGE_S = 200 * 365.25 * 86_400.0
#: Topics a replay scores, and the ones it fuses as they are.
INPUT_TOPICS = (SPC.name, SIGNALS.name, FRAMES.name)
FUSION_TOPICS = (SCORES.name, SHADOW_SCORES.name, MACHINE_STATES.name)


@dataclass(frozen=True)
class ReplaySizes:
    """Messages per scoring batch, per modality: the live agents' sizes by default."""

    spc: int = 500
    signals: int = MAX_BATCH_WINDOWS
    frames: int = FRAMES_BATCH_SIZE

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplaySizes:
        return cls(spc=settings.batch_size, signals=min(settings.batch_size, MAX_BATCH_WINDOWS))


class ReplayPipeline:
    """Score and fuse slices of raw input messages exactly as the worker's agents do."""

    def __init__(self, models: ModelSource, *, fusion: FusionConfig, envelope: BearingEnvelope | None = None,
                 sizes: ReplaySizes | None = None, heatmaps: str = HEATMAPS_ALARMS, scoring_threads: int = 1,
                 max_future_s: float = 86_400.0, defects: DefectLayer | None = None) -> None:
        self.models = models
        self.defects = defects
        self.sizes = sizes or ReplaySizes()
        self.heatmaps = heatmaps
        self.spc_streams = StreamStates()
        self.signals_state = SignalsState(envelope=envelope or BearingEnvelope())
        self.pool = ScoringPool(scoring_threads)
        self.fusion = FusionStage(fusion, keep_verdicts=True)
        self.window = EventTimeWindow(max_future_s=max_future_s, max_age_s=REPLAY_MAX_AGE_S)
        self._offset = 0  # offsets of the score messages handed to fusion (their origin in dead letters)

    @classmethod
    def from_settings(cls, models: ModelSource, settings: Settings, **overrides: object) -> ReplayPipeline:
        """The pipeline a worker with ``settings`` runs: its fusion, bearing geometry and batch sizes."""
        kwargs: dict[str, object] = {
            "fusion": settings.fusion_config(),
            "envelope": BearingEnvelope.from_settings(settings.asset_speed_hz, settings.bearing_geometry),
            "sizes": ReplaySizes.from_settings(settings),
            "max_future_s": settings.event_time_max_future_s,
        }
        kwargs.update(overrides)
        return cls(models, **kwargs)  # type: ignore[arg-type]

    def feed(self, messages: Sequence[RawMessage]) -> BatchResult:
        """One slice of messages (any of the input and fusion topics) -> everything the worker would write."""
        out = BatchResult()
        by_topic: dict[str, list[RawMessage]] = {}
        for m in messages:
            by_topic.setdefault(m.topic, []).append(m)
        unknown = sorted(set(by_topic) - set(INPUT_TOPICS) - set(FUSION_TOPICS))
        if unknown:
            raise ValueError(f"cannot replay topic(s) {unknown}; replay reads "
                             f"{', '.join(INPUT_TOPICS + FUSION_TOPICS)}")
        self._batches(out, by_topic.get(SPC.name, []), self.sizes.spc,
                      lambda b: score_spc_batch(b, self.models, self.spc_streams, event_window=self.window,
                                                defects=self.defects),
                      max_bytes=self.sizes.spc * SPC_BYTES_PER_RECORD)
        self._batches(out, by_topic.get(SIGNALS.name, []), self.sizes.signals,
                      lambda b: score_signals_batch(b, self.models, self.signals_state, event_window=self.window,
                                                    defects=self.defects))
        self._batches(out, by_topic.get(FRAMES.name, []), self.sizes.frames,
                      lambda b: score_frames_batch(b, self.models, heatmaps=self.heatmaps, pool=self.pool,
                                                   event_window=self.window, defects=self.defects))
        to_fuse = [m for t in FUSION_TOPICS for m in by_topic.get(t, [])]
        to_fuse += self._as_raw(SCORES.name, out.score_messages) + self._as_raw(SHADOW_SCORES.name, out.shadow_messages)
        if to_fuse:
            out.merge(self.fusion.process(to_fuse))
        return out

    def finish(self) -> BatchResult:
        """The end of the history: fusion decides every unit still waiting for late scores."""
        return self.fusion.flush()

    def close(self) -> None:
        self.pool.close()

    @staticmethod
    def _batches(out: BatchResult, messages: list[RawMessage], size: int,
                 score: Callable[[list[RawMessage]], BatchResult], max_bytes: int | None = None) -> None:
        """Batches of ``size`` messages, cut by bytes where the live agent cuts them (``split_by_bytes``)."""
        for lo in range(0, len(messages), size):
            for run in split_by_bytes(messages[lo:lo + size], max_bytes):
                out.merge(score(run))

    def _as_raw(self, topic: str, messages: Sequence[tuple]) -> list[RawMessage]:
        raw = []
        for key, value, *_ in messages:
            raw.append(RawMessage(topic, 0, self._offset, key, value))
            self._offset += 1
        return raw
