"""Fusion on raw ``scores``, ``shadow_scores`` and ``machine_states`` messages: the fusion agent's work but I/O.

The live fusion agent (:mod:`linewatch.streams.fusion_agent`) and ``linewatch replay`` both run this
class, so a replay of history decides units, opens and closes alerts and raises retrain
recommendations with exactly the worker's code; the agent adds only what it reads back from the
database (maintenance windows, hand-made acknowledgements and closes, open alerts to resume).

Two engines run side by side: the champions' (``scores``), whose alerts are published and
routed, and the challengers' (``shadow_scores``), which sees the shadow versions' scores in place
of their champions' (and, on assets that have a challenger, the champions' of every other
detector) and whose alerts are stored with ``shadow = true`` and never published on ``alerts``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from linewatch.detectors.drift_tracker import DriftTracker, retrain_alert
from linewatch.fusion.engine import AlertEvent, FusionConfig, FusionEngine, FusionOutput
from linewatch.schemas.drift_rows import DriftRow
from linewatch.schemas.messages import MachineState, Score
from linewatch.schemas.rows import AlertRow, AlertSuppressionRow, MachineStateRow
from linewatch.schemas.topics import ALERTS, MACHINE_STATES, SCORES, SHADOW_SCORES
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage


class FusionStage:
    """Both engines, which detectors have a challenger, and score drift per model version and asset."""

    def __init__(self, config: FusionConfig, *, keep_verdicts: bool = False) -> None:
        self.config = config
        self.champion = FusionEngine(config)
        self.shadow = FusionEngine(config, shadow=True)
        #: (asset, modality, detector) that have a challenger: the shadow engine takes the challenger's score.
        self._challenged: set[tuple[str, str, str]] = set()
        #: Score drift per model version and asset (both worlds); retrain recommendations become alerts.
        self.drift = DriftTracker()
        self._shadow_versions: set[str] = set()
        #: The champions' unit decisions, when kept (a replay's fused score timeline): (asset, ts, score, alarm).
        self.verdicts: list[tuple[str, datetime, float, bool]] | None = [] if keep_verdicts else None

    @property
    def engines(self) -> tuple[FusionEngine, FusionEngine]:
        return self.champion, self.shadow

    def set_maintenance(self, windows: Sequence[tuple[str, datetime, datetime, str]]) -> None:
        for engine in self.engines:
            engine.set_maintenance(windows)

    def set_promises(self, promises: Mapping[str, float]) -> None:
        """Promised false-alarm rates by model version (what score drift is measured against)."""
        self.drift.set_promises(promises)

    def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        """One batch of raw messages (any mix of the three topics, in arrival order) -> rows and ``alerts`` messages."""
        out = BatchResult()
        by_topic: dict[str, list[RawMessage]] = {}
        for m in messages:
            by_topic.setdefault(m.topic, []).append(m)
        for _msg, state in out.decode(by_topic.get(MACHINE_STATES.name, []), MachineState):
            for engine in self.engines:
                engine.set_machine_state(state.asset_id, state.ts, state.state)
            out.tables[MachineStateRow].append((state.ts, state.asset_id, state.state, state.reason))
        champion = [s for _, s in out.decode(by_topic.get(SCORES.name, []), Score)]
        shadow = [s for _, s in out.decode(by_topic.get(SHADOW_SCORES.name, []), Score)]
        self._challenged.update((s.asset_id, s.modality.value, s.detector) for s in shadow)
        self._emit(self.champion.ingest(champion), out, publish=True)
        # Only assets with a challenger have a shadow world; there it is the champions' minus the challenged.
        assets = {a for a, _, _ in self._challenged}
        mirrored = [s for s in champion if s.asset_id in assets
                    and (s.asset_id, s.modality.value, s.detector) not in self._challenged]
        self._emit(self.shadow.ingest([*mirrored, *shadow]), out, publish=False)
        self._drift([*champion, *shadow], out)
        out.counts["scores"] += len(champion)
        out.counts["shadow_scores"] += len(shadow)
        return out

    def flush(self) -> BatchResult:
        """Decide every pending unit of both engines (the end of a replay): nothing waits for late scores."""
        out = BatchResult()
        self._emit(self.champion.flush(), out, publish=True)
        self._emit(self.shadow.flush(), out, publish=False)
        return out

    def _emit(self, result: FusionOutput, out: BatchResult, *, publish: bool) -> None:
        for event in result.alerts:
            out.tables[AlertRow].append(event.row())
            if publish:
                out.messages[ALERTS.name].append((event.key, event.value(), []))
            out.counts[f"{'shadow_' if not publish else ''}alerts_{event.message.state.value}"] += 1
        out.tables[AlertSuppressionRow] += [s.as_tuple() for s in result.suppressed]
        out.counts["suppressed" if publish else "shadow_suppressed"] += len(result.suppressed)
        out.counts["units" if publish else "shadow_units"] += len(result.verdicts)
        if publish and self.verdicts is not None:
            self.verdicts += [(v.unit.asset_id, v.unit.ts, v.score, v.anomalous and not v.suppressed)
                              for v in result.verdicts]

    def _drift(self, scores: list[Score], out: BatchResult) -> None:
        """Score drift rows, and a ``retrain_recommended`` alert (route ``ml``) when a champion's baseline moved.

        A shadow version's drift is stored (it is part of comparing it) but raises no alert: nobody runs it yet.
        """
        self._shadow_versions.update(s.model_version for s in scores if s.shadow)
        update = self.drift.observe(scores)
        out.tables[DriftRow] += [r.as_tuple() for r in update.rows]
        for rec in update.recommendations:
            if rec.model_version in self._shadow_versions:
                continue
            event = AlertEvent(retrain_alert(rec))
            out.tables[AlertRow].append(event.row())
            out.messages[ALERTS.name].append((event.key, event.value(), []))
            out.counts["retrain_recommended"] += 1
        out.counts["drift_rows"] += len(update.rows)
