"""Drift monitors for every (modality, detector, model version, asset) a runtime sees, and their hand-off.

The fusion runtime calls :meth:`DriftTracker.observe` with each batch of decoded
:class:`~linewatch.schemas.messages.Score` objects. The tracker routes every ready score to the
:class:`~linewatch.detectors.score_drift.ScoreDriftMonitor` of its model version and asset
(created on first sight, the least recently fed one evicted beyond ``max_monitors`` so memory is
bounded however many assets and versions come and go) and returns

- :class:`~linewatch.schemas.drift_rows.DriftRow` s for the ``drift`` table, one per report;
- :class:`RetrainRecommendation` s, one per drift episode (the report where the drift first counts
  as sustained), which :func:`retrain_alert` turns into an ``Alert`` of kind
  ``retrain_recommended``, route ``ml``. Nothing here touches a threshold.

The promised false-alarm rate of a version comes from ``promises`` (``model_version -> (far, low,
high)``, loaded from ``model_versions.calibration->'report'`` by
:func:`linewatch.storage.drift.load_promises`) and otherwise from the score's own threshold
(``threshold = -log10(target FAR)``, a point promise without an interval).

>>> from datetime import UTC, datetime, timedelta
>>> import numpy as np, uuid
>>> from linewatch.schemas.messages import Score
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> rng = np.random.default_rng(0)
>>> def score(i, p):
...     return Score(event_id=uuid.uuid4(), modality="spc", asset_id="press-1", ts=t0 + timedelta(seconds=i),
...                  detector="hotelling", model_version="v1", raw_score=0.0, tail_probability=p,
...                  calibrated_score=-np.log10(p), threshold=3.0, is_anomaly=p < 1e-3)
>>> tracker = DriftTracker(window=500, report_every=250)
>>> out = tracker.observe([score(i, p) for i, p in enumerate(rng.uniform(size=1000))])
>>> len(out.rows), any(r.drifted for r in out.rows), out.recommendations
(4, False, [])
>>> out = tracker.observe([score(1000 + i, p) for i, p in enumerate(rng.uniform(size=1000) ** 4)])
>>> [r.asset_id + "/" + r.model_version for r in out.recommendations]
['press-1/v1']
>>> retrain_alert(out.recommendations[0]).kind.value
'retrain_recommended'
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from linewatch.detectors.base import load_state, save_state
from linewatch.detectors.calibration import MIN_TAIL_PROBABILITY
from linewatch.detectors.input_drift import InputDriftReport
from linewatch.detectors.score_drift import (
    DEFAULT_REPORT_EVERY,
    DEFAULT_WINDOW,
    ScoreDriftMonitor,
    ScoreDriftReport,
    promise_from_threshold,
)
from linewatch.errors import ConfigError
from linewatch.schemas.drift_rows import INPUT_DRIFT, SCORE_DRIFT, DriftRow
from linewatch.schemas.ids import event_id
from linewatch.schemas.messages import Alert, AlertKind, AlertState, Contribution, Route, Score, Severity

_KIND = "drift_tracker"
#: Monitors kept at once: far above a plant's assets x live versions, small in memory (~10 kB each).
DEFAULT_MAX_MONITORS = 10_000
#: Command that retrains a model of each modality on recent known-good data (shown with every recommendation).
TRAIN_COMMANDS = {
    "spc": "linewatch train spc --from <recent known-good parts: CSV, Parquet or sql:SELECT ...> "
           "--detector {detector} --asset {asset}",
    "signals": "linewatch train signals --data <recent known-good recordings> --detector {detector} --asset {asset}",
    "frames": "linewatch train frames --data <recent good images> --sku <sku>",
}


class MonitorKey(NamedTuple):
    modality: str
    detector: str
    model_version: str
    asset_id: str


@dataclass(frozen=True)
class RetrainRecommendation:
    """A model version's baseline moved on an asset and stayed moved: retrain it (never re-threshold it)."""

    ts: datetime
    asset_id: str
    modality: str
    detector: str
    model_version: str
    kind: str  # 'score' or 'input'
    reason: str
    features: tuple[str, ...] = ()
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def train_command(self) -> str:
        """What to run: retrain this modality on recent known-good data of the asset."""
        template = TRAIN_COMMANDS.get(self.modality, "linewatch train --help")
        return template.format(detector=self.detector, asset=self.asset_id)


@dataclass
class DriftUpdate:
    rows: list[DriftRow] = field(default_factory=list)
    recommendations: list[RetrainRecommendation] = field(default_factory=list)

    def extend(self, other: DriftUpdate) -> None:
        self.rows.extend(other.rows)
        self.recommendations.extend(other.recommendations)


