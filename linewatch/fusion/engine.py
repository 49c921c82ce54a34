"""The fusion engine: decoded scores in, alert lifecycle events and suppressed windows out.

Pure and deterministic: the live fusion agent, replay and the benchmarks feed it the same
:class:`~linewatch.schemas.messages.Score` objects and get the same alerts. Per asset it groups
scores into units (:mod:`.units`), fuses each unit's modalities into one tail probability
(:mod:`.combine`), applies the suppressions (declared maintenance windows, idle or changeover
machine states, inputs the data-quality gate rejected), and runs the alert lifecycle
(:mod:`.lifecycle`).

The fused score is calibrated by construction (each input is a calibrated tail probability and
the combination is a valid test), not by a fitted map: a unit counts as anomalous when its fused
tail probability is at most ``10**-threshold``; ``linewatch bench fusion`` and the tests measure the
realised rate on simulated normal plants.
"""

from __future__ import annotations

import bisect
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from linewatch.fusion.combine import calibrated_score, fisher_brown, modality_shares
from linewatch.fusion.lifecycle import AssetLifecycle, Contributor, LifecycleConfig, OpenAlert, Transition, Verdict
from linewatch.fusion.units import MODALITIES, QUALITY_PREFIXES, AssetUnits, Unit
from linewatch.schemas.messages import Alert, Contribution, Score, ScoreRef
from linewatch.schemas.rows import AlertSuppressionRow

#: Machine states in which no alert opens (the machine is not making parts the normal way).
DEFAULT_SUPPRESS_STATES = frozenset({"idle", "changeover", "setup", "maintenance"})
#: Score keys remembered for de-duplicating redelivered scores (the topic is at-least-once).
DEDUP_KEPT = 200_000
#: Contributors an alert names.
MAX_CONTRIBUTORS = 10
#: Machine-state changes remembered per asset.
STATES_KEPT = 1000


@dataclass(frozen=True)
class FusionConfig:
    """How scores become alerts; every field is a ``LINEWATCH_FUSION_*`` setting (see the README)."""

    #: Fused calibrated score (``-log10`` of the fused tail probability) at which a unit is anomalous.
    threshold: float = 3.5
    #: Correlation assumed between modalities' normal scores (Brown's correction; 0 = Fisher).
    dependence: float = 0.1
    #: Event-time seconds a part waits for its slower modalities before it is decided without them.
    lateness_s: float = 300.0
    #: A part's context is the asset's part-less evidence (signals) at most this old at the part's time.
    context_s: float = 60.0
    suppress_states: frozenset[str] = DEFAULT_SUPPRESS_STATES
    #: Event-time seconds after a machine leaves a suppressing state during which nothing counts yet:
    #: detectors with memory (lagged signals models, charts) still carry the idle rows for a few frames.
    resume_grace_s: float = 30.0
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)


@dataclass
class AlertEvent:
    """One lifecycle event as the message and the row (both from the same values)."""

    message: Alert

    @property
    def key(self) -> bytes:
        return self.message.asset_id.encode()

    def value(self) -> bytes:
        return self.message.model_dump_json().encode()

    def row(self) -> tuple:
        a = self.message
        return (a.ts, a.alert_id, a.state.value, a.asset_id, a.severity.value, a.opened_at, a.score,
                [m.value for m in a.modalities], json.dumps([c.model_dump(exclude_none=True) for c in a.contributors]),
                a.event_ids, a.shadow, a.kind.value, a.route.value, a.p_value,
                json.dumps([r.model_dump(mode="json") for r in a.scores]), a.model_versions, a.actor, a.note,
                a.defect_class, a.defect_route.value if a.defect_route is not None else None)


@dataclass
class FusionOutput:
    alerts: list[AlertEvent] = field(default_factory=list)
    #: Units that would have counted toward an alert but were suppressed (``alert_suppressions`` rows).
    suppressed: list[AlertSuppressionRow] = field(default_factory=list)
    #: Every unit decided (for metrics, tests and replay), in decision order.
    verdicts: list[Verdict] = field(default_factory=list)
    duplicates: int = 0

    def extend(self, other: FusionOutput) -> None:
        self.alerts += other.alerts
        self.suppressed += other.suppressed
        self.verdicts += other.verdicts
        self.duplicates += other.duplicates


