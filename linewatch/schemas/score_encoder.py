"""The one way a detector's verdicts become ``scores`` messages and ``scores`` rows, for every modality.

SPC records, signal frames and camera frames are scored by different detectors, but a
``scores`` consumer (another plant system, fusion, Grafana, an SPC engineer in SQL) must see
one shape. This module writes both forms from the same values, so the message and the row can
never disagree, and the schema version lives in one constant
(:data:`~linewatch.schemas.messages.SCHEMA_VERSION`).

The JSON is written directly in the :class:`~linewatch.schemas.messages.Score` shape instead of
building a pydantic object per row (that cost more than scoring the row); the tests decode every
message with the model and compare it with its row.

>>> import uuid
>>> from datetime import UTC, datetime
>>> ts = datetime(2026, 1, 1, tzinfo=UTC)
>>> ev = EventRef(uuid.UUID(int=1), "press-1", "bracket", "p1", ts)
>>> msgs, rows = encode_scores(modality="spc", detector="hotelling", model_version="v1", threshold=3.0,
...     events=[ev], raw=[2.5], tail=[0.01], calibrated=[2.0], is_anomaly=[False], ready=True,
...     explanations=[[{"name": "bore", "value": 2.5, "share": 1.0}]], scored_at=ts)
>>> from linewatch.schemas.messages import Score
>>> Score.model_validate_json(msgs[0][1]).explanation[0].name, rows[0][14]
('bore', 'bore')
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, TypedDict

import numpy as np
from typing_extensions import Unpack

from linewatch.schemas.messages import SCHEMA_VERSION

#: Contributions published per score; the rest are noise for a person reading an alert.
TOP_CONTRIBUTIONS = 5

#: ``Contribution``-shaped dicts (``name``, ``value``, ``share``), largest first.
Explanation = list[dict[str, float | str]]
#: Kafka header every ``scores`` message carries: ``<event_id>/<detector>/<model_version>``. The
#: topic is at-least-once (a worker that dies between publishing and acknowledging republishes
#: the batch), so a consumer keeps the first message per value of this header.
DEDUP_HEADER = "linewatch-dedup-key"
#: A ``scores`` message: Kafka key (the asset, so one asset's verdicts stay ordered), value, headers.
ScoreMessage = tuple[bytes, bytes, list[tuple[str, bytes]]]


class EventRef(NamedTuple):
    """The scored event's identity: what a score message and row say it is about."""

    event_id: uuid.UUID
    asset_id: str
    sku: str
    part_id: str | None
    ts: datetime
    #: The machine's state the event reported (running, idle, changeover ...): in the message, for
    #: fusion's suppression; not in the row (``scores`` keeps it in ``machine_states``' own table).
    machine_state: str | None = None


def explanation(contributions: np.ndarray, names: Sequence[str], k: int = TOP_CONTRIBUTIONS) -> list[Explanation]:
    """Top-``k`` contributions per row as ``Contribution``-shaped dicts, largest first.

    Plain dicts, not models: building five pydantic objects per row costs more than scoring the
    row; the tests hold the output to the ``Contribution`` schema.

    >>> explanation(np.array([[1.0, 3.0]]), ("a", "b"))[0][0]
    {'name': 'b', 'value': 3.0, 'share': 0.75}
    """
    c = np.clip(contributions, 0.0, None)
    total = c.sum(axis=1, keepdims=True)
    share = np.divide(c, total, out=np.zeros_like(c), where=total > 0)
    order = np.argsort(-c, axis=1)[:, :k]
    top_c = np.take_along_axis(c, order, axis=1).tolist()
    top_s = np.take_along_axis(share, order, axis=1).tolist()
    return [
        [{"name": names[j], "value": v, "share": sh} for j, v, sh in zip(o, cv, sv, strict=True)]
        for o, cv, sv in zip(order.tolist(), top_c, top_s, strict=True)
    ]


def _floats(values: Sequence[float] | np.ndarray) -> list[float]:
    return np.asarray(values, dtype=np.float64).tolist()


class Defect(NamedTuple):
    """A defect classifier's verdict on one event (:class:`~linewatch.schemas.messages.DefectVerdict`'s fields)."""

    defect_class: str
    confidence: float
    route: str | None
    classifier_version: str

    def json(self) -> str:
        route = json.dumps(self.route) if self.route is not None else "null"
        return (f'{{"defect_class":{json.dumps(self.defect_class)},"confidence":{float(self.confidence)!r},'
                f'"route":{route},"classifier_version":{json.dumps(self.classifier_version)}}}')


