"""Pydantic models of every message on every topic (schema version 1).

These models are the contract with plant-wide consumers: JSON Schema files generated from
them live in ``linewatch/schemas/jsonschema/`` and a test fails when they go stale. Rules
that hold everywhere:

- timestamps are timezone-aware UTC (naive ones are rejected, not guessed);
- unknown fields are rejected (``extra="forbid"``): a misspelt field is a data error, not a
  silently dropped value;
- NaN and infinity are rejected in every float;
- every input event has a deterministic ``event_id`` derived from its natural key.

Binary payloads (images, samples) do not travel inside JSON: see :mod:`.envelope`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from linewatch.schemas.ids import event_id

SCHEMA_VERSION = 1
#: Identifiers (asset, sensor, SKU, part) stay short enough to index and to show on a dashboard.
MAX_ID_LENGTH = 128
#: A plant SPC record with more characteristics than this is a producer bug, not a part.
MAX_CHARACTERISTICS = 512
#: Measurements beyond this magnitude are unit or encoding errors (no gauge reads 1e12 mm).
MAX_ABS_VALUE = 1e12


def _utc(v: datetime) -> datetime:
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError(
            "timestamp must carry a timezone (e.g. 2026-01-01T08:00:00Z); naive times are ambiguous"
        )
    try:
        return v.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past the end of the calendar in UTC
        raise ValueError(f"timestamp {v.isoformat()} is outside the representable range once converted to UTC"
                         ) from None


def utc_now() -> datetime:
    return datetime.now(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f]+$")]
#: Range checked natively by pydantic-core (no Python call per value: a record has dozens).
Measurement = Annotated[float, Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]


class Message(BaseModel):
    """Common config: strict about unknown fields and non-finite numbers, immutable once built."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, ser_json_bytes="base64", val_json_bytes="base64"
    )

    schema_version: Literal[1] = SCHEMA_VERSION


class SpecLimit(BaseModel):
    """Engineering specification for one characteristic; either side may be absent (one-sided specs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lsl: Measurement | None = None
    usl: Measurement | None = None
    target: Measurement | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SpecLimit:
        if self.lsl is not None and self.usl is not None and self.lsl >= self.usl:
            raise ValueError(f"lsl ({self.lsl}) must be below usl ({self.usl})")
        return self


class SpcRecord(Message):
    """One part's (or sample's) measured characteristics, as an SPC system or gauge reports them."""

    asset_id: Identifier
    sku: Identifier = "default"
    part_id: Identifier
    ts: UtcDatetime
    values: dict[Identifier, Measurement] = Field(min_length=1, max_length=MAX_CHARACTERISTICS)
    limits: dict[Identifier, SpecLimit] = Field(default_factory=dict, max_length=MAX_CHARACTERISTICS)
    shift: Identifier | None = None
    lot: Identifier | None = Field(default=None, description="material or production lot the part belongs to")
    machine_state: Identifier | None = Field(
        default=None, description="the machine's mode when the part was made (e.g. running, warmup, after_setup)")

    @property
    def event_id(self) -> uuid.UUID:
        return event_id("spc", self.asset_id, self.part_id, self.ts.isoformat())


#: Records one batched ``spc`` message may carry: a gateway's buffer of a few seconds, not a day's backlog.
#: (The message also stays under the producers' 1 MB message limit, ``codec.MAX_BATCH_JSON_BYTES``.)
MAX_RECORDS_PER_MESSAGE = 10_000

#: A batched ``spc`` message: a JSON array of :class:`SpcRecord`, each exactly today's single-record form.
SpcRecordList = Annotated[list[SpcRecord], Field(
    min_length=1, max_length=MAX_RECORDS_PER_MESSAGE, title="SpcRecordList",
    description="A batched spc message: 1 to 10,000 spc records in one JSON array, each validated (and "
                "dead-lettered) on its own; the event id of each is the one it has when sent alone.")]


class FrameMeta(Message):
    """Header of a camera frame; the encoded image follows it in the binary envelope."""

    asset_id: Identifier
    camera: Identifier
    sku: Identifier = "default"
    part_id: Identifier
    ts: UtcDatetime
    encoding: Literal["jpeg", "png", "raw"]
    width: int = Field(gt=0, le=16384)
    height: int = Field(gt=0, le=16384)
    channels: Literal[1, 3] = 3
    machine_state: Identifier | None = Field(
        default=None, description="the station's state when the frame was taken (running, idle, changeover ...)")

    @property
    def event_id(self) -> uuid.UUID:
        return event_id("frame", self.asset_id, self.camera, self.part_id, self.ts.isoformat())


class SignalMeta(Message):
    """Header of one sensor's window; little-endian float32 samples follow it in the binary envelope."""

    asset_id: Identifier
    sensor: Identifier
    kind: Literal["vibration", "current", "temperature", "pressure", "speed", "other"]
    unit: Identifier
    start: UtcDatetime
    sample_rate_hz: float = Field(gt=0, le=1_000_000)
    n_samples: int = Field(gt=0, le=10_000_000)
    speed_hz: float | None = Field(
        default=None, gt=0, le=10_000,
        description="shaft speed during the window (Hz, from a tachometer or the drive); vibration windows "
        "with a known speed get bearing envelope features (env_bpfo, env_bpfi, env_bsf, env_ftf)",
    )
    machine_state: Identifier | None = Field(
        default=None, description="the machine's state during the window (running, idle, changeover ...)")

    @property
    def event_id(self) -> uuid.UUID:
        return event_id("signal", self.asset_id, self.sensor, self.start.isoformat())