class FusionEngine:
    """Per-asset fusion state for one world: the champions' (``shadow=False``) or the challengers'."""

    def __init__(self, config: FusionConfig | None = None, *, shadow: bool = False) -> None:
        self.config = config or FusionConfig()
        self.shadow = shadow
        self._units: dict[str, AssetUnits] = {}
        self._life: dict[str, AssetLifecycle] = {}
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._states: dict[str, tuple[list[datetime], list[str]]] = {}
        self._maintenance: list[tuple[str, datetime, datetime, str]] = []

    # -- context -------------------------------------------------------------------------------
    def set_machine_state(self, asset_id: str, ts: datetime, state: str) -> None:
        """Record that ``asset_id`` is in ``state`` from ``ts`` (a change; repeating the current state is a no-op)."""
        times, states = self._states.setdefault(asset_id, ([], []))
        i = bisect.bisect_right(times, ts)
        if i > 0 and states[i - 1] == state and (i == len(times) or states[i] == state):
            return
        if i > 0 and times[i - 1] == ts:
            states[i - 1] = state
            return
        times.insert(i, ts)
        states.insert(i, state)
        if len(times) > STATES_KEPT:
            del times[0], states[0]

    def set_maintenance(self, windows: Sequence[tuple[str, datetime, datetime, str]]) -> None:
        """Declared maintenance windows ``(asset or '*', start, end, reason)``; replaces the previous list."""
        self._maintenance = list(windows)

    def machine_state_at(self, asset_id: str, ts: datetime) -> str | None:
        held = self._states.get(asset_id)
        if not held:
            return None
        i = bisect.bisect_right(held[0], ts) - 1
        return held[1][i] if i >= 0 else None

    def _resuming(self, asset_id: str, ts: datetime) -> str | None:
        """The suppressing state the asset left less than ``resume_grace_s`` before ``ts``, if it did."""
        held = self._states.get(asset_id)
        if not held:
            return None
        times, states = held
        i = bisect.bisect_right(times, ts) - 1
        if i < 1 or states[i] in self.config.suppress_states:
            return None
        j = i - 1
        if states[j] in self.config.suppress_states and ts - times[i] < timedelta(seconds=self.config.resume_grace_s):
            return states[j]
        return None

    # -- scores in, alerts out ------------------------------------------------------------------
    def ingest(self, scores: Iterable[Score]) -> FusionOutput:
        out = FusionOutput()
        touched: list[str] = []
        for s in scores:
            key = (str(s.event_id), s.detector, s.model_version)
            if key in self._seen:
                out.duplicates += 1
                continue
            self._seen[key] = None
            if len(self._seen) > DEDUP_KEPT:
                self._seen.popitem(last=False)
            units = self._units.get(s.asset_id)
            if units is None:
                units = self._units[s.asset_id] = AssetUnits(
                    s.asset_id, lateness=timedelta(seconds=self.config.lateness_s),
                    context=timedelta(seconds=self.config.context_s))
                touched.append(s.asset_id)
            elif s.asset_id not in touched:
                touched.append(s.asset_id)
            if s.machine_state:
                self.set_machine_state(s.asset_id, s.ts, s.machine_state)
            units.add(s)
        for asset in touched:
            self._decide(self._units[asset].release(), out)
        return out

    def flush(self) -> FusionOutput:
        """Decide every pending unit (end of a replay or a test): nothing is left waiting for late scores."""
        out = FusionOutput()
        for units in self._units.values():
            self._decide(units.release(flush=True), out)
        return out

    def _decide(self, units: list[Unit], out: FusionOutput) -> None:
        if not units:
            return
        rows = np.array([u.p_row() for u in units], dtype=np.float64)
        fused = fisher_brown(rows, rho=self.config.dependence)
        shares = modality_shares(rows)
        for u, p, w in zip(units, fused.tolist(), shares, strict=True):
            score = calibrated_score(p)
            v = Verdict(unit=u, p_value=p, score=score, anomalous=score >= self.config.threshold,
                        contributors=_contributors(u, w),
                        flagged_modalities=tuple(sorted({e.modality for e in u.events.values() if e.flagged})))
            self._suppress(v)
            out.verdicts.append(v)
            if v.anomalous and v.suppressed:
                out.suppressed.append(AlertSuppressionRow(
                    ts=u.ts, asset_id=u.asset_id, reason=v.suppressed, detail=v.suppressed_detail, score=score,
                    shadow=self.shadow, contributors=json.dumps([_contribution(c, 1.0).model_dump(exclude_none=True)
                                                                 for c in v.contributors[:MAX_CONTRIBUTORS]])))
            life = self._life.get(u.asset_id)
            if life is None:
                life = self._life[u.asset_id] = AssetLifecycle(u.asset_id, self.config.lifecycle, shadow=self.shadow)
            out.alerts += [self._event(t) for t in life.observe(v)]

    def _suppress(self, v: Verdict) -> None:
        u = v.unit
        for asset, start, end, reason in self._maintenance:
            if asset in (u.asset_id, "*") and start <= u.ts < end:
                v.suppressed, v.suppressed_detail = "maintenance", reason or "declared maintenance window"
                return
        state = next((e.machine_state for e in u.events.values() if e.machine_state), None)
        state = state or self.machine_state_at(u.asset_id, u.ts)
        if state is not None and state in self.config.suppress_states:
            v.suppressed, v.suppressed_detail = "machine_state", state
            return
        left = self._resuming(u.asset_id, u.ts)
        if left is not None:
            v.suppressed, v.suppressed_detail = "machine_state", f"resuming after {left}"
            return
        problem = next((e.quality_problem for e in u.events.values() if e.quality_problem), None)
        if problem is not None:
            v.suppressed, v.suppressed_detail = "data_quality", problem

    def _event(self, t: Transition) -> AlertEvent:
        a, v = t.alert, t.verdict
        ranked = a.ranked()[:MAX_CONTRIBUTORS]
        total = sum(c.weight for c in ranked) or 1.0
        contributors = [_contribution(c, c.weight / total) for c in ranked]
        route = "maintenance" if ranked and ranked[0].modality == "signals" else "quality"
        refs = [ScoreRef.model_validate(r) for r in a.score_refs]
        defect_class, defect_route = a.defect()
        message = Alert(
            alert_id=a.alert_id, state=t.state, asset_id=v.unit.asset_id, severity=a.severity, route=route,
            ts=v.unit.ts, opened_at=a.opened_at, score=v.score, p_value=v.p_value,
            modalities=sorted(a.modalities, key=MODALITIES.index), contributors=contributors,
            event_ids=[uuid.UUID(e) for e in a.event_ids], scores=refs, model_versions=sorted(a.model_versions),
            shadow=self.shadow, note=t.note, defect_class=defect_class, defect_route=defect_route)
        return AlertEvent(message)

    # -- state from outside ---------------------------------------------------------------------
    def restore(self, asset_id: str, alert: OpenAlert) -> None:
        life = self._life.get(asset_id)
        if life is None:
            life = self._life[asset_id] = AssetLifecycle(asset_id, self.config.lifecycle, shadow=self.shadow)
        life.restore(alert)

    def acknowledge(self, alert_id: uuid.UUID) -> None:
        """Someone acknowledged ``alert_id`` (a no-op when this engine does not hold it open)."""
        for life in self._life.values():
            life.acknowledge(alert_id)

    def closed_by_hand(self, alert_id: uuid.UUID, ts: datetime) -> None:
        """Someone closed ``alert_id`` at ``ts`` (a no-op when this engine does not hold it open)."""
        for life in self._life.values():
            life.closed_by_hand(alert_id, ts)

    def open_alerts(self) -> dict[str, OpenAlert]:
        return {a: life.alert for a, life in self._life.items() if life.alert is not None}


