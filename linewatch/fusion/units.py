"""Which scores are tested together: one asset's scores grouped into units, released in event-time order.

A **unit** is what fusion decides on:

- a **part** (``stream="parts"``): every score that carries the part's id, whatever modality (its
  SPC record, its frame from the station that photographs it), plus as *context* the asset's
  part-less evidence at the time the part was made (the signals frame covering its timestamp,
  within ``context_s``): "per part id where modalities share one, per asset and time window";
- a **part-less event** (``stream`` = its modality, in practice ``signals``): one signals frame.

Scores of one part arrive from different agents at different times (an image takes longer than
an SPC record), so a part is held until every modality and detector the asset is known to send
for its parts has reported, and its signals context is known (every signals detector of the asset
has reached the part's time); past ``lateness_s`` of event time beyond the part it is released with what it
has, so a camera that stops sending cannot stall the asset. What an asset sends is learned from
what it has sent (the modalities and detectors of its recent events), not configured.

Units are released in event-time order across the asset's streams (nothing passes a unit that
still waits, and a part-less event waits until every detector of the asset's parts has reached its
time, so a part of an earlier instant cannot arrive after it), so hysteresis sees the asset's sequence
as it happened, whichever agent's scores arrived first; a detector whose scores have moved past a
part's time is not waited for.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from linewatch.fusion.combine import bonferroni_min
from linewatch.schemas.messages import Score

#: Stream name of units that are parts.
PARTS = "parts"
#: Modalities in the column order of a part unit's p-value row.
MODALITIES: tuple[str, ...] = ("spc", "frames", "signals")
#: Explanation names the signals quality gate writes (value and share 0): the input, not the process, is bad.
QUALITY_PREFIXES = ("data quality:", "unscored:")
#: Part-less events kept per asset for joining to parts as context.
CONTEXT_KEPT = 256
#: Pending parts per asset beyond which the oldest is released whatever it lacks (bounded memory).
MAX_PENDING = 5000


@dataclass
class Evidence:
    """One event's scores from one modality (all its detectors)."""

    event_id: str
    modality: str
    asset_id: str
    ts: datetime
    part_id: str | None
    scores: list[Score] = field(default_factory=list)
    _detectors: set[str] = field(default_factory=set, repr=False)
    _p: float | None = field(default=None, repr=False)
    _best: Score | None = field(default=None, repr=False)

    def append(self, score: Score) -> None:
        self.scores.append(score)
        self._detectors.add(score.detector)
        if score.ready and (self._best is None or score.tail_probability < self._best.tail_probability):
            self._best = score
        self._p = None

    @property
    def detectors(self) -> set[str]:
        return self._detectors

    @property
    def p(self) -> float | None:
        """Bonferroni-corrected minimum tail over the ready detectors; None while none is ready."""
        if self._best is None:
            return None
        if self._p is None:
            n = sum(1 for s in self.scores if s.ready)
            self._p = bonferroni_min(self._best.tail_probability, n)
        return self._p

    @property
    def best(self) -> Score | None:
        return self._best

    @property
    def machine_state(self) -> str | None:
        return next((s.machine_state for s in self.scores if s.machine_state), None)

    @property
    def quality_problem(self) -> str | None:
        """The data-quality gate's first note on this event, if it reported bad or missing inputs."""
        for s in self.scores:
            for c in s.explanation:
                if c.name.startswith(QUALITY_PREFIXES):
                    return c.name
        return None

    @property
    def flagged(self) -> bool:
        """A detector of this modality flagged the event on its own."""
        return any(s.is_anomaly for s in self.scores)


