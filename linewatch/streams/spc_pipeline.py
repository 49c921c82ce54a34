"""Score a batch of raw ``spc`` messages: decode, pick each record's model, score, build rows.

A message holds one record or a JSON array of them (a batched message, see
:func:`~linewatch.schemas.codec.decode_record_lists`); its records are scored as if each had come alone,
in array order, and each bad one is a dead letter of its own.

This is the whole of the SPC agent's work except I/O, so the live agent, the replay job and
the benchmark run exactly this code. Per batch it returns the rows to persist (measurements,
scores, dead letters) and the ``scores`` messages to publish; nothing here touches Kafka or
the database.

Next to each score, the run rules (Western Electric / Nelson, per asset and characteristic, state
carried across batches) and the training-coverage check add notes to its explanation
(:mod:`linewatch.streams.spc_notes`).

Records the active models cannot score (a characteristic they need is missing) become dead
letters with the reason; records with no model for their scope are stored as measurements
and counted as unscored, so nothing is lost while a first model is being trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from linewatch.coverage import Coverage
from linewatch.detectors.bundle import BundleScores, ModelBundle
from linewatch.detectors.spc_rules import RunRuleMonitor
from linewatch.errors import DataError
from linewatch.schemas.event_time import EventTimeWindow
from linewatch.schemas.messages import Modality, SpcRecord
from linewatch.schemas.rows import SpcMeasurementRow
from linewatch.schemas.score_encoder import Defect, EventRef, Explanation, explanation
from linewatch.storage.model_registry import is_shadow
from linewatch.streams.batch import BatchResult, ModelSource
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_notes import context_columns, coverage_of, rule_monitor_for, rule_notes, unseen_notes

if TYPE_CHECKING:
    from linewatch.defects.stream import DefectLayer


class StreamStates:
    """Each asset's own copy of every stateful detector (chart memory belongs to one asset's parts).

    Owned by the agent, keyed by (asset, detector, shadow): a new model version starts fresh charts
    and replaces the old copy, and nothing is shared between assets or kept at module level. The
    champion and a shadow of the same detector keep a copy each (``shadow`` in the key), so scoring
    the challenger neither resets nor moves the champion's charts.
    """

    def __init__(self) -> None:
        #: (asset, detector, shadow) -> (version, copy).
        self._by_key: dict[tuple[str, str, bool], tuple[str, object]] = {}
        #: (asset, detector, shadow) -> (version, run-rule monitor or None): the rules' memory, like the charts'.
        self._rules: dict[tuple[str, str, bool], tuple[str, RunRuleMonitor | None]] = {}
        self._coverage: dict[tuple[str, str], Coverage | None] = {}  # (detector, version) -> parsed once

    def get(self, asset_id: str, bundle: ModelBundle) -> object:
        """The asset's copy of ``bundle``'s detector; a new version replaces (and frees) the old copy."""
        key = (asset_id, bundle.detector_name, is_shadow(bundle))
        held = self._by_key.get(key)
        if held is None or held[0] != bundle.version:
            held = (bundle.version, bundle.new_stream())
            self._by_key[key] = held
        return held[1]

    def rules(self, asset_id: str, bundle: ModelBundle) -> RunRuleMonitor | None:
        """The asset's run-rule monitor under ``bundle`` (``None``: the model has no rule baseline)."""
        key = (asset_id, bundle.detector_name, is_shadow(bundle))
        held = self._rules.get(key)
        if held is None or held[0] != bundle.version:
            held = (bundle.version, rule_monitor_for(bundle))
            self._rules[key] = held
        return held[1]

    def coverage(self, bundle: ModelBundle) -> Coverage | None:
        """``bundle``'s training coverage, parsed once per version."""
        key = (bundle.detector_name, bundle.version)
        if key not in self._coverage:
            self._coverage[key] = coverage_of(bundle)
        return self._coverage[key]

    def __len__(self) -> int:
        return len(self._by_key)


