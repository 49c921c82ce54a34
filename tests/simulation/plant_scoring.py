"""Score a simulated plant with its trained bundles as the agents would, without a broker, and tabulate.

SPC parts go through each bundle per asset (stateful charts carry one copy per asset, as the SPC
agent does); signal windows and frames go through the agents' own batch functions
(``score_signals_batch``, ``score_frames_batch``) as raw messages. The table says, per fault
episode and modality, what share of the episode's events the detector flags and their median
tail probability, next to the same on the normal events: whether fusion has something to fuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from linewatch.detectors.bundle import ModelBundle
from linewatch.plant_models import PlantModels
from linewatch.schemas.codec import encode_signal
from linewatch.schemas.ids import event_id
from linewatch.schemas.messages import Score
from linewatch.signals.framing import BearingEnvelope
from linewatch.simulation.plant import PlantSimulation
from linewatch.streams.frames_pipeline import score_frames_batch
from linewatch.streams.messages import RawMessage
from linewatch.streams.signals_pipeline import SignalsState, score_signals_batch

#: Raw messages per batch handed to the agents' batch functions (what a consumer poll brings).
BATCH = 300


class _Models:
    """A model source that gives every asset the plant's bundles of the asked modality."""

    def __init__(self, bundles: list[ModelBundle]) -> None:
        self.bundles = bundles

    def models_for(self, modality: str, asset: str, sku: str, camera: str = "*") -> list[ModelBundle]:
        return [b for b in self.bundles if b.modality == modality and b.scope.sku in ("*", sku)]


@dataclass(frozen=True)
class EventScore:
    """One detector's verdict on one event, reduced to what the table needs."""

    event_id: object
    modality: str
    detector: str
    asset_id: str
    tail: float
    anomaly: bool
    top: str | None
    ts: datetime


def event_score(s: Score) -> EventScore:
    top = next((c.name for c in s.explanation if c.kind == "feature"), None)
    return EventScore(s.event_id, s.modality.value, s.detector, s.asset_id, s.tail_probability, s.is_anomaly,
                      top, s.ts)


def score_plant(sim: PlantSimulation, models: PlantModels) -> list[EventScore]:
    """Every event's score from every plant model."""
    out: list[EventScore] = []
    p = sim.parts
    for bundle in models.spc.values():
        for asset in sim.config.assets:
            idx = np.flatnonzero(p.asset == asset)
            res = bundle.score_stream(p.X[idx], bundle.new_stream()) if bundle.stateful else bundle.score(p.X[idx])
            tops = res.top_features()
            for j, i in enumerate(idx):
                eid = event_id("spc", asset, str(p.part_id[i]), sim._ts(p.t[i]).isoformat())
                out.append(EventScore(eid, "spc", bundle.detector_name, asset, float(res.tail_probability[j]),
                                      bool(res.is_anomaly[j]), tops[j], sim._ts(p.t[i])))
    raw = [RawMessage("signals", 0, k, m.asset_id.encode(), encode_signal(m, s)) for k, (m, s) in
           enumerate(sim.signal_messages())]
    state = SignalsState(envelope=BearingEnvelope())
    source = _Models([models.signals] if models.signals else [])
    for lo in range(0, len(raw), BATCH):
        res = score_signals_batch(raw[lo : lo + BATCH], source, state)
        out += [event_score(Score.model_validate_json(v)) for _, v, *_ in res.score_messages]
    frames = [RawMessage("frames", 0, k, None, v) for k, (t, _, v, _) in enumerate(sim.messages(encoding="raw"))
              if t == "frames"]
    source = _Models(list(models.frames.values()))
    for lo in range(0, len(frames), BATCH):
        res = score_frames_batch(frames[lo : lo + BATCH], source)
        out += [event_score(Score.model_validate_json(v)) for _, v, *_ in res.score_messages]
    return out


@dataclass(frozen=True)
class Row:
    """Visibility of one fault (or ``normal``) to one modality's detector."""

    fault: str
    asset: str
    modality: str
    detector: str
    n: int
    share_flagged: float
    median_tail: float
    share_top_right: float | None  # episodes only: top contributor is a culprit

    def line(self) -> str:
        right = "" if self.share_top_right is None else f"{self.share_top_right:6.0%}"
        return (f"{self.fault:16s} {self.asset:7s} {self.modality:8s} {self.detector:19s} {self.n:5d} "
                f"{self.share_flagged:7.1%} {self.median_tail:10.2e} {right}")


def visibility_table(sim: PlantSimulation, scores: list[EventScore]) -> list[Row]:
    """Per episode and modality/detector: events flagged and median tail; then normal and idle events.

    An episode's events are its asset's events between its start and end, in every modality (those
    it does not claim show whether it leaks into them); a claimed modality counts from its onset
    (a bearing reaches the parts later), and its events before that are left out.
    """
    groups: dict[tuple, list[EventScore]] = {}
    for s in scores:
        if sim.state_at(s.asset_id, s.ts) != "running":
            key: tuple = ("idle", s.asset_id, s.modality, s.detector, None)
        else:
            k = next((k for k, ep in enumerate(sim.episodes)
                      if ep.asset_id == s.asset_id and ep.start <= s.ts < ep.end), None)
            if k is None:
                key = ("normal", "*", s.modality, s.detector, None)
            elif s.ts < sim.episodes[k].onsets.get(s.modality, sim.episodes[k].start):
                continue
            else:
                key = (sim.episodes[k].kind, s.asset_id, s.modality, s.detector, k)
        groups.setdefault(key, []).append(s)
    rows = []
    for (fault, asset, modality, det, k), ss in sorted(groups.items(), key=lambda kv: (kv[0][4] is None,
                                                                                       str(kv[0]))):
        right = None
        if k is not None and modality in sim.episodes[k].culprits:
            names = sim.episodes[k].culprits[modality]
            right = float(np.mean([bool(s.top) and any(str(s.top).startswith(c) for c in names) for s in ss]))
        rows.append(Row(fault, asset, modality, det, len(ss), float(np.mean([s.anomaly for s in ss])),
                        float(np.median([s.tail for s in ss])), right))
    return rows


def plant_score_messages(sim: PlantSimulation, models: PlantModels) -> list[Score]:
    """Every score the live agents would publish for ``sim``, through their own batch functions, in event time.

    What the fusion agent would receive, without a broker: SPC through ``score_spc_batch`` (each
    asset's chart memory kept across batches), signals and frames as in :func:`score_plant`.
    """
    from linewatch.storage.model_registry import ModelCache
    from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch

    cache = ModelCache(database_url=None, modalities=("spc", "signals", "frames"))
    for b in models.bundles():
        cache.add(b)
    raw = [RawMessage(topic, 0, k, key, value) for k, (topic, key, value, _) in
           enumerate(sim.messages(encoding="raw"))]
    streams, state = StreamStates(), SignalsState(envelope=BearingEnvelope())
    out: list[Score] = []
    for topic in ("spc", "signals", "frames"):
        mine = [m for m in raw if m.topic == topic]
        for lo in range(0, len(mine), BATCH):
            chunk = mine[lo : lo + BATCH]
            if topic == "spc":
                res = score_spc_batch(chunk, cache, streams)
            elif topic == "signals":
                res = score_signals_batch(chunk, cache, state)
            else:
                res = score_frames_batch(chunk, cache)
            out += [Score.model_validate_json(v) for _, v, *_ in res.score_messages]
    return sorted(out, key=lambda s: s.ts)
