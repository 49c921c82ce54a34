"""Score a batch of raw ``spc`` messages: decode, pick each record's model, score, build rows.

This is the whole of the SPC agent's work except I/O, so the live agent, the replay job and
the benchmark run exactly this code. Per batch it returns the rows to persist (measurements,
scores, dead letters) and the ``scores`` messages to publish; nothing here touches Kafka or
the database.

Records the active models cannot score (a characteristic they need is missing) become dead
letters with the reason; records with no model for their scope are stored as measurements
and counted as unscored, so nothing is lost while a first model is being trained.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from linewatch.detectors.bundle import BundleScores, ModelBundle
from linewatch.errors import DataError
from linewatch.schemas.codec import decode_batch
from linewatch.schemas.messages import SpcRecord
from linewatch.schemas.rows import DeadLetterRow, ScoreRow, SpcMeasurementRow
from linewatch.streams.messages import DeadLetters, RawMessage

#: Contributions published per score; the rest are noise for a person reading an alert.
TOP_CONTRIBUTIONS = 5


class ModelSource(Protocol):
    """What the pipeline needs from a model store (``ModelCache`` in production, a stand-in in tests)."""

    def for_record(self, asset_id: str, sku: str) -> list[ModelBundle]: ...


@dataclass
class SpcBatchResult:
    measurements: list[tuple] = field(default_factory=list)
    scores: list[tuple] = field(default_factory=list)
    score_messages: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    deadletters: DeadLetters = field(default_factory=DeadLetters)
    records: int = 0
    unscored: int = 0
    anomalies: int = 0

    def merge(self, other: SpcBatchResult) -> None:
        """Append another result (the agent's one-message-at-a-time fallback)."""
        self.measurements += other.measurements
        self.scores += other.scores
        self.score_messages += other.score_messages
        self.deadletters.items += other.deadletters.items
        self.records += other.records
        self.unscored += other.unscored
        self.anomalies += other.anomalies

    def rows(self) -> dict[type, list[tuple]]:
        return {
            SpcMeasurementRow: self.measurements,
            ScoreRow: self.scores,
            DeadLetterRow: self.deadletters.rows(),
        }


def explanation(contributions: np.ndarray, names: tuple[str, ...], k: int = TOP_CONTRIBUTIONS
                ) -> list[list[dict[str, float | str]]]:
    """Top-``k`` contributions per row as ``Contribution``-shaped dicts, largest first.

    Plain dicts, not models: building five pydantic objects per row costs more than scoring the
    row; the tests hold the output to the ``Contribution`` schema.
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


class StreamStates:
    """Each asset's own copy of every stateful detector (chart memory belongs to one asset's parts).

    Owned by the agent, keyed by (asset, detector): a new model version starts fresh charts and
    replaces the old copy, and nothing is shared between assets or kept at module level.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], tuple[str, object]] = {}  # (asset, detector) -> (version, copy)

    def get(self, asset_id: str, bundle: ModelBundle) -> object:
        """The asset's copy of ``bundle``'s detector; a new version replaces (and frees) the old copy."""
        key = (asset_id, bundle.detector_name)
        held = self._by_key.get(key)
        if held is None or held[0] != bundle.version:
            held = (bundle.version, bundle.new_stream())
            self._by_key[key] = held
        return held[1]

    def __len__(self) -> int:
        return len(self._by_key)


