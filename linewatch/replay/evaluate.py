"""What a replay's rows say against labels: metrics per detector and model version, for fused units and alerts.

The replay keeps the rows the worker would have written; this module turns them into timelines
(one per asset, detector and model version, plus the fused unit scores and the alerts) and
hands each to the one metric function (:func:`linewatch.backtest.replay_metrics.alarm_metrics`),
so every line of the report is computed the same way.

Labels come as windows (a NAB-style JSON or a ``start,end`` CSV: every event inside a window is
anomalous, on every asset) or per event (an image folder's class folders, operators'
dispositions in the database: only the labelled events are judged).

The fused alerts are judged as incidents, not per event: an alert *opening* is the detection
(NAB's view of a detection is a point, and an hour-long alert is one alarm, not 720), so for the
``fused alerts`` row ``precision`` is the share of openings inside a window, ``recall`` the share
of windows with an opening, and the false alarms per hour count openings outside every window.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from linewatch.backtest.labels import LabelWindows
from linewatch.backtest.metrics import auroc, confusion_metrics
from linewatch.backtest.replay_metrics import alarm_metrics, per_window_table, rankable
from linewatch.backtest.threshold_sweep import ThresholdChoice, recommend
from linewatch.errors import DataError
from linewatch.schemas.rows import AlertRow, ScoreRow, columns

FUSED_UNITS = "fused units"
FUSED_ALERTS = "fused alerts"
_S = {c: i for i, c in enumerate(columns(ScoreRow))}
_A = {c: i for i, c in enumerate(columns(AlertRow))}


@dataclass
class Timeline:
    """One asset's events as one detector version (or fusion) saw them, in event-time order."""

    name: str  # "modality/detector@version", or FUSED_UNITS
    asset_id: str
    sku: str
    modality: str
    detector: str
    version: str
    times: np.ndarray  # datetime64[us], UTC
    scores: np.ndarray  # calibrated score
    alarms: np.ndarray
    threshold: float
    event_ids: list[str] = field(default_factory=list)
    blamed: list[str | None] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.asset_id} {self.name}"


@dataclass
class Labels:
    """Ground truth: windows (every asset), or per-event verdicts (``True`` = a real defect)."""

    windows: LabelWindows | None = None
    events: Mapping[str, bool] | None = None
    source: str = ""


def as_utc64(moment: datetime) -> np.datetime64:
    """A datetime as naive-UTC ``datetime64[us]`` (naive input is taken as UTC, the project's convention)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(moment, "us")


def from_utc64(t: np.datetime64) -> datetime:
    """The inverse of :func:`as_utc64`: an aware UTC datetime."""
    return t.astype("datetime64[us]").item().replace(tzinfo=UTC)


def score_timelines(rows: Sequence[tuple]) -> list[Timeline]:
    """The ``scores`` rows (:class:`ScoreRow` tuples) as one timeline per asset, detector and model version."""
    groups: dict[tuple[str, str, str, str], list[tuple]] = defaultdict(list)
    for r in rows:
        groups[(r[_S["asset_id"]], r[_S["modality"]], r[_S["detector"]], r[_S["model_version"]])].append(r)
    out = []
    for (asset, modality, detector, version), rs in sorted(groups.items()):
        rs.sort(key=lambda r: (r[_S["ts"]], str(r[_S["event_id"]])))
        ready = np.array([r[_S["ready"]] for r in rs], dtype=bool)
        scores = np.array([r[_S["calibrated_score"]] for r in rs], dtype=np.float64)
        out.append(Timeline(
            name=f"{modality}/{detector}@{version}", asset_id=asset, sku=rs[0][_S["sku"]], modality=modality,
            detector=detector, version=version, times=np.array([as_utc64(r[_S["ts"]]) for r in rs]),
            scores=np.where(ready, scores, np.nan), alarms=np.array([r[_S["is_anomaly"]] for r in rs], dtype=bool),
            threshold=float(rs[-1][_S["threshold"]]), event_ids=[str(r[_S["event_id"]]) for r in rs],
            blamed=[r[_S["top_feature"]] for r in rs]))
    return out


def fused_timelines(verdicts: Sequence[tuple[str, datetime, float, bool]], threshold: float) -> list[Timeline]:
    """The fusion engine's unit decisions (asset, ts, fused score, alarm) as one timeline per asset."""
    by_asset: dict[str, list[tuple[datetime, float, bool]]] = defaultdict(list)
    for asset, ts, score, alarm in verdicts:
        by_asset[asset].append((ts, score, alarm))
    out = []
    for asset, vs in sorted(by_asset.items()):
        vs.sort(key=lambda v: v[0])
        out.append(Timeline(name=FUSED_UNITS, asset_id=asset, sku="", modality="fused", detector="fusion",
                            version="", times=np.array([as_utc64(v[0]) for v in vs]),
                            scores=np.array([v[1] for v in vs]), alarms=np.array([v[2] for v in vs], dtype=bool),
                            threshold=threshold))
    return out


