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
:mod:`linewatch.streams.runtime`; this module keeps what is SPC's own: the scorer, each asset's
chart memory, and scoring in a child process (:mod:`linewatch.streams.isolated`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import faust

from linewatch.config import Settings
from linewatch.schemas.topics import SPC
from linewatch.streams.batch import BatchResult
from linewatch.streams.isolated import IsolatedRuntime
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import BatchRuntime, raw_topic, register_batch_agent
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch

log = logging.getLogger(__name__)

#: Bytes of payload a batch may hold per record it was sized for (``batch_size``). A record's JSON
#: is about 700 bytes, so a batch of single-record messages is never cut; a batch of batched
#: messages (JSON arrays, up to the broker's message size) is cut after about ``batch_size * 1.5``
#: records instead of holding ``batch_size`` whole arrays.
BYTES_PER_RECORD = 1024


class SpcRuntime(BatchRuntime):
    """The SPC agent's state: the shared runtime plus each asset's chart memory."""

    modality = "spc"
    unit = "records"
    train_hint = "linewatch train spc"

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str) -> None:
        super().__init__(settings=settings, bootstrap=bootstrap, database_url=database_url, logger=log)
        self.streams = StreamStates()

    def score(self, messages: list[RawMessage]) -> BatchResult:
        return score_spc_batch(messages, self.models, self.streams, event_window=self.event_window,
                               defects=self.defects)


def register_spc_agent(app: faust.App, *, settings: Settings, bootstrap: str, database_url: str) -> Any:
    """Add the SPC agent to ``app`` (called by :func:`linewatch.streams.app.build_app`).

    Returns its runtime (a :class:`SpcRuntime`, or the :class:`IsolatedRuntime` that holds one in a
    child process), so the worker's health endpoint can ask it how it is doing.
    """
    factory = partial(SpcRuntime, settings=settings, bootstrap=bootstrap, database_url=database_url)
    runtime: Any = (IsolatedRuntime(factory, modality=SpcRuntime.modality, logger=log)
                    if settings.isolate_scoring else factory())
    register_batch_agent(app, raw_topic(app, SPC.name), runtime, batch_size=settings.batch_size,
                         within=settings.batch_within_s, name="linewatch.score_spc", thread_name_prefix="spc-batch",
                         max_bytes=settings.batch_size * BYTES_PER_RECORD)
    return runtime
