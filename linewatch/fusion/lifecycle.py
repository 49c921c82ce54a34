"""One alert per asset and problem: hysteresis, de-duplication, cool-down, severity, minimum duration.

Each stream of an asset (its parts; its part-less signals frames) delivers unit verdicts in
event-time order. The asset's alert:

- **opens** when ``open_k`` of a stream's last ``open_n`` units are anomalous (fused score at or
  above the fusion threshold, not suppressed): one unusual part is not an incident, two in three
  are;
- **de-duplicates**: while it is open, every further anomalous unit of *any* stream of the asset
  joins it (its contributors, scores and events accumulate) instead of opening another: a
  bearing fault that shows in vibration and later in the dimensions is one incident;
- **updates** when its severity rises, a new modality joins, its top contributor changes, or
  ``update_every_s`` of event time has passed since the last message while it is still anomalous
  (acknowledged alerts update on severity only: the people on it already know);
- **closes** after ``close_quiet`` consecutive quiet units on every stream (a stream with no unit
  for ``stale_s`` counts as quiet), and never before ``min_open_s`` after it opened;
- **cool-down**: evidence within ``cooldown_s`` after a close re-opens the *same* alert id, so a
  problem that flaps is still one incident (its rows show open, close, open ...).

Severity is ``warning``, or ``critical`` when a unit's fused score reaches ``critical_score`` or two
modalities of one unit flag it on their own detectors; it never drops within an alert.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from linewatch.fusion.units import Unit
from linewatch.schemas.ids import event_id as deterministic_id
from linewatch.schemas.messages import NOT_A_DEFECT

#: Event ids and score links an alert keeps (the message schema's bounds).
MAX_EVENT_IDS = 1000
MAX_SCORE_REFS = 200


@dataclass(frozen=True)
class LifecycleConfig:
    open_k: int = 3
    open_n: int = 5
    close_quiet: int = 5
    min_open_s: float = 0.0
    cooldown_s: float = 900.0
    update_every_s: float = 600.0
    stale_s: float = 600.0
    critical_score: float = 6.0


@dataclass
class Contributor:
    """One cause, accumulated over an alert's anomalous units (weights are unit score x share)."""

    modality: str
    name: str
    kind: str
    detail: str | None
    weight: float = 0.0
    value: float = 0.0

    @property
    def key(self) -> tuple[str, str, str]:
        """What contributions accumulate under: image regions of one camera are one cause, wherever the box fell."""
        return self.modality, self.kind, "region" if self.name.startswith("region ") else self.name


@dataclass
class Verdict:
    """Fusion's decision on one unit."""

    unit: Unit
    p_value: float
    score: float
    anomalous: bool
    #: ``maintenance``, ``machine_state`` or ``data_quality`` when the unit may not count as evidence.
    suppressed: str | None = None
    suppressed_detail: str = ""
    contributors: list[Contributor] = field(default_factory=list)
    #: Modalities whose own detectors flagged this unit.
    flagged_modalities: tuple[str, ...] = ()

    @property
    def counts(self) -> bool:
        return self.anomalous and self.suppressed is None


@dataclass
class OpenAlert:
    alert_id: uuid.UUID
    opened_at: datetime
    severity: str = "warning"
    modalities: set[str] = field(default_factory=set)
    contributors: dict[tuple[str, str, str], Contributor] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)
    score_refs: list[dict] = field(default_factory=list)
    model_versions: set[str] = field(default_factory=set)
    last_message_ts: datetime | None = None
    acknowledged: bool = False
    top: tuple[str, str, str] | None = None
    #: Recognised defect class -> (summed classifier confidence over the alert's scores, its route).
    defects: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    _seen_events: set[str] = field(default_factory=set, repr=False)

    def absorb(self, v: Verdict, critical_score: float) -> bool:
        """Add ``v``'s evidence; True when the severity rose."""
        before = self.severity
        if v.score >= critical_score or len(v.flagged_modalities) >= 2:
            self.severity = "critical"
        for c in v.contributors:
            held = self.contributors.get(c.key)
            if held is None:
                held = self.contributors[c.key] = Contributor(c.modality, c.name, c.kind, c.detail)
            held.weight += v.score * c.weight
            if c.value >= held.value:  # an image region is named by its strongest box so far
                held.value, held.name = c.value, c.name
        for ev in v.unit.evidence():
            if ev.p is not None and ev.p < 1.0:
                self.modalities.add(ev.modality)
            if ev.event_id not in self._seen_events and len(self.event_ids) < MAX_EVENT_IDS:
                self.event_ids.append(ev.event_id)
                self._seen_events.add(ev.event_id)
            for s in sorted(ev.scores, key=lambda s: (s.detector, s.model_version)):
                self.model_versions.add(s.model_version)
                d = s.defect
                if d is not None and d.defect_class not in NOT_A_DEFECT:
                    held_confidence = self.defects.get(d.defect_class, (0.0, None))[0]
                    self.defects[d.defect_class] = (held_confidence + d.confidence, d.route)
                if len(self.score_refs) < MAX_SCORE_REFS:
                    self.score_refs.append({"ts": s.ts, "event_id": s.event_id, "detector": s.detector,
                                            "model_version": s.model_version, "modality": s.modality.value,
                                            "calibrated_score": s.calibrated_score})
        return self.severity != before

    def defect(self) -> tuple[str | None, str | None]:
        """The recognised class with the most confidence summed over the alert's scores, and its route."""
        if not self.defects:
            return None, None
        name = max(self.defects, key=lambda c: (self.defects[c][0], c))
        return name, self.defects[name][1]

    def ranked(self) -> list[Contributor]:
        return sorted(self.contributors.values(), key=lambda c: (-c.weight, c.modality, c.name))