class Contribution(BaseModel):
    """One feature's (or rule's, or region's) share of a score: the answer to "which sensor?".

    Besides the score's own contributions (``kind="feature"``, the default, listed first), an
    explanation carries notes that are not part of the score (``share`` 0): a run rule the
    characteristic ``name`` violated at this event (``kind="rule"``, ``detail`` the rule, ``value``
    the standardised point), and a context the model never saw in training
    (``kind="unseen_context"``, ``name`` the dimension, ``detail`` the sentence to show).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    value: float
    share: float = Field(ge=0.0, le=1.0, description="fraction of the total score this feature explains")
    kind: Literal["feature", "rule", "unseen_context"] = "feature"
    detail: str | None = Field(default=None, max_length=200,
                               description="rule name, or what about the context was never seen")
    modality: Literal["spc", "signals", "frames"] | None = Field(
        default=None, description="in an alert's contributors: the modality the contribution comes from")


class Modality(StrEnum):
    SPC = "spc"
    SIGNALS = "signals"
    FRAMES = "frames"


class DefectRoute(StrEnum):
    """Where a recognised defect goes (per class, ``defect_classes``)."""

    REWORK = "rework"
    SCRAP = "scrap"
    MAINTENANCE = "maintenance"


#: The classifier's outcomes that name no defect: a normal part, and below the confidence it was trained to keep.
GOOD_CLASS = "good"
UNKNOWN_CLASS = "unknown"
NOT_A_DEFECT = frozenset({GOOD_CLASS, UNKNOWN_CLASS})


class DefectVerdict(BaseModel):
    """What a defect classifier (the Day-30 layer) recognised in the scored event, beside the anomaly verdict.

    ``defect_class`` is ``good`` or ``unknown`` when it recognised no defect with confidence; a
    recognised class on a score whose ``is_anomaly`` is false is a known defect the anomaly layer
    did not flag.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    defect_class: Identifier
    confidence: float = Field(ge=0.0, le=1.0, description="the classifier's calibrated probability of the class")
    route: DefectRoute | None = Field(default=None, description="rework, scrap or maintenance; None for good/unknown")
    classifier_version: str


class Score(Message):
    """One detector's verdict on one event, as published on ``scores`` and stored in ``scores``."""

    event_id: uuid.UUID
    modality: Modality
    asset_id: Identifier
    sku: Identifier = "default"
    part_id: Identifier | None = None
    ts: UtcDatetime = Field(description="event time of the scored record")
    scored_at: UtcDatetime = Field(default_factory=utc_now)
    detector: str
    model_version: str
    raw_score: float
    tail_probability: float = Field(ge=0.0, le=1.0, description="P(normal event scores at least this high)")
    calibrated_score: float = Field(ge=0.0, description="-log10(tail_probability): 3 = one in a thousand")
    threshold: float = Field(description="calibrated_score above which the event is anomalous")
    is_anomaly: bool
    ready: bool = Field(default=True, description="False while a detector is still warming up")
    explanation: list[Contribution] = Field(default_factory=list, max_length=64)
    machine_state: Identifier | None = Field(
        default=None, description="the machine's state the scored event reported (running, idle, changeover ...)")
    shadow: bool = Field(default=False, description="a shadow (challenger) model's score: on the shadow_scores "
                                                    "topic only, never routed")
    defect: DefectVerdict | None = Field(default=None, description="the defect classifier's verdict on the event "
                                                                  "(absent where no classifier covers its scope)")


class AlertState(StrEnum):
    OPEN = "open"
    UPDATE = "update"
    ACKNOWLEDGE = "acknowledge"
    CLOSE = "close"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertKind(StrEnum):
    #: Fused evidence across modalities that something is wrong with the process or the machine.
    ANOMALY = "anomaly"
    #: A model's baseline has moved (drift): retrain it; never a reason to raise its threshold.
    RETRAIN_RECOMMENDED = "retrain_recommended"


class Route(StrEnum):
    """Who gets the alert: machines (signals first) go to maintenance, parts (SPC, images) to quality."""

    MAINTENANCE = "maintenance"
    QUALITY = "quality"
    ML = "ml"


