"""One replay from start to end: slices of history through the pipeline, into the store, kept for the metrics.

The caller picks the source (:mod:`linewatch.replay.sources`, :mod:`linewatch.replay.kafka_source`),
the models (the registry, or bundles fitted on the history's early rows) and the store; this
module only moves slices through :class:`~linewatch.replay.pipeline.ReplayPipeline`, as fast as
the machine allows, and keeps what the report and the metrics need.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from linewatch.replay.pipeline import ReplayPipeline
from linewatch.replay.store import ReplayStore
from linewatch.schemas.rows import AlertRow, ScoreRow, ShadowScoreRow
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage

#: Input messages per slice: each modality's share is scored in the agents' batch sizes, then fused.
SLICE = 1000


@dataclass
class ReplayOutcome:
    """What a replay produced: the rows a report needs, counts and timings."""

    scores: list[tuple] = field(default_factory=list)
    shadow_scores: list[tuple] = field(default_factory=list)
    alerts: list[tuple] = field(default_factory=list)
    #: The champions' fused unit decisions: (asset, ts, fused score, alarm).
    verdicts: list[tuple[str, datetime, float, bool]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    deadletter_reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, result: BatchResult) -> None:
        self.scores += result.tables[ScoreRow]
        self.shadow_scores += result.tables[ShadowScoreRow]
        self.alerts += result.tables[AlertRow]
        self.counts.update(result.counts)
        self.counts["deadletters"] += len(result.deadletters)
        self.deadletter_reasons.update(d.reason[:80] for d in result.deadletters.items)


def run_replay(messages: Sequence[RawMessage], pipeline: ReplayPipeline, *, store: ReplayStore | None = None,
               slice_size: int = SLICE, progress: Callable[[int], None] | None = None) -> ReplayOutcome:
    """Feed ``messages`` (in the order given) through ``pipeline`` slice by slice; store each slice's rows."""
    out = ReplayOutcome()
    started = time.perf_counter()
    try:
        for lo in range(0, len(messages), slice_size):
            chunk = messages[lo:lo + slice_size]
            result = pipeline.feed(chunk)
            out.add(result)
            if store is not None:
                store.write(result)
            if progress is not None:
                progress(len(chunk))
        last = pipeline.finish()
        out.add(last)
        if store is not None:
            store.write(last)
    finally:
        pipeline.close()
    out.verdicts = list(pipeline.fusion.verdicts or [])
    out.counts["messages"] = len(messages)
    out.seconds = time.perf_counter() - started
    return out