@dataclass
class Unit:
    """What one fusion decision is about: a part (with its context) or one part-less event."""

    asset_id: str
    stream: str
    ts: datetime
    part_id: str | None
    events: dict[str, Evidence]
    #: Part-less evidence joined to a part (the signals frame covering the part's time).
    context: Evidence | None = None

    def evidence(self) -> list[Evidence]:
        """The unit's evidence in a fixed order (modality, event id), whichever agent's scores came first."""
        events = sorted(self.events.values(), key=lambda e: (_COLUMN.get(e.modality, len(MODALITIES)), e.event_id))
        return [*events, *([self.context] if self.context is not None else [])]

    def p_row(self) -> list[float]:
        """The unit's p-value per modality in :data:`MODALITIES` order (NaN: no evidence from it)."""
        row = [math.nan, math.nan, math.nan]
        for e in self.evidence():
            p = e.p
            j = _COLUMN.get(e.modality)
            if p is not None and j is not None:
                row[j] = p if math.isnan(row[j]) else min(1.0, 2 * min(row[j], p))  # two of one modality: Bonferroni
        return row


_COLUMN = {m: j for j, m in enumerate(MODALITIES)}


_LAST_ID = "\U0010ffff"  # sorts after every event id: bisect_right to the end of an instant


def _ts(ev: Evidence) -> tuple[datetime, str]:
    """Context order: event time, then event id (two windows of one instant sort the same in live and replay)."""
    return ev.ts, ev.event_id