@dataclass
class AlertSpan:
    """One alert folded, from open to close (``closed_at`` None = still open when the replay ended)."""

    alert_id: str
    asset_id: str
    opened_at: datetime
    closed_at: datetime | None
    severity: str
    contributors: list[str]
    shadow: bool = False


def incidents(alert_rows: Sequence[tuple], *, kind: str = "anomaly") -> list[AlertSpan]:
    """The alert lifecycle rows folded into one incident per alert (champion and shadow), by opening time."""
    by_id: dict[str, list[tuple]] = defaultdict(list)
    for r in alert_rows:
        if r[_A["kind"]] == kind:
            by_id[str(r[_A["alert_id"]])].append(r)
    out = []
    for alert_id, rs in by_id.items():
        rs.sort(key=lambda r: r[_A["ts"]])
        closed = [r[_A["ts"]] for r in rs if r[_A["state"]] == "close"]
        severities = [r[_A["severity"]] for r in rs]
        worst = max(severities, key=lambda s: {"critical": 3, "warning": 2}.get(s, 1))
        last = next((r for r in reversed(rs) if r[_A["state"]] != "close"), rs[-1])
        names = list(dict.fromkeys(f"{c.get('modality', '')}:{c['name']}"
                                   for c in json.loads(last[_A["contributors"]])))[:3]
        out.append(AlertSpan(alert_id, rs[0][_A["asset_id"]], rs[0][_A["opened_at"]], closed[-1] if closed else None,
                            worst, names, bool(rs[0][_A["shadow"]])))
    return sorted(out, key=lambda i: (i.opened_at, i.asset_id))


def timeline_metrics(t: Timeline, labels: Labels) -> dict[str, Any]:
    """Every figure for one timeline: against windows (NAB included) or against per-event verdicts."""
    if labels.windows is not None:
        return alarm_metrics(t.times, t.scores, t.alarms & ~np.isnan(t.scores), labels.windows)
    assert labels.events is not None
    keep = np.array([e in labels.events for e in t.event_ids], dtype=bool)
    if not keep.any():
        return {"n_events": 0, "n_labelled": 0}
    y = np.array([labels.events[e] for e, k in zip(t.event_ids, keep, strict=True) if k], dtype=bool)
    scores = t.scores[keep]
    scored = ~np.isnan(scores)
    out = confusion_metrics(y, t.alarms[keep] & scored)  # an unscored event did not alarm
    out["auroc"] = auroc(y[scored], rankable(scores[scored]))  # only scored events can be ranked
    out["missed_alarm_rate"] = out.pop("mar")
    return {"n_events": int(t.times.size), "n_labelled": int(keep.sum()), **out}