def _contributors(u: Unit, weights: np.ndarray) -> list[Contributor]:
    """The unit's causes: each modality's weight in the fused statistic spread over its best score's explanation."""
    out: list[Contributor] = []
    for ev in u.evidence():
        if ev.modality not in MODALITIES:
            continue
        w = float(weights[MODALITIES.index(ev.modality)])
        best = ev.best
        if best is None or w <= 0:
            continue
        entries = [c for c in best.explanation
                   if c.kind != "unseen_context" and not c.name.startswith(QUALITY_PREFIXES)]
        scored = [c for c in entries if c.share > 0]
        if not scored:
            out.append(Contributor(ev.modality, best.detector, "feature", None, w, best.calibrated_score))
        for c in scored:
            out.append(Contributor(ev.modality, c.name, c.kind, c.detail, w * c.share, c.value))
        for c in entries:
            if c.kind == "rule":
                out.append(Contributor(ev.modality, c.name, "rule", c.detail, 0.0, c.value))
    return sorted(out, key=lambda c: -c.weight)


def _contribution(c: Contributor, share: float) -> Contribution:
    return Contribution(name=c.name, value=float(np.clip(c.value, -1e300, 1e300)),
                        share=float(min(max(share, 0.0), 1.0)), kind=c.kind,  # type: ignore[arg-type]
                        detail=c.detail[:200] if c.detail else None, modality=c.modality)  # type: ignore[arg-type]
