"""The database rows messages become, one model per table.

The batched writers build plain tuples in the field order of these models (building a
pydantic object per row would cost more than the COPY itself); a test checks that every
model's fields match its table's columns in ``sql/``, so the two cannot drift apart.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Table the row lives in, and the natural key that makes a redelivered event a no-op.
    __table__: str = ""
    __key__: tuple[str, ...] = ()

    def as_tuple(self) -> tuple:
        """The row in COPY column order (:func:`columns`), for the batched writers."""
        return tuple(getattr(self, name) for name in type(self).model_fields)


class SpcMeasurementRow(Row):
    __table__ = "spc_measurements"
    __key__ = ("ts", "event_id", "characteristic")

    ts: datetime
    event_id: uuid.UUID
    asset_id: str
    sku: str
    part_id: str
    shift: str | None
    characteristic: str
    value: float
    lsl: float | None
    usl: float | None
    target: float | None


class ScoreRow(Row):
    __table__ = "scores"
    __key__ = ("ts", "event_id", "detector")

    ts: datetime
    event_id: uuid.UUID
    modality: str
    asset_id: str
    sku: str
    part_id: str | None
    detector: str
    model_version: str
    raw_score: float
    tail_probability: float
    calibrated_score: float
    threshold: float
    is_anomaly: bool
    ready: bool
    top_feature: str | None
    explanation: str  # JSON text of list[Contribution]
    #: The defect classifier's verdict (sql/190_defects.sql); None where no classifier covers the scope.
    defect_class: str | None = None
    defect_confidence: float | None = None
    defect_route: str | None = None
    classifier_version: str | None = None
    scored_at: datetime  # last: tests compare rows without it


class ShadowScoreRow(ScoreRow):
    """A shadow (challenger) model's score: the ``scores`` shape in its own table, never routed."""

    __table__ = "shadow_scores"
    __key__ = ("ts", "event_id", "detector", "model_version")


class AlertRow(Row):
    __table__ = "alerts"
    __key__ = ("ts", "alert_id", "state")

    ts: datetime
    alert_id: uuid.UUID
    state: str
    asset_id: str
    severity: str
    opened_at: datetime
    score: float
    modalities: list[str]
    contributors: str  # JSON text of list[Contribution]
    event_ids: list[uuid.UUID]
    shadow: bool
    kind: str
    route: str
    p_value: float
    scores: str  # JSON text of list[ScoreRef]
    model_versions: list[str]
    actor: str | None
    note: str
    defect_class: str | None = None
    defect_route: str | None = None


class DispositionRow(Row):
    __table__ = "dispositions"
    __key__ = ("disposition_id",)

    disposition_id: uuid.UUID
    alert_id: uuid.UUID | None
    event_id: uuid.UUID | None
    verdict: str
    operator: str
    note: str
    ts: datetime
    defect_class: str | None


class MachineStateRow(Row):
    __table__ = "machine_states"
    __key__ = ("asset_id", "ts")

    ts: datetime
    asset_id: str
    state: str
    reason: str


class AlertSuppressionRow(Row):
    __table__ = "alert_suppressions"
    __key__ = ("ts", "asset_id", "shadow")

    ts: datetime
    asset_id: str
    reason: str
    detail: str
    score: float
    shadow: bool
    contributors: str  # JSON text


class DeadLetterRow(Row):
    __table__ = "deadletters"
    __key__ = ("source_topic", "partition", "offset", "payload_md5")

    received_at: datetime
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    reason: str
    error_type: str
    payload: bytes


ROW_TYPES: tuple[type[Row], ...] = (SpcMeasurementRow, ScoreRow, ShadowScoreRow, AlertRow, DispositionRow,
                                    MachineStateRow, AlertSuppressionRow, DeadLetterRow)


def columns(row_type: type[Row]) -> tuple[str, ...]:
    """Column names in COPY order."""
    return tuple(row_type.model_fields)