@dataclass
class Transition:
    """A lifecycle event to publish and store."""

    state: str  # open | update | close
    alert: OpenAlert
    verdict: Verdict
    note: str


@dataclass
class _Stream:
    recent: deque[Verdict]
    quiet_run: int = 0
    last_ts: datetime | None = None


class AssetLifecycle:
    """The alert state of one asset (one per asset, per champion or shadow engine)."""

    def __init__(self, asset_id: str, config: LifecycleConfig, *, shadow: bool) -> None:
        self.asset_id = asset_id
        self.config = config
        self.shadow = shadow
        self.streams: dict[str, _Stream] = {}
        self.alert: OpenAlert | None = None
        self._closed: tuple[OpenAlert, datetime] | None = None

    def _stream(self, name: str) -> _Stream:
        st = self.streams.get(name)
        if st is None:
            st = self.streams[name] = _Stream(recent=deque(maxlen=self.config.open_n))
        return st

    def observe(self, v: Verdict) -> list[Transition]:
        cfg = self.config
        st = self._stream(v.unit.stream)
        st.recent.append(v)
        st.last_ts = v.unit.ts
        st.quiet_run = 0 if v.counts else st.quiet_run + 1
        ts = v.unit.ts
        if self.alert is None:
            evidence = [u for u in st.recent if u.counts]
            if len(evidence) < cfg.open_k:
                return []
            return [self._open(evidence, ts)]
        alert = self.alert
        if v.counts:
            top_before, modalities_before = alert.top, set(alert.modalities)
            rose = alert.absorb(v, cfg.critical_score)
            ranked = alert.ranked()
            alert.top = ranked[0].key if ranked else None
            due = alert.last_message_ts is None or ts - alert.last_message_ts >= timedelta(seconds=cfg.update_every_s)
            changed = alert.top != top_before or alert.modalities != modalities_before
            if rose or (not alert.acknowledged and (changed or due)):
                alert.last_message_ts = ts
                why = ("severity rose to critical" if rose else "new contributors" if changed
                       else "still anomalous")
                return [Transition("update", alert, v, why)]
            return []
        if self._all_quiet(ts) and ts - alert.opened_at >= timedelta(seconds=cfg.min_open_s):
            self.alert = None
            self._closed = (alert, ts)
            alert.last_message_ts = ts
            return [Transition("close", alert, v, f"quiet for {cfg.close_quiet} units on every stream")]
        return []

    def _all_quiet(self, ts: datetime) -> bool:
        stale = timedelta(seconds=self.config.stale_s)
        return all(st.quiet_run >= self.config.close_quiet or (st.last_ts is not None and ts - st.last_ts >= stale)
                   for st in self.streams.values())

    def _open(self, evidence: list[Verdict], ts: datetime) -> Transition:
        cfg = self.config
        closed = self._closed
        if closed is not None and ts - closed[1] <= timedelta(seconds=cfg.cooldown_s):
            alert, note = closed[0], "re-opened within the cool-down after its close"
        else:
            first = evidence[0].unit.ts
            alert = OpenAlert(alert_id=deterministic_id("alert", self.asset_id, "shadow" if self.shadow else "live",
                                                        first.isoformat()),
                              opened_at=first)
            note = f"{len(evidence)} of the last {cfg.open_n} {evidence[-1].unit.stream} units anomalous"
        self._closed = None
        for v in evidence:
            alert.absorb(v, cfg.critical_score)
        ranked = alert.ranked()
        alert.top = ranked[0].key if ranked else None
        alert.last_message_ts = ts
        self.alert = alert
        return Transition("open", alert, evidence[-1], note)

    def restore(self, alert: OpenAlert) -> None:
        """Resume an alert that was open when the worker stopped (read back from the database)."""
        if self.alert is None:
            self.alert = alert

    def acknowledge(self, alert_id: uuid.UUID) -> None:
        if self.alert is not None and self.alert.alert_id == alert_id:
            self.alert.acknowledged = True

    def closed_by_hand(self, alert_id: uuid.UUID, ts: datetime) -> None:
        if self.alert is not None and self.alert.alert_id == alert_id:
            self._closed = (self.alert, ts)
            self.alert = None