def score_row(key: MonitorKey, rep: ScoreDriftReport) -> DriftRow:
    """The ``drift`` row of one score-drift report."""
    return DriftRow(
        ts=rep.ts, asset_id=key.asset_id, modality=key.modality, detector=key.detector,
        model_version=key.model_version, kind=SCORE_DRIFT, feature="", n=rep.n, psi=rep.psi,
        ks_statistic=rep.ks_statistic, ks_pvalue=rep.ks_pvalue, page_hinkley=rep.page_hinkley,
        alarm_rate=rep.alarm_rate, promised_far=rep.promised_far, promised_far_low=rep.promised_far_low,
        promised_far_high=rep.promised_far_high, drifted=rep.drifted, retrain_recommended=rep.retrain_recommended,
        detail=rep.detail,
    )


def score_recommendation(key: MonitorKey, rep: ScoreDriftReport) -> RetrainRecommendation:
    return RetrainRecommendation(
        ts=rep.ts, asset_id=key.asset_id, modality=key.modality, detector=key.detector,
        model_version=key.model_version, kind=SCORE_DRIFT,
        reason=f"calibrated scores no longer look like normal data for {rep.n_seen} scores: {rep.detail}",
        figures={"psi": rep.psi, "ks_statistic": rep.ks_statistic, "ks_pvalue": rep.ks_pvalue,
                 "alarm_rate": rep.alarm_rate, "promised_far": rep.promised_far,
                 "promised_far_high": rep.promised_far_high, "n": float(rep.n)},
    )


def input_rows(key: MonitorKey, rep: InputDriftReport) -> list[DriftRow]:
    """One ``drift`` row per feature of an input-drift report."""
    rows = []
    for j, name in enumerate(rep.feature_names):
        why = []
        if rep.drifted[j]:
            why.append(f"PSI {rep.psi[j]:.2f}, KS {rep.ks_statistic[j]:.3f} (p={rep.ks_pvalue[j]:.1e})"
                       + (", ADWIN change" if rep.adwin[j] else "") + " against the training reference")
        rows.append(DriftRow(
            ts=rep.ts, asset_id=key.asset_id, modality=key.modality, detector=key.detector,
            model_version=key.model_version, kind=INPUT_DRIFT, feature=name, n=int(rep.n[j]),
            psi=float(rep.psi[j]), ks_statistic=float(rep.ks_statistic[j]), ks_pvalue=float(rep.ks_pvalue[j]),
            page_hinkley=bool(rep.adwin[j]), alarm_rate=None, promised_far=None, promised_far_low=None,
            promised_far_high=None, drifted=bool(rep.drifted[j]), retrain_recommended=bool(rep.retrain_recommended[j]),
            detail="; ".join(why),
        ))
    return rows


def input_recommendation(key: MonitorKey, rep: InputDriftReport, *, only_new: bool = True
                         ) -> RetrainRecommendation | None:
    """One recommendation naming every feature whose drift is sustained (newly, unless ``only_new=False``)."""
    hit = rep.new_recommendation if only_new else rep.retrain_recommended
    if not hit.any():
        return None
    idx = np.flatnonzero(rep.retrain_recommended)
    names = tuple(rep.feature_names[j] for j in idx)
    worst = int(idx[np.argmax(rep.psi[idx])])
    return RetrainRecommendation(
        ts=rep.ts, asset_id=key.asset_id, modality=key.modality, detector=key.detector,
        model_version=key.model_version, kind=INPUT_DRIFT, features=names,
        reason=f"inputs moved away from the training data: {', '.join(names)} "
               f"(worst {rep.feature_names[worst]}: PSI {rep.psi[worst]:.2f}, KS p={rep.ks_pvalue[worst]:.1e})",
        figures={"psi": float(rep.psi[worst]), "ks_statistic": float(rep.ks_statistic[worst]),
                 "ks_pvalue": float(rep.ks_pvalue[worst]), "n": float(rep.n[worst])},
    )


def retrain_alert(rec: RetrainRecommendation) -> Alert:
    """The ``retrain_recommended`` alert (route ``ml``) for a recommendation; its id is stable per episode key.

    ``score``/``p_value`` carry the KS evidence (``-log10 p``), contributors the drifted features
    (or the calibrated score itself); the note says what to do. The alert changes no threshold.
    """
    p = float(min(max(rec.figures.get("ks_pvalue", 1.0), MIN_TAIL_PROBABILITY), 1.0))
    names = rec.features or ("calibrated score",)
    share = 1.0 / len(names)
    return Alert(
        alert_id=event_id("retrain", rec.asset_id, rec.modality, rec.detector, rec.model_version, rec.kind,
                          rec.ts.isoformat()),
        state=AlertState.OPEN, kind=AlertKind.RETRAIN_RECOMMENDED, route=Route.ML, asset_id=rec.asset_id,
        severity=Severity.WARNING, ts=rec.ts, opened_at=rec.ts, score=-math.log10(p), p_value=p,
        modalities=[rec.modality],
        contributors=[Contribution(name=n, value=float(rec.figures.get("psi", 0.0)), share=share,
                                   modality=rec.modality, detail="drift")  # type: ignore[arg-type]
                      for n in names[:64]],
        model_versions=[rec.model_version],
        note=(f"retrain recommended: {rec.reason}. Retrain {rec.modality} model {rec.detector}@"
              f"{rec.model_version} on recent known-good data; do not raise its threshold")[:2000],
    )