class AssetUnits:
    """One asset's pending scores, and the rules that release them as units."""

    def __init__(self, asset_id: str, *, lateness: timedelta, context: timedelta) -> None:
        self.asset_id = asset_id
        self.lateness = lateness
        self.context = context
        self.parts: dict[str, dict[str, Evidence]] = {}
        self.free: dict[str, Evidence] = {}
        #: modality -> detectors its most recent event carried, for parts and for part-less events.
        self.part_detectors: dict[str, frozenset[str]] = {}
        self.free_detectors: dict[str, frozenset[str]] = {}
        self.watermark: dict[str, datetime] = {}
        #: (modality, detector) -> the latest event time it scored on this asset.
        self.detector_watermark: dict[tuple[str, str], datetime] = {}
        #: modality -> its recent part-less events in event-time order (the context parts are joined to).
        self._context: dict[str, list[Evidence]] = {}

    def add(self, score: Score) -> None:
        m, ts = score.modality.value, score.ts
        if score.part_id is not None:
            ev = self.parts.setdefault(score.part_id, {}).get(m)
            if ev is None:
                ev = self.parts[score.part_id][m] = Evidence(str(score.event_id), m, self.asset_id, ts, score.part_id)
            ev.append(score)
            known = self.part_detectors.get(m, frozenset())
            if not known or ev.detectors > known:
                self.part_detectors[m] = frozenset(ev.detectors)
        else:
            key = str(score.event_id)
            ev = self.free.get(key)
            if ev is None:
                ev = self.free[key] = Evidence(key, m, self.asset_id, ts, None)
                self._remember_context(ev)
            ev.append(score)
            known = self.free_detectors.get(m, frozenset())
            if not known or ev.detectors > known:
                self.free_detectors[m] = frozenset(ev.detectors)
        if ts > self.watermark.get(m, ts - timedelta(seconds=1)):
            self.watermark[m] = ts
        key = (m, score.detector)
        if ts > self.detector_watermark.get(key, ts - timedelta(seconds=1)):
            self.detector_watermark[key] = ts

    def _remember_context(self, ev: Evidence) -> None:
        kept = self._context.setdefault(ev.modality, [])
        bisect.insort_right(kept, ev, key=_ts)
        if len(kept) > CONTEXT_KEPT:
            del kept[0]

    def _max_watermark(self) -> datetime | None:
        return max(self.watermark.values()) if self.watermark else None

    def _late(self, ts: datetime) -> bool:
        top = self._max_watermark()
        return top is not None and top >= ts + self.lateness

    def _part_ready(self, events: dict[str, Evidence], ts: datetime) -> bool:
        if self._late(ts):
            return True
        for m, detectors in self.part_detectors.items():
            ev = events.get(m)
            # One detector's scores of one asset arrive in event-time order (one agent, one partition,
            # one model's scores of a batch together): once that detector is past the part's time, its
            # score for the part is not coming. (A modality's detectors are not in step with each other:
            # a batch publishes one model's scores, then the next model's.)
            for d in detectors - (ev.detectors if ev is not None else set()):
                if self.detector_watermark.get((m, d), ts) <= ts:
                    return False
        # The context: every detector of every part-less modality must have reached the part's time. Not
        # the modality's newest score alone: a frame at the part's very instant, holding its first model's
        # score and not yet its second, would be joined half-scored (a replay delivers both together).
        return self._reached(self.free_detectors, ts)

    def _parts_reached(self, ts: datetime) -> bool:
        """Every detector the asset's parts carry has scored up to ``ts``: no part of that time is still to come.

        A part-less event waits for this, as a part waits for its context: otherwise a sensor window
        scored before the part of its instant (the worker's agents run side by side) would be decided
        first live and second in a replay, and an alert would open on another unit.
        """
        return self._reached(self.part_detectors, ts)

    def _reached(self, detectors_by_modality: dict[str, frozenset[str]], ts: datetime) -> bool:
        """Every one of these detectors has scored an event at or after ``ts`` (one never seen counts as there)."""
        return all(self.detector_watermark.get((m, d), ts) >= ts
                   for m, detectors in detectors_by_modality.items() for d in detectors)

    def _context_for(self, ts: datetime) -> Evidence | None:
        best: Evidence | None = None
        for _, kept in sorted(self._context.items()):  # ties go to one modality, whichever reported first
            i = bisect.bisect_right(kept, (ts, _LAST_ID), key=_ts) - 1
            if i < 0:
                continue
            ev = kept[i]
            if ts - ev.ts <= self.context and (best is None or (ev.p or 1.0) < (best.p or 1.0)):
                best = ev
        return best

    def release(self, *, flush: bool = False) -> list[Unit]:
        """Units that are complete (or late), in event-time order across the streams; ``flush`` releases everything.

        One time line: nothing is released while an earlier unit of the asset still waits, so the
        lifecycle sees the asset's units in the order they happened, whichever agent's scores came
        first, and a replay (which delivers the modalities together) decides exactly as the worker did.
        """
        pending: list[tuple[datetime, int, int, str]] = [(min(e.ts for e in ev.values()), 0, 0, pid)
                                                         for pid, ev in self.parts.items()]
        pending += [(ev.ts, 1, _COLUMN.get(ev.modality, len(MODALITIES)), key) for key, ev in self.free.items()]
        pending.sort()  # a total order: units of one instant leave in the same order however their scores arrived
        over = len(self.parts) - MAX_PENDING
        out: list[Unit] = []
        for ts, kind, _, key in pending:
            if kind == 0:
                events = self.parts[key]
                if not (flush or over > 0 or self._part_ready(events, ts)):
                    break
                over -= 1
                del self.parts[key]
                self._forget_missing(events)
                out.append(Unit(self.asset_id, PARTS, ts, key, dict(events), context=self._context_for(ts)))
            else:
                ev = self.free[key]
                complete = self.free_detectors.get(ev.modality, frozenset()) <= ev.detectors
                if not (flush or over > 0 or (complete and self._parts_reached(ev.ts)) or self._late(ev.ts)):
                    break
                del self.free[key]
                if not complete:  # released without a detector: stop waiting for it, as for parts
                    self.free_detectors[ev.modality] = frozenset(ev.detectors)
                out.append(Unit(self.asset_id, ev.modality, ev.ts, None, {ev.modality: ev}))
        return out

    def _forget_missing(self, events: dict[str, Evidence]) -> None:
        """A part released without a modality or detector it was waiting for: stop waiting for those.

        A camera that went away, or a detector whose model was retired, would otherwise hold every
        later part for ``lateness``; they are expected again as soon as they report.
        """
        for m in list(self.part_detectors):
            ev = events.get(m)
            if ev is None:
                del self.part_detectors[m]
            elif not self.part_detectors[m] <= ev.detectors:
                self.part_detectors[m] = frozenset(ev.detectors)

