"""Drift from what the database holds: promised false-alarm rates, score drift, input drift, the ``drift`` table.

The pure monitors live in :mod:`linewatch.detectors.score_drift` and
:mod:`linewatch.detectors.drift_tracker`; this module feeds them from stored rows, for
``linewatch drift check`` and for the runtime's start-up (:func:`load_promises`).

Input drift reads the inputs where they are stored and compares them with the reference sample
each model version saved at fit time (``input_reference.npy`` in its bundle):

- SPC models: their characteristics in ``spc_measurements`` (long format: one row per part and
  characteristic; a part that lacks a characteristic simply adds nothing to that feature);
- signals models: their ``<sensor>.<feature>`` columns in ``signal_features.features`` of windows
  the data-quality gate passed, each feature compared on its own (the marginals, as PSI and KS are).

Which (model version, asset) pairs are checked: those that scored in the period, from ``scores``.
Versions whose bundle has no reference (trained before it was kept) and image models are skipped,
and :func:`input_drift` says so in ``skipped``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from linewatch.detectors.bundle import load_input_reference
from linewatch.detectors.drift_tracker import (
    DriftTracker,
    DriftUpdate,
    MonitorKey,
    input_recommendation,
    input_rows,
)
from linewatch.detectors.input_drift import InputDriftMonitor
from linewatch.detectors.score_drift import DEFAULT_REPORT_EVERY, DEFAULT_WINDOW, promise_from_report
from linewatch.schemas.drift_rows import DriftRow
from linewatch.schemas.messages import Score
from linewatch.schemas.rows import columns
from linewatch.signals.framing import split_feature_name
from linewatch.storage.artifacts import ArtifactCache, ArtifactIntegrityError

log = logging.getLogger(__name__)

#: Modalities whose inputs are stored as rows (frames keep no pixels in the database).
INPUT_MODALITIES = ("spc", "signals")


def load_promises(conn: psycopg.Connection, versions: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """``model_version -> (far, low, high)`` from ``model_versions.calibration->'report'`` (versions without one
    are left out: the tracker then takes the point promise of the score's threshold)."""
    rows = conn.execute(
        "SELECT version, calibration->'report', (calibration->>'target_far')::float8 FROM model_versions "
        "WHERE version = ANY(%s)", (sorted(set(versions)),)).fetchall()
    out: dict[str, tuple[float, float, float]] = {}
    for version, report, target in rows:
        report = report if isinstance(report, dict) else json.loads(report) if report else {}
        if report.get("target_far") is None and target is not None:
            report = {**report, "target_far": target}
        if report.get("target_far") is not None and report.get("far_interval_90"):
            out[version] = promise_from_report(report, 0.0)
    return out


def write_drift_rows(conn: psycopg.Connection, rows: Sequence[DriftRow]) -> int:
    """Insert ``rows`` idempotently (key ``(ts, asset, detector, version, kind, feature)``); returns new rows."""
    if not rows:
        return 0
    cols = columns(DriftRow)
    sql = (f"INSERT INTO drift ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
           "ON CONFLICT DO NOTHING")
    with conn.cursor() as cur:
        cur.executemany(sql, [tuple(getattr(r, c) for c in cols) for r in rows], returning=False)
        written = cur.rowcount
    conn.commit()
    return max(written, 0)


def _assets_clause(assets: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
    return ("AND asset_id = ANY(%s)", (list(assets),)) if assets else ("", ())


def score_drift(conn: psycopg.Connection, *, since: datetime, until: datetime | None = None,
                assets: Sequence[str] | None = None, window: int = DEFAULT_WINDOW,
                report_every: int = DEFAULT_REPORT_EVERY) -> DriftUpdate:
    """Replay the period's ready scores from ``scores`` through a fresh :class:`DriftTracker`, in event order."""
    where, params = _assets_clause(assets)
    rows = conn.execute(
        f"""SELECT event_id, modality, asset_id, sku, ts, scored_at, detector, model_version, raw_score,
                   tail_probability, calibrated_score, threshold, is_anomaly
            FROM scores WHERE ready AND ts >= %s AND ts < coalesce(%s, 'infinity'::timestamptz) {where}
            ORDER BY ts, event_id, detector""", (since, until, *params)).fetchall()
    versions = {r[7] for r in rows}
    tracker = DriftTracker(promises=load_promises(conn, versions), window=window, report_every=report_every)
    names = ("event_id", "modality", "asset_id", "sku", "ts", "scored_at", "detector", "model_version",
             "raw_score", "tail_probability", "calibrated_score", "threshold", "is_anomaly")
    scores = [Score.model_construct(**dict(zip(names, r, strict=True))) for r in rows]  # the table holds valid rows
    return tracker.observe(scores)


@dataclass
class _Version:
    modality: str
    detector: str
    version: str
    feature_names: tuple[str, ...]
    artifact_sha256: str | None
    artifact_path: str


@dataclass
class InputDriftResult(DriftUpdate):
    """Drift rows and recommendations, and ``(version, reason)`` for every version that was not checked."""

    skipped: list[tuple[str, str]] = field(default_factory=list)


def _scored_versions(conn: psycopg.Connection, since: datetime, until: datetime | None,
                     assets: Sequence[str] | None) -> list[tuple[_Version, str]]:
    where, params = _assets_clause(assets)
    rows = conn.execute(
        f"""SELECT DISTINCT ON (s.model_version, s.detector, s.asset_id)
                   s.modality, s.detector, s.model_version, m.feature_names, m.artifact_sha256, m.artifact_path,
                   s.asset_id
            FROM (SELECT DISTINCT modality, detector, model_version, asset_id FROM scores
                  WHERE ts >= %s AND ts < coalesce(%s, 'infinity'::timestamptz) {where}) s
            JOIN model_versions m ON m.version = s.model_version AND m.detector = s.detector
                                 AND m.modality = s.modality
            ORDER BY s.model_version, s.detector, s.asset_id, m.created_at DESC""",
        (since, until, *params)).fetchall()
    return [(_Version(r[0], r[1], r[2], tuple(r[3]), r[4], r[5]), r[6]) for r in rows]


def _reference(conn: psycopg.Connection, v: _Version, cache: ArtifactCache) -> np.ndarray | None:
    if v.artifact_sha256 is None:
        return load_input_reference(v.artifact_path)

    def fetch() -> bytes:
        row = conn.execute("SELECT content FROM model_artifacts WHERE sha256 = %s", (v.artifact_sha256,)).fetchone()
        if row is None:
            raise ArtifactIntegrityError(f"model {v.detector}@{v.version}: no artifact {v.artifact_sha256}")
        return bytes(row[0])

    root = cache.get(v.artifact_sha256, fetch, what=f"model {v.detector}@{v.version}")
    return load_input_reference(root)


def _spc_inputs(conn: psycopg.Connection, asset: str, names: tuple[str, ...], since: datetime,
                until: datetime | None) -> tuple[list[datetime], np.ndarray]:
    rows = conn.execute(
        """SELECT ts, event_id, characteristic, value FROM spc_measurements
           WHERE asset_id = %s AND characteristic = ANY(%s) AND ts >= %s
             AND ts < coalesce(%s, 'infinity'::timestamptz)
           ORDER BY ts, event_id""", (asset, list(names), since, until)).fetchall()
    col = {n: j for j, n in enumerate(names)}
    keys: dict[tuple[datetime, Any], int] = {}
    for ts, eid, _, _ in rows:
        keys.setdefault((ts, eid), len(keys))
    X = np.full((len(keys), len(names)), np.nan)
    for ts, eid, characteristic, value in rows:
        X[keys[(ts, eid)], col[characteristic]] = value
    return [k[0] for k in keys], X


def _signal_inputs(conn: psycopg.Connection, asset: str, names: tuple[str, ...], since: datetime,
                   until: datetime | None) -> tuple[list[datetime], np.ndarray]:
    parts = [split_feature_name(n) for n in names]
    sensors = sorted({s for s, _ in parts})
    rows = conn.execute(
        """SELECT ts, sensor, features FROM signal_features
           WHERE asset_id = %s AND sensor = ANY(%s) AND ts >= %s AND ts < coalesce(%s, 'infinity'::timestamptz)
             AND cardinality(quality) = 0
           ORDER BY ts, sensor""", (asset, sensors, since, until)).fetchall()
    by_sensor: dict[str, list[tuple[int, str]]] = {}
    for j, (sensor, feature) in enumerate(parts):
        by_sensor.setdefault(sensor, []).append((j, feature))
    X = np.full((len(rows), len(names)), np.nan)
    for i, (_, sensor, features) in enumerate(rows):
        values = features if isinstance(features, dict) else json.loads(features)
        for j, feature in by_sensor.get(sensor, ()):
            v = values.get(feature)
            if v is not None:
                X[i, j] = v
    return [r[0] for r in rows], X


def input_drift(conn: psycopg.Connection, *, since: datetime, until: datetime | None = None,
                assets: Sequence[str] | None = None, window: int = DEFAULT_WINDOW,
                report_every: int = DEFAULT_REPORT_EVERY, cache_dir: Path | None = None) -> InputDriftResult:
    """Input drift of every SPC and signals model version that scored in the period, per asset.

    Each version's stored inputs of the period are fed, in event order, through an
    :class:`~linewatch.detectors.input_drift.InputDriftMonitor` on its reference sample; the
    result holds one ``drift`` row per feature from the last report (nothing when fewer than
    ``report_every`` rows came) and one recommendation per version and asset whose drift persisted.
    """
    out = InputDriftResult()
    cache = ArtifactCache(cache_dir)
    for v, asset in _scored_versions(conn, since, until, assets):
        if v.modality not in INPUT_MODALITIES:
            continue
        try:
            reference = _reference(conn, v, cache)
        except (OSError, ArtifactIntegrityError) as e:
            out.skipped.append((v.version, f"its bundle could not be read ({e})"))
            continue
        if reference is None or reference.shape[1] != len(v.feature_names):
            out.skipped.append((v.version, "its bundle has no input reference (trained before one was kept): "
                                           "retrain it to get input drift"))
            continue
        reader = _spc_inputs if v.modality == "spc" else _signal_inputs
        times, X = reader(conn, asset, v.feature_names, since, until)
        if not len(X):
            continue
        mon = InputDriftMonitor(feature_names=v.feature_names, reference=reference, window=window,
                                report_every=report_every)
        reports = mon.update(times, X)
        if not reports:
            continue
        key = MonitorKey(v.modality, v.detector, v.version, asset)
        out.rows.extend(r for r in input_rows(key, reports[-1]) if r.n > 0)  # features seen in the period
        rec = input_recommendation(key, reports[-1], only_new=False)
        if rec is not None:
            out.recommendations.append(rec)
    return out
