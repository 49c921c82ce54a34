"""The dispositions agent: operator feedback from any system (an MES, a quality app) lands in the table.

``linewatch disposition`` stores its own dispositions and publishes them; other systems only
publish. This agent takes the ``dispositions`` topic in batches, decodes each message (a bad one
is dead-lettered with its reason, like every agent's input) and writes ``DispositionRow`` rows
idempotently on ``disposition_id``, so the command's own messages land once and a redelivered
batch is a no-op. It rides on the shared batch runtime (:mod:`linewatch.streams.runtime`): same
failure policy, same offset-after-durable-write rule, same counters.

It scores nothing and loads no models; its runtime's model cache watches the ``dispositions``
modality, which has none, so a refresh is one empty query.
"""

from __future__ import annotations

import logging

import faust

from linewatch.config import Settings
from linewatch.feedback.dispositions import to_row
from linewatch.schemas.messages import Disposition
from linewatch.schemas.rows import DispositionRow
from linewatch.schemas.topics import DISPOSITIONS
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import BatchRuntime, raw_topic, register_batch_agent

log = logging.getLogger(__name__)


class DispositionsRuntime(BatchRuntime):
    """Decodes and persists ``dispositions`` messages; nothing to score."""

    modality = "dispositions"
    classifies = False
    unit = "dispositions"
    train_hint = "no model: dispositions are stored, not scored"

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str) -> None:
        super().__init__(settings=settings, bootstrap=bootstrap, database_url=database_url, logger=log)

    def score(self, messages: list[RawMessage]) -> BatchResult:
        result = BatchResult()
        for _msg, decoded in result.decode(messages, Disposition):
            result.tables[DispositionRow].append(to_row(decoded))
            result.counts[self.unit] += 1
            result.counts[decoded.verdict.value] += 1
        return result


def register_dispositions_agent(app: faust.App, *, settings: Settings, bootstrap: str,
                                database_url: str) -> DispositionsRuntime:
    """Add the dispositions agent to ``app``; returns its runtime for the worker's health endpoint."""
    runtime = DispositionsRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url)
    register_batch_agent(app, raw_topic(app, DISPOSITIONS.name), runtime, batch_size=settings.batch_size,
                         within=settings.batch_within_s, name="linewatch.store_dispositions",
                         thread_name_prefix="dispositions-batch")
    return runtime
