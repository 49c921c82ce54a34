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

That path is shared with the signals and frames agents and lives in
:mod:`linewatch.streams.runtime`; this module keeps what is SPC's own (the scorer, the
counters, the throughput line the benchmark parses) and re-exports the shared names
(``READY_MESSAGE``, ``EXIT_INFRASTRUCTURE``, ``stop_without_ack``, ``to_raw``) that the
demo, tests and benchmarks import from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust

from linewatch.config import Settings
from linewatch.schemas.topics import SPC
from linewatch.storage.model_registry import ModelCache
from linewatch.storage.writer import BatchWriter, retry_schedule
from linewatch.streams.isolated import IsolatedRuntime
from linewatch.streams.kafka import Publisher
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import (
    EXIT_INFRASTRUCTURE,
    READY_MESSAGE,
    STATS_EVERY_S,
    BatchRuntime,
    BatchStats,
    raw_topic,
    register_batch_agent,
    stop_without_ack,
    to_raw,
)
from linewatch.streams.spc_pipeline import SpcBatchResult, StreamStates, score_spc_batch

__all__ = ["EXIT_INFRASTRUCTURE", "READY_MESSAGE", "STATS_EVERY_S", "SpcRuntime", "SpcStats",
           "register_spc_agent", "stop_without_ack", "to_raw"]

log = logging.getLogger(__name__)


@dataclass
class SpcStats(BatchStats):
    records: int = 0
    scores: int = 0
    anomalies: int = 0
    unscored: int = 0


class SpcRuntime(BatchRuntime[SpcBatchResult]):
    """Owns the agent's state: model cache, writer, publisher, per-stream detector state and counters."""

    models_noun = "spc models"
    batch_noun = "spc messages"
    message_noun = "spc message"
    deadletter_noun = "spc message(s)"
    stats: SpcStats

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str) -> None:
        super().__init__(
            models=ModelCache(database_url=database_url, modality="spc", refresh_s=settings.model_refresh_s),
            writer=BatchWriter(database_url, retry_delays=retry_schedule(settings.db_retry_total_s)),
            publisher=Publisher(bootstrap), stats=SpcStats(), logger=log)
        self.streams = StreamStates()

    def score(self, messages: list[RawMessage]) -> SpcBatchResult:
        return score_spc_batch(messages, self.models, self.streams)

    def empty_result(self) -> SpcBatchResult:
        return SpcBatchResult()

    def count(self, r: SpcBatchResult) -> None:
        s = self.stats
        s.records += r.records
        s.scores += len(r.scores)
        s.anomalies += r.anomalies
        s.unscored += r.unscored
        if r.unscored:
            log.warning("%d spc record(s) stored without a score: no model for their asset/SKU yet "
                        "(train one with `linewatch train spc`)", r.unscored)

    def log_stats(self, now: float) -> None:
        # linewatch.benchmarks.e2e prints the part after "spc: " of the last line with "busy".
        s = self.stats
        rate = s.records / max(now - s.started, 1e-9)
        log.warning("spc: %d records, %d scores, %d anomalies, %d dead letters (%.0f records/s; "
                    "busy %.1f s scoring, %.1f s writing, %.1f s publishing)",
                    s.records, s.scores, s.anomalies, s.deadletters, rate, s.score_s, s.write_s, s.publish_s)


def register_spc_agent(app: faust.App, *, settings: Settings, bootstrap: str, database_url: str) -> None:
    """Add the SPC agent to ``app`` (called by :func:`linewatch.streams.app.build_app`)."""
    factory = partial(SpcRuntime, settings=settings, bootstrap=bootstrap, database_url=database_url)
    runtime: Any = (IsolatedRuntime(factory, models_noun=SpcRuntime.models_noun, logger=log)
                    if settings.isolate_scoring else factory())
    register_batch_agent(app, raw_topic(app, SPC.name), runtime, batch_size=settings.batch_size,
                         within=settings.batch_within_s, name="linewatch.score_spc", thread_name_prefix="spc-batch")