def score_spc_batch(messages: list[RawMessage], models: ModelSource,
                    streams: StreamStates | None = None, *, event_window: EventTimeWindow | None = None,
                    defects: DefectLayer | None = None) -> BatchResult:
    """Everything the agent must persist and publish for one batch of raw ``spc`` messages.

    Every active detector for a record's scope scores it, so one part can get a Hotelling T²
    verdict and an EWMA verdict side by side. Stateful detectors score each asset's records in
    arrival order, continuing that asset's chart from the previous batch (``streams``). Records
    stamped outside ``event_window`` (default :class:`EventTimeWindow`) are dead letters. With
    ``defects``, a scope's defect classifier names each record's class on all its scores.
    """
    streams = streams if streams is not None else StreamStates()
    window, now = event_window or EventTimeWindow(), datetime.now(UTC)
    out = BatchResult()
    groups: dict[int, tuple[ModelBundle, list[SpcRecord]]] = {}
    accepted: list[SpcRecord] = []
    for msg, rec in out.decode(messages, SpcRecord, lists=True):
        if (late := window.violation(rec.ts, now)) is not None:
            out.reject(msg, rec, DataError(late))
            continue
        bundles = models.models_for(Modality.SPC, rec.asset_id, rec.sku)
        missing = sorted({f for b in bundles for f in b.feature_names if f not in rec.values})
        if missing:
            out.reject(msg, rec, DataError(
                f"record lacks characteristic(s) {missing} that the active models for "
                f"{rec.asset_id}/{rec.sku} need; send them or train models on the characteristics "
                "this asset reports"))
            continue
        accepted.append(rec)
        if not bundles:
            out.add_unscored(f"{rec.asset_id}/{rec.sku}")
        for bundle in bundles:
            groups.setdefault(id(bundle), (bundle, []))[1].append(rec)

    refs = {id(rec): EventRef(rec.event_id, rec.asset_id, rec.sku, rec.part_id, rec.ts, rec.machine_state)
            for rec in accepted}
    classes = (dict(zip((id(r) for r in accepted), defects.classify_records(
        Modality.SPC, [(r.asset_id, r.sku, r.values) for r in accepted]), strict=True)) if defects else {})
    scored_at = datetime.now(UTC)
    for bundle, recs in groups.values():
        by_asset: dict[str, list[int]] = {}  # asset -> its records' positions in ``recs``, in arrival order
        for i, rec in enumerate(recs):
            by_asset.setdefault(rec.asset_id, []).append(i)
        X = _matrix(bundle, recs)
        notes = _notes(out, bundle, recs, X, by_asset, streams)
        if bundle.stateful:
            parts = [(idx, bundle.score_stream(X[idx], streams.get(asset, bundle))) for asset, idx in by_asset.items()]
        else:
            parts = [(list(range(len(recs))), bundle.score(X))]
        for idx, result in parts:
            _add_scores(out, bundle, [refs[id(recs[i])] for i in idx], result, scored_at, [notes[i] for i in idx],
                        [classes.get(id(recs[i])) for i in idx] if classes else None)
    measurements = out.tables[SpcMeasurementRow]
    for rec in accepted:
        _add_measurements(measurements, rec, refs[id(rec)].event_id)
    out.counts["records"] += len(accepted)
    return out


def _matrix(bundle: ModelBundle, recs: list[SpcRecord]) -> np.ndarray:
    """Rows in the model's feature order, never in the record's dict order."""
    names = bundle.feature_names
    return np.array([[rec.values[f] for f in names] for rec in recs], dtype=np.float64).reshape(len(recs), len(names))


def _add_measurements(rows: list[tuple], rec: SpcRecord, eid: object) -> None:
    for name, value in rec.values.items():
        lim = rec.limits.get(name)
        rows.append((
            rec.ts, eid, rec.asset_id, rec.sku, rec.part_id, rec.shift, name, value,
            lim.lsl if lim else None, lim.usl if lim else None, lim.target if lim else None,
        ))


def _notes(out: BatchResult, bundle: ModelBundle, recs: list[SpcRecord], X: np.ndarray,
           by_asset: dict[str, list[int]], streams: StreamStates) -> list[Explanation]:
    """Run-rule and unseen-context notes per record of ``recs`` (one bundle's records of this batch)."""
    notes: list[Explanation] = [[] for _ in recs]
    for asset, idx in by_asset.items():
        monitor = streams.rules(asset, bundle)
        if monitor is None:
            continue
        for i, row in zip(idx, rule_notes(monitor, X[idx], bundle.feature_names), strict=True):
            notes[i] += row
            out.counts["rule_violations"] += len(row)
    coverage = streams.coverage(bundle)
    if coverage is not None:
        for i, row in enumerate(unseen_notes(coverage, context_columns(recs))):
            if row:
                notes[i] += row
                out.counts["unseen_context"] += 1
    return notes


def _add_scores(out: BatchResult, bundle: ModelBundle, events: Sequence[EventRef], r: BundleScores,
                scored_at: datetime, notes: list[Explanation], classes: list[Defect | None] | None) -> None:
    expl: list[Explanation] | None = (explanation(r.contributions, r.feature_names) if r.contributions is not None
                                      else None)
    if any(notes):
        expl = [e + n for e, n in zip(expl or [[] for _ in notes], notes, strict=True)]
    out.add_scores(Modality.SPC, bundle, events, raw=r.raw, tail=r.tail_probability, calibrated=r.calibrated,
                   is_anomaly=r.is_anomaly, ready=True, explanations=expl, scored_at=scored_at, defects=classes)