class DriftTracker:
    """Score-drift monitors keyed by (modality, detector, model version, asset), at most ``max_monitors``.

    Owned by one runtime and fed from one thread; deterministic for a given score order.
    """

    def __init__(
        self,
        *,
        promises: Mapping[str, tuple[float, float, float]] | None = None,
        window: int = DEFAULT_WINDOW,
        report_every: int = DEFAULT_REPORT_EVERY,
        max_monitors: int = DEFAULT_MAX_MONITORS,
        monitor_params: Mapping[str, Any] | None = None,
    ) -> None:
        if max_monitors < 1:
            raise ConfigError(f"max_monitors={max_monitors} must be >= 1")
        self.promises = dict(promises or {})
        self.window = window
        self.report_every = report_every
        self.max_monitors = max_monitors
        self.monitor_params = dict(monitor_params or {})
        self._monitors: OrderedDict[MonitorKey, ScoreDriftMonitor] = OrderedDict()

    def set_promises(self, promises: Mapping[str, tuple[float, float, float]]) -> None:
        """Add or replace promised false-alarm rates; monitors already running for those versions take them too.

        A version's first scores may arrive before its promise is read from the registry; its monitor
        would otherwise keep the threshold's point promise (no interval) for good.
        """
        self.promises.update(promises)
        for key, mon in self._monitors.items():
            if key.model_version in promises:
                mon.promised = promises[key.model_version]

    def monitor(self, key: MonitorKey, threshold: float) -> ScoreDriftMonitor:
        mon = self._monitors.get(key)
        if mon is None:
            promised = self.promises.get(key.model_version) or promise_from_threshold(threshold)
            mon = ScoreDriftMonitor(promised=promised, window=self.window, report_every=self.report_every,
                                    **self.monitor_params)
            self._monitors[key] = mon
            while len(self._monitors) > self.max_monitors:
                self._monitors.popitem(last=False)
        else:
            self._monitors.move_to_end(key)
        return mon

    def observe(self, scores: Iterable[Score]) -> DriftUpdate:
        """Feed decoded scores (any order across keys, event order within one); rows and new recommendations.

        Scores of detectors still warming up (``ready=False``) say nothing about the baseline and are skipped.
        """
        groups: dict[MonitorKey, list[Score]] = {}
        for s in scores:
            if s.ready:
                groups.setdefault(MonitorKey(str(s.modality), s.detector, s.model_version, s.asset_id), []).append(s)
        out = DriftUpdate()
        for key in sorted(groups):  # a fixed order: rows and recommendations come out deterministically
            batch = groups[key]
            mon = self.monitor(key, batch[0].threshold)
            reports = mon.update([s.ts for s in batch], np.array([s.tail_probability for s in batch]),
                                 np.array([s.is_anomaly for s in batch]))
            for rep in reports:
                out.rows.append(score_row(key, rep))
                if rep.new_recommendation:
                    out.recommendations.append(score_recommendation(key, rep))
        return out

    def __len__(self) -> int:
        return len(self._monitors)

    def save(self, path: str | Path) -> None:
        """Write every monitor's window and counters (JSON + npz, no pickle) so a restart continues them."""
        monitors, arrays = [], {}
        for i, (key, mon) in enumerate(self._monitors.items()):  # least recently fed first, as held
            counters, p, alarm = mon.state()
            monitors.append({"key": list(key), "promised": list(mon.promised), **counters})
            arrays[f"p_{i}"], arrays[f"alarm_{i}"] = p, alarm
        params = {"window": self.window, "report_every": self.report_every, "max_monitors": self.max_monitors,
                  "monitor_params": self.monitor_params, "promises": {k: list(v) for k, v in self.promises.items()},
                  "monitors": monitors}
        save_state(path, kind=_KIND, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> DriftTracker:
        """Restore what :meth:`save` wrote (see :meth:`ScoreDriftMonitor.restore` for Page-Hinkley)."""
        params, arrays = load_state(path, kind=_KIND)
        monitors = params.pop("monitors")
        promises = {k: (float(v[0]), float(v[1]), float(v[2])) for k, v in params.pop("promises").items()}
        tracker = cls(promises=promises, **params)
        for i, m in enumerate(monitors):
            key = MonitorKey(*m.pop("key"))
            far, lo, hi = m.pop("promised")
            mon = ScoreDriftMonitor(promised=(far, lo, hi), window=tracker.window, report_every=tracker.report_every,
                                    **tracker.monitor_params)
            tracker._monitors[key] = mon.restore(m, arrays[f"p_{i}"], arrays[f"alarm_{i}"])
        return tracker