def score_spc_batch(messages: list[RawMessage], models: ModelSource,
                    streams: StreamStates | None = None) -> SpcBatchResult:
    """Everything the agent must persist and publish for one batch of raw ``spc`` messages.

    Every active detector for a record's scope scores it, so one part can get a Hotelling T²
    verdict and an EWMA verdict side by side. Stateful detectors score each asset's records in
    arrival order, continuing that asset's chart from the previous batch (``streams``).
    """
    streams = streams if streams is not None else StreamStates()
    out = SpcBatchResult()
    decoded = decode_batch([m.value for m in messages], SpcRecord)
    groups: dict[int, tuple[ModelBundle, list[SpcRecord]]] = {}
    accepted: list[SpcRecord] = []
    for msg, rec in zip(messages, decoded, strict=True):
        if isinstance(rec, DataError):
            out.deadletters.add(msg, rec)
            continue
        bundles = models.for_record(rec.asset_id, rec.sku)
        missing = sorted({f for b in bundles for f in b.feature_names if f not in rec.values})
        if missing:
            out.deadletters.add(msg, DataError(
                f"record lacks characteristic(s) {missing} that the active models for "
                f"{rec.asset_id}/{rec.sku} need; send them or train models on the characteristics "
                "this asset reports"))
            continue
        accepted.append(rec)
        if not bundles:
            out.unscored += 1
        for bundle in bundles:
            groups.setdefault(id(bundle), (bundle, []))[1].append(rec)

    event_ids = {id(rec): rec.event_id for rec in accepted}
    scored_at = datetime.now(UTC)
    for bundle, recs in groups.values():
        if bundle.stateful:
            by_asset: dict[str, list[SpcRecord]] = {}
            for rec in recs:
                by_asset.setdefault(rec.asset_id, []).append(rec)
            parts = [(asset_recs, bundle.score_stream(_matrix(bundle, asset_recs), streams.get(asset, bundle)))
                     for asset, asset_recs in by_asset.items()]
        else:
            parts = [(recs, bundle.score(_matrix(bundle, recs)))]
        for part_recs, result in parts:
            _emit_scores(out, bundle, part_recs, [event_ids[id(r)] for r in part_recs], result, scored_at)
    for rec in accepted:
        _emit_measurements(out, rec, event_ids[id(rec)])
    out.records = len(accepted)
    return out


def _matrix(bundle: ModelBundle, recs: list[SpcRecord]) -> np.ndarray:
    """Rows in the model's feature order, never in the record's dict order."""
    names = bundle.feature_names
    return np.array([[rec.values[f] for f in names] for rec in recs], dtype=np.float64).reshape(len(recs), len(names))


def _emit_measurements(out: SpcBatchResult, rec: SpcRecord, eid: uuid.UUID) -> None:
    for name, value in rec.values.items():
        lim = rec.limits.get(name)
        out.measurements.append((
            rec.ts, eid, rec.asset_id, rec.sku, rec.part_id, rec.shift, name, value,
            lim.lsl if lim else None, lim.usl if lim else None, lim.target if lim else None,
        ))


def _emit_scores(out: SpcBatchResult, bundle: ModelBundle, recs: list[SpcRecord], ids: list[uuid.UUID],
                 r: BundleScores, scored_at: datetime) -> None:
    """Score rows and ``scores`` messages; the JSON is built directly in the ``Score`` schema's shape
    (a test decodes it with the model) because per-row model construction dominated the batch cost."""
    expl = explanation(r.contributions, r.feature_names) if r.contributions is not None else [[]] * len(recs)
    detector, version = bundle.detector_name, bundle.version
    raw, tail, cal = r.raw.tolist(), r.tail_probability.tolist(), r.calibrated.tolist()
    flags = r.is_anomaly.tolist()
    scored_iso = scored_at.isoformat()
    dumps = json.dumps
    for i, rec in enumerate(recs):
        contributions = expl[i]
        top = contributions[0]["name"] if contributions else None
        anomalous = bool(flags[i])
        out.anomalies += anomalous
        expl_json = dumps(contributions)
        body = (
            f'{{"schema_version":1,"event_id":"{ids[i]}","modality":"spc",'
            f'"asset_id":{dumps(rec.asset_id)},"sku":{dumps(rec.sku)},"part_id":{dumps(rec.part_id)},'
            f'"ts":"{rec.ts.isoformat()}","scored_at":"{scored_iso}","detector":{dumps(detector)},'
            f'"model_version":{dumps(version)},"raw_score":{raw[i]!r},"tail_probability":{tail[i]!r},'
            f'"calibrated_score":{cal[i]!r},"threshold":{r.threshold!r},'
            f'"is_anomaly":{"true" if anomalous else "false"},"ready":true,"explanation":{expl_json}}}'
        )
        out.score_messages.append((rec.asset_id.encode(), body.encode()))
        out.scores.append((
            rec.ts, ids[i], "spc", rec.asset_id, rec.sku, rec.part_id, detector, version,
            raw[i], tail[i], cal[i], r.threshold, anomalous, True, top, expl_json, scored_at,
        ))


def group_counts(result: SpcBatchResult) -> dict[str, int]:
    """Counters a progress display wants."""
    counts: dict[str, int] = defaultdict(int)
    counts["records"] = result.records
    counts["scores"] = len(result.scores)
    counts["deadletters"] = len(result.deadletters)
    counts["anomalies"] = result.anomalies
    counts["unscored"] = result.unscored
    return dict(counts)