class ScoreRef(BaseModel):
    """A link from an alert to one score behind it (``scores`` primary key plus the model version)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ts: UtcDatetime
    event_id: uuid.UUID
    detector: str
    model_version: str
    modality: Modality
    calibrated_score: float = Field(ge=0.0)


class Alert(Message):
    """A fused alert's lifecycle event; ``alert_id`` stays the same from open to close.

    ``score`` is the fused calibrated score (``-log10`` of the fused tail probability ``p_value``)
    of the window that caused this event; ``contributors`` name the causes across modalities in
    one format (region, sensor feature, characteristic or rule, each with its ``modality`` and
    weight ``share``); ``scores`` link to the score rows behind them.
    """

    alert_id: uuid.UUID
    state: AlertState
    kind: AlertKind = AlertKind.ANOMALY
    asset_id: Identifier
    severity: Severity
    route: Route = Route.QUALITY
    ts: UtcDatetime
    opened_at: UtcDatetime
    score: float = Field(ge=0.0, description="fused calibrated score")
    p_value: float = Field(default=1.0, ge=0.0, le=1.0, description="fused tail probability of the window")
    modalities: list[Modality]
    contributors: list[Contribution] = Field(default_factory=list, max_length=64)
    event_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    scores: list[ScoreRef] = Field(default_factory=list, max_length=200)
    model_versions: list[str] = Field(default_factory=list, max_length=64)
    shadow: bool = False
    actor: str | None = Field(default=None, max_length=MAX_ID_LENGTH,
                              description="who acknowledged or closed it by hand")
    note: str = Field(default="", max_length=2000, description="why it changed state (e.g. 'quiet for 3 windows')")
    defect_class: Identifier | None = Field(default=None, description="the recognised defect class of the alert's "
                                                                     "events (most confident); None: unclassified")
    defect_route: DefectRoute | None = Field(default=None, description="where the recognised defect goes")


class Verdict(StrEnum):
    TRUE_DEFECT = "true_defect"
    FALSE_ALARM = "false_alarm"
    ACCEPTABLE_VARIATION = "acceptable_variation"
    NEW_SKU = "new_sku"


class Disposition(Message):
    """Operator feedback on an alert or an event; it feeds threshold calibration and retraining."""

    alert_id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    verdict: Verdict
    operator: Identifier
    defect_class: Identifier | None = Field(default=None, description="what the defect was, in the plant's words")
    note: str = Field(default="", max_length=2000)
    ts: UtcDatetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _target(self) -> Disposition:
        if self.alert_id is None and self.event_id is None:
            raise ValueError("a disposition must name an alert_id or an event_id")
        return self

    @property
    def disposition_id(self) -> uuid.UUID:
        target = str(self.alert_id or self.event_id)
        return event_id("disposition", target, self.operator, self.ts.isoformat())


class MachineState(Message):
    """A machine's state from a PLC or MES: alerts are suppressed while it is idle or in changeover.

    The state holds from ``ts`` until the asset's next message. ``running`` (and any state not in
    the suppressing set of the fusion settings) lets alerts through.
    """

    asset_id: Identifier
    ts: UtcDatetime
    state: Identifier = Field(description="running, idle, changeover, setup, maintenance ...")
    reason: str = Field(default="", max_length=500)


#: Dead-letter messages carry at most this much of the original value (the table keeps all of it):
#: 64 KiB is 87 KB of base64, far below any broker's message limit, and enough to see what was sent.
MAX_DEADLETTER_EXCERPT_BYTES = 64 * 1024
#: Longest original key a dead-letter message carries whole (keys are asset ids: short).
MAX_DEADLETTER_KEY_BYTES = 1024
#: Longest rejection reason kept; the first lines of a validation error say what to fix.
MAX_REASON_LENGTH = 4000


class DeadLetter(Message):
    """A message that could not be decoded or validated, with the reason and its origin.

    On the ``deadletter`` topic the original value travels whole up to
    :data:`MAX_DEADLETTER_EXCERPT_BYTES`; a larger one travels as its first bytes with
    ``payload_truncated`` set, and ``payload_size`` and ``payload_sha256`` describe the original,
    which the ``deadletters`` table keeps byte for byte (row key: topic, partition, offset and the
    payload's md5). A bad input of any size thus never makes a dead letter too large to publish.
    """

    source_topic: str
    partition: int
    offset: int
    key: bytes | None = Field(default=None, description="the original key (its first 1 KiB when key_truncated)")
    key_truncated: bool = False
    reason: str = Field(max_length=MAX_REASON_LENGTH)
    error_type: str = Field(max_length=200)
    payload: bytes = Field(description="the original message value byte for byte (base64 in JSON), or its "
                                       "first 64 KiB when payload_truncated")
    payload_truncated: bool = False
    payload_size: int | None = Field(default=None, ge=0, description="size of the original value in bytes")
    payload_sha256: str | None = Field(default=None, description="hex SHA-256 of the original value")
    received_at: UtcDatetime = Field(default_factory=utc_now)

    @property
    def origin(self) -> str:
        return f"{self.source_topic}[{self.partition}]@{self.offset}"


#: Every record type that travels on a topic, by the name its JSON Schema file carries.
RECORD_TYPES: dict[str, type[BaseModel]] = {
    "spc_record": SpcRecord,
    "frame_meta": FrameMeta,
    "signal_meta": SignalMeta,
    "score": Score,
    "alert": Alert,
    "disposition": Disposition,
    "machine_state": MachineState,
    "deadletter": DeadLetter,
}

#: Message forms that are a list of records rather than one (JSON Schema file name -> pydantic type).
LIST_TYPES: dict[str, Any] = {
    "spc_record_list": SpcRecordList,
}
