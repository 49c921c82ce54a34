"""Dispositions in the database: stored once by their natural key, and read back as threshold evidence.

A disposition is stored by whoever sees it first (the ``linewatch disposition`` command, or the
dispositions agent for ones that other systems publish), ``ON CONFLICT DO NOTHING`` on its
``disposition_id`` (a UUIDv5 of target, operator and time), so both paths may store the same one.

The evidence query follows a disposition to the scores behind it: an alert's ``scores`` refs
(every lifecycle row's, once each), or an event's own scores for an event-level disposition. An
operator may revise a verdict: only the latest disposition of each alert or event counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import psycopg

from linewatch.feedback.thresholds import Evidence
from linewatch.schemas.messages import Disposition
from linewatch.schemas.rows import DispositionRow

#: The latest disposition per target, then one (disposition, score) row per score behind it.
_SCORES_BEHIND = """
WITH latest AS (
    SELECT DISTINCT ON (coalesce(alert_id, event_id)) disposition_id, alert_id, event_id, verdict, defect_class, ts
    FROM dispositions
    WHERE (%(since)s::timestamptz IS NULL OR ts >= %(since)s)
    ORDER BY coalesce(alert_id, event_id), ts DESC, written_at DESC
), refs AS (
    SELECT DISTINCT l.disposition_id, (r ->> 'ts')::timestamptz AS ts, (r ->> 'event_id')::uuid AS event_id,
           r ->> 'detector' AS detector
    FROM latest l
    JOIN alerts a ON a.alert_id = l.alert_id AND NOT a.shadow
    CROSS JOIN LATERAL jsonb_array_elements(a.scores) AS r
    UNION
    SELECT l.disposition_id, s.ts, s.event_id, s.detector
    FROM latest l JOIN scores s ON s.event_id = l.event_id
    WHERE l.alert_id IS NULL
), behind AS (
    SELECT l.disposition_id, l.alert_id, l.verdict, l.defect_class AS disposed_class, l.ts AS disposed_at, s.*
    FROM refs
    JOIN latest l USING (disposition_id)
    JOIN scores s ON s.ts = refs.ts AND s.event_id = refs.event_id AND s.detector = refs.detector
    WHERE (%(asset)s::text IS NULL OR s.asset_id = %(asset)s)
      AND (%(detector)s::text IS NULL OR s.detector = %(detector)s)
)
"""


def to_row(d: Disposition) -> tuple:
    """The ``dispositions`` row tuple (``DispositionRow`` field order)."""
    row = DispositionRow(disposition_id=d.disposition_id, alert_id=d.alert_id, event_id=d.event_id,
                         verdict=d.verdict.value, operator=d.operator, note=d.note, ts=d.ts,
                         defect_class=d.defect_class)
    return tuple(row.model_dump().values())


def threshold_evidence(conn: psycopg.Connection, *, asset: str | None = None, detector: str | None = None,
                       since: datetime | None = None) -> list[Evidence]:
    """Each (latest) disposition's highest calibrated score per detector and asset, oldest first.

    The highest, because an alert fires on its worst window: to silence a false alarm the
    threshold must clear that one; to keep a defect it must stay below it.
    """
    rows = conn.execute(
        _SCORES_BEHIND + """
        SELECT detector, asset_id, modality, verdict, disposition_id,
               max(calibrated_score),
               (array_agg(threshold ORDER BY ts DESC))[1],
               (array_agg(model_version ORDER BY ts DESC))[1]
        FROM behind
        GROUP BY detector, asset_id, modality, verdict, disposition_id
        ORDER BY max(ts), disposition_id""",
        {"asset": asset, "detector": detector, "since": since},
    ).fetchall()
    return [Evidence(detector=r[0], asset_id=r[1], modality=r[2], verdict=r[3], disposition_id=str(r[4]),
                     calibrated_score=float(r[5]), threshold=float(r[6]), model_version=r[7]) for r in rows]


def labelled_events(conn: psycopg.Connection, *, since: datetime | None = None,
                    verdicts: Sequence[str] = ()) -> list[dict]:
    """One row per dispositioned event: verdict, class, alert, asset, modality, event, ts, model versions, part."""
    cur = conn.execute(
        _SCORES_BEHIND + """
        SELECT event_id, ts, asset_id, modality, min(part_id) AS part_id, min(sku) AS sku,
               min(verdict) AS verdict, min(disposed_class) AS defect_class, min(alert_id::text) AS alert_id,
               min(disposition_id::text) AS disposition_id,
               array_agg(DISTINCT detector || '@' || model_version) AS model_versions,
               max(calibrated_score) AS max_calibrated_score
        FROM behind
        WHERE cardinality(%(verdicts)s::text[]) = 0 OR verdict = ANY(%(verdicts)s::text[])
        GROUP BY event_id, ts, asset_id, modality
        ORDER BY ts, event_id""",
        {"asset": None, "detector": None, "since": since, "verdicts": list(verdicts)},
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def event_features(conn: psycopg.Connection, events: Sequence[dict]) -> dict[uuid.UUID, dict[str, object]]:
    """The features the database holds for each event, by event id, as flat ``name -> value`` dicts.

    SPC: the part's characteristics (``spc_measurements``, pivoted). Signals: the asset's sensor
    windows that start at the frame's time (``signal_features``, ``sensor.feature``). Frames: the
    heat map's reference (``frame_heatmaps`` key) and where its peak and box are.
    """
    by_modality: dict[str, list[dict]] = {}
    for e in events:
        by_modality.setdefault(e["modality"], []).append(e)
    out: dict[uuid.UUID, dict[str, object]] = {e["event_id"]: {} for e in events}
    spc = [e["event_id"] for e in by_modality.get("spc", [])]
    if spc:
        for eid, name, value in conn.execute(
                "SELECT event_id, characteristic, value FROM spc_measurements WHERE event_id = ANY(%s)", (spc,)):
            out[eid][name] = value
    signals = by_modality.get("signals", [])
    if signals:
        for eid, sensor, key, value in conn.execute(
                """SELECT e.event_id, f.sensor, kv.key, kv.value
                   FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[]) AS e(event_id, asset_id, ts)
                   JOIN signal_features f ON f.asset_id = e.asset_id AND f.ts = e.ts
                   CROSS JOIN LATERAL jsonb_each(f.features) AS kv
                   WHERE jsonb_typeof(kv.value) = 'number'""",
                ([e["event_id"] for e in signals], [e["asset_id"] for e in signals], [e["ts"] for e in signals])):
            out[eid][f"{sensor}.{key}"] = float(value)
    frames = [e["event_id"] for e in by_modality.get("frames", [])]
    if frames:
        for eid, ts, camera, peak_x, peak_y, box, area in conn.execute(
                """SELECT event_id, ts, camera, peak_x, peak_y,
                          CASE WHEN box_x0 IS NULL THEN NULL
                               ELSE concat_ws(',', box_x0, box_y0, box_x1, box_y1) END, area_fraction
                   FROM frame_heatmaps WHERE event_id = ANY(%s)""", (frames,)):
            out[eid].update({"heatmap_ref": f"frame_heatmaps:{ts.isoformat()}/{eid}", "camera": camera,
                             "peak_x": peak_x, "peak_y": peak_y, "box": box, "area_fraction": area})
    return out
