"""What scoring one batch produces, for every modality: rows per table, score messages, dead letters, counts.

One shape, so the shared runtime persists, publishes, merges (the one-message-at-a-time fallback)
and counts every modality's batch the same way. What a modality counts (records, windows,
frames, heat maps, suppressed frames ...) is a name in :attr:`BatchResult.counts`, not a field.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
from pydantic import BaseModel
from typing_extensions import Unpack

from linewatch.detectors.bundle import ModelBundle
from linewatch.errors import DataError
from linewatch.schemas.codec import RecordError, decode_batch, decode_record_lists, encode
from linewatch.schemas.rows import DeadLetterRow, Row, ScoreRow, ShadowScoreRow
from linewatch.schemas.score_encoder import Defect, EventRef, ScoreMessage, Verdicts, encode_scores
from linewatch.storage.model_registry import is_shadow
from linewatch.streams.messages import DeadLetters, RawMessage

M = TypeVar("M", bound=BaseModel)


class ModelSource(Protocol):
    """What the pipelines need from a model store (``ModelCache`` in production, a stand-in in tests)."""

    def models_for(self, modality: str, asset: str, sku: str, camera: str = ...) -> list[ModelBundle]: ...


@dataclass
class BatchResult:
    """Everything one batch must persist and publish, and what happened to its events."""

    #: Rows to COPY, by row type (measurements, signal features, scores, heat maps ...).
    tables: defaultdict[type[Row], list[tuple]] = field(default_factory=lambda: defaultdict(list))
    score_messages: list[ScoreMessage] = field(default_factory=list)  # (key, value, headers)
    #: Messages for other topics, by topic name (the fusion agent's alerts), published like the scores.
    messages: defaultdict[str, list[ScoreMessage]] = field(default_factory=lambda: defaultdict(list))
    #: Shadow (challenger) models' messages, for the ``shadow_scores`` topic only: never routed.
    shadow_messages: list[ScoreMessage] = field(default_factory=list)
    deadletters: DeadLetters = field(default_factory=DeadLetters)
    #: Modality counters: ``records``, ``windows``, ``frames``, ``anomalies``, ``unscored`` ...
    counts: Counter[str] = field(default_factory=Counter)
    #: Thread-seconds per stage where a modality measures its own (frames: decode, score).
    seconds: Counter[str] = field(default_factory=Counter)
    #: Events stored without a score, by the scope that has no model yet (e.g. ``"press-1/bracket"``).
    unscored: Counter[str] = field(default_factory=Counter)
    #: Model/data mismatches worth a log line.
    problems: list[str] = field(default_factory=list)

    @property
    def scores(self) -> list[tuple]:
        """The ``scores`` rows (every modality writes them)."""
        return self.tables[ScoreRow]

    @property
    def shadow_scores(self) -> list[tuple]:
        """The ``shadow_scores`` rows: shadow versions' verdicts, kept out of ``scores``."""
        return self.tables[ShadowScoreRow]

    def add_scores(
        self,
        modality: str,
        bundle: ModelBundle,
        events: Sequence[EventRef],
        defects: Sequence[Defect | None] | None = None,
        **verdicts: Unpack[Verdicts],
    ) -> None:
        """Add one model's verdicts on ``modality`` events as rows and messages (one encoder for all).

        A champion's go to ``scores``; a shadow's (:func:`~linewatch.storage.model_registry.is_shadow`)
        to ``shadow_scores`` (table and topic) and nowhere else, so a challenger never reaches what
        routes alerts. Its anomalies count as ``shadow_anomalies``, not ``anomalies``.
        """
        shadow = is_shadow(bundle)
        messages, rows = encode_scores(modality=modality, detector=bundle.detector_name, model_version=bundle.version,
                                       threshold=bundle.threshold, events=events, shadow=shadow, defects=defects,
                                       **verdicts)
        flagged = int(np.count_nonzero(verdicts["is_anomaly"]))
        if shadow:
            self.shadow_messages += messages
            self.tables[ShadowScoreRow] += rows
            self.counts["shadow_anomalies"] += flagged
        else:
            self.score_messages += messages
            self.tables[ScoreRow] += rows
            self.counts["anomalies"] += flagged

    def decode(self, messages: Sequence[RawMessage], model: type[M], *, lists: bool = False
               ) -> list[tuple[RawMessage, M]]:
        """The messages that decode as ``model``, each with its record; the others become this batch's dead letters.

        With ``lists`` a message may also be a JSON array of records (a batched ``spc`` message): each
        good record comes with the message as :meth:`~RawMessage.of_record` of its index, in array
        order, and each bad one is a dead letter of its own (:meth:`reject` does the same for a decoded
        record the pipeline refuses later).
        """
        good: list[tuple[RawMessage, M]] = []
        raws = [m.value for m in messages]
        decoded = decode_record_lists(raws, model) if lists else decode_batch(raws, model)
        for msg, item in zip(messages, decoded, strict=True):
            if isinstance(item, DataError):
                self.deadletters.add(msg, item)
            elif isinstance(item, list):
                for i, rec in enumerate(item):
                    if isinstance(rec, RecordError):
                        self.deadletters.add(msg.of_record(i, len(item)), rec, payload=rec.payload)
                    else:
                        good.append((msg.of_record(i, len(item)), rec))
            else:
                good.append((msg, item))
        return good

    def reject(self, msg: RawMessage, record: BaseModel, error: DataError) -> None:
        """Dead-letter a decoded record the pipeline cannot use (too late, a characteristic missing ...).

        A batched message's record carries itself (re-serialised) as the payload, not the whole message.
        """
        self.deadletters.add(msg, error, payload=encode(record) if msg.record is not None else None)

    def add_unscored(self, scope: str, n: int = 1) -> None:
        self.unscored[scope] += n
        self.counts["unscored"] += n

    def rows(self) -> dict[type, list[tuple]]:
        return {**self.tables, DeadLetterRow: self.deadletters.rows()}

    def merge(self, other: BatchResult) -> None:
        """Append ``other`` (the runtime's one-message-at-a-time fallback)."""
        for row_type, rows in other.tables.items():
            self.tables[row_type] += rows
        self.score_messages += other.score_messages
        for topic, messages in other.messages.items():
            self.messages[topic] += messages
        self.shadow_messages += other.shadow_messages
        self.deadletters.extend(other.deadletters)
        self.counts.update(other.counts)
        self.seconds.update(other.seconds)
        self.unscored.update(other.unscored)
        self.problems += other.problems