_NO_DEFECT = (None, None, None, None)


class Verdicts(TypedDict):
    """One detector's verdicts on a batch of events, each aligned with the events."""

    raw: Sequence[float] | np.ndarray
    tail: Sequence[float] | np.ndarray
    calibrated: Sequence[float] | np.ndarray
    is_anomaly: Sequence[bool] | np.ndarray
    ready: Sequence[bool] | np.ndarray | bool
    explanations: Sequence[Explanation] | None
    scored_at: datetime


def encode_scores(
    *,
    modality: str,
    detector: str,
    model_version: str,
    threshold: float,
    events: Sequence[EventRef],
    shadow: bool = False,
    defects: Sequence[Defect | None] | None = None,
    **verdicts: Unpack[Verdicts],
) -> tuple[list[ScoreMessage], list[tuple]]:
    """``(key, value, headers)`` messages for the ``scores`` topic and rows in ``ScoreRow`` field order.

    ``shadow=True`` (a challenger model's verdicts) marks every message ``"shadow":true``; its rows
    have the same shape and go to ``shadow_scores``, its messages to the ``shadow_scores`` topic.

    One detector's verdicts on ``events``, all arrays aligned with them. ``top_feature`` of a row
    is the name of its first contribution (a feature, a rule, a region or a data-quality note),
    never an ``unseen_context`` note: that names a context dimension, not what scored. ``defects``
    (aligned with ``events``) is the defect classifier's verdict on each event, where one covers it.
    """
    n = len(events)
    raw, tail, calibrated = verdicts["raw"], verdicts["tail"], verdicts["calibrated"]
    is_anomaly, ready, scored_at = verdicts["is_anomaly"], verdicts["ready"], verdicts["scored_at"]
    explanations = verdicts["explanations"]
    raw_l, tail_l, cal_l = _floats(raw), _floats(tail), _floats(calibrated)
    flags = np.asarray(is_anomaly, dtype=bool).tolist()
    ready_l = [bool(ready)] * n if isinstance(ready, bool | np.bool_) else np.asarray(ready, dtype=bool).tolist()
    expl = explanations if explanations is not None else [[]] * n
    dumps = json.dumps
    threshold = float(threshold)
    scored_iso = scored_at.isoformat()
    common = (f'"modality":{dumps(str(modality))},'
              f'"scored_at":"{scored_iso}","detector":{dumps(detector)},"model_version":{dumps(model_version)},'
              f'"threshold":{threshold!r}' + (',"shadow":true' if shadow else ''))
    modality_s = str(modality)
    messages: list[ScoreMessage] = []
    dedup_suffix = f"/{detector}/{model_version}".encode()
    rows: list[tuple] = []
    for i, ev in enumerate(events):
        contributions = expl[i]
        top = next((c["name"] for c in contributions if c.get("kind") != "unseen_context"), None)
        anomalous, is_ready = bool(flags[i]), bool(ready_l[i])
        expl_json = dumps(contributions)
        part = f'"part_id":{dumps(ev.part_id)},' if ev.part_id is not None else ""
        if ev.machine_state is not None:
            part += f'"machine_state":{dumps(ev.machine_state)},'
        defect = defects[i] if defects is not None else None
        if defect is not None:
            part += f'"defect":{defect.json()},'
        body = (
            f'{{"schema_version":{SCHEMA_VERSION},"event_id":"{ev.event_id}",{common},'
            f'"asset_id":{dumps(ev.asset_id)},"sku":{dumps(ev.sku)},{part}"ts":"{ev.ts.isoformat()}",'
            f'"raw_score":{raw_l[i]!r},"tail_probability":{tail_l[i]!r},"calibrated_score":{cal_l[i]!r},'
            f'"is_anomaly":{"true" if anomalous else "false"},"ready":{"true" if is_ready else "false"},'
            f'"explanation":{expl_json}}}'
        )
        messages.append((ev.asset_id.encode(), body.encode(),
                         [(DEDUP_HEADER, str(ev.event_id).encode() + dedup_suffix)]))
        rows.append((
            ev.ts, ev.event_id, modality_s, ev.asset_id, ev.sku, ev.part_id, detector, model_version,
            raw_l[i], tail_l[i], cal_l[i], threshold, anomalous, is_ready, top, expl_json,
            *(defect if defect is not None else _NO_DEFECT), scored_at,
        ))
    return messages, rows