def alert_openings(asset_times: Mapping[str, np.ndarray], found: Sequence[AlertSpan]) -> Timeline | None:
    """The champions' alert openings on the assets' unit time lines (one detection per opening), merged in time."""
    times_parts, opened_parts, names = [], [], []
    for asset, times in asset_times.items():
        opened = np.zeros(times.size, dtype=bool)
        for inc in found:
            if inc.asset_id == asset and not inc.shadow and times.size:
                opened[min(np.searchsorted(times, as_utc64(inc.opened_at)), times.size - 1)] = True
        times_parts.append(times)
        opened_parts.append(opened)
        names += [asset] * times.size
    if not times_parts or not sum(t.size for t in times_parts):
        return None
    times, opened = np.concatenate(times_parts), np.concatenate(opened_parts)
    order = np.argsort(times, kind="stable")
    assets = ", ".join(asset_times)
    return Timeline(name=FUSED_ALERTS, asset_id=assets, sku="", modality="fused", detector="alerts", version="",
                    times=times[order], scores=opened[order].astype(np.float64), alarms=opened[order],
                    threshold=0.5, blamed=[])


def alert_metrics(openings: Timeline | None, labels: Labels) -> dict[str, Any] | None:
    """The fused alerts as incidents against label windows (see the module docstring); None without windows."""
    if labels.windows is None or openings is None:
        return None
    m = alarm_metrics(openings.times, openings.scores, openings.alarms, labels.windows)
    inside = labels.windows.mask(openings.times)
    n_open, n_inside = int(openings.alarms.sum()), int((openings.alarms & inside).sum())
    windows = m["n_windows"] or 0
    precision = n_inside / n_open if n_open else None
    recall = m["windows_detected"] / windows if windows else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {**m, "precision": precision, "recall": recall, "f1": f1, "alerts_opened": n_open, "auroc": None,
            "missed_alarm_rate": None if recall is None else 1.0 - recall}


def event_table(t: Timeline, labels: Labels) -> list[dict[str, Any]]:
    """Per label window: whether this timeline caught it, when, and what it blamed."""
    if labels.windows is None or t.times.size == 0:
        return []
    table = per_window_table(t.times, t.alarms & ~np.isnan(t.scores), labels.windows, t.blamed or None)
    return [{"asset": t.asset_id, "series": t.name, **row} for row in table]


def recommend_thresholds(timelines: Sequence[Timeline], labels: Labels, *, target_far: float | None,
                         costs: Mapping[str, tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """Per asset and detector version: the threshold its labelled history supports (target FAR or cost ratio).

    ``costs`` maps a SKU (or ``*`` for all) to ``(false reject, escaped defect)`` costs.
    """
    out = []
    for t in timelines:
        if t.name == FUSED_UNITS:
            continue
        scored = ~np.isnan(t.scores)
        if labels.windows is not None:
            y = labels.windows.mask(t.times)[scored]
        elif labels.events is not None:
            keep = np.array([e in labels.events for e in t.event_ids], dtype=bool) & scored
            y = np.array([labels.events[e] for e, k in zip(t.event_ids, keep, strict=True) if k], dtype=bool)
            scored = keep
        else:
            continue
        cost = (costs or {}).get(t.sku) or (costs or {}).get("*")
        try:
            choice: ThresholdChoice = recommend(t.scores[scored], y, target_far=target_far,
                                                cost_false_reject=cost[0] if cost else None,
                                                cost_escape=cost[1] if cost else None)
        except DataError as e:
            out.append({"asset": t.asset_id, "series": t.name, "detector": t.detector, "modality": t.modality,
                        "version": t.version, "current": t.threshold, "threshold": None, "reason": str(e)})
            continue
        out.append({"asset": t.asset_id, "series": t.name, "detector": t.detector, "modality": t.modality,
                    "version": t.version, "sku": t.sku, "current": t.threshold, "threshold": choice.threshold,
                    "far": choice.far, "recall": choice.recall, "precision": choice.precision, "cost": choice.cost,
                    "n_normal": choice.n_normal, "n_anomalous": choice.n_anomalous, "reason": choice.reason})
    return out
