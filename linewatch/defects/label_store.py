"""The label store: confirmed, classified events with the features the anomaly models computed for them.

The views in ``sql/190_defects.sql`` say which events are labelled (``defect_labels``: the latest
disposition of each alert or event, followed to its events, the class normalised) and how many
each class has (``defect_label_counts``). This module turns them into a training matrix:

- frames: the pooled patch features the image model stored in ``frame_features``;
- SPC: the part's characteristics (``spc_measurements``), the ones every labelled part has;
- signals: the asset's window features at the event's time (``signal_features``), likewise.

Good parts come from dispositions that said "not a defect" (false alarm, acceptable variation)
and, so that a classifier also learns what an ordinary part looks like, from stored events every
detector found ordinary (:data:`ORDINARY_SCORE`; newest first, as many as the largest defect class has).
"""

from __future__ import annotations

import numpy as np
import psycopg

from linewatch.defects.datasets import TrainingSet, pooled_feature_names
from linewatch.errors import ConfigError
from linewatch.schemas.messages import GOOD_CLASS
from linewatch.storage.connection import connect

MODALITIES = ("frames", "spc", "signals")
#: Good-part examples come from events every detector scored below this (tail probability above 0.1):
#: ordinary parts, well clear of the threshold region where a missed defect would sit.
ORDINARY_SCORE = 1.0


def class_counts(conn: psycopg.Connection, *, sku: str | None = None) -> list[dict]:
    """``defect_label_counts`` rows (sku, modality, class, examples, with_features, ready, last_confirmed)."""
    cur = conn.execute("SELECT sku, modality, class, examples, with_features, ready, last_confirmed "
                       "FROM defect_label_counts WHERE %(sku)s::text IS NULL OR sku = %(sku)s "
                       "ORDER BY sku, modality, class = 'good', class", {"sku": sku})
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def training_set(database_url: str, *, modality: str, sku: str | None = None) -> TrainingSet:
    """The labelled events of ``modality`` (and ``sku``) as a feature matrix, plus sampled good events."""
    if modality not in MODALITIES:
        raise ConfigError(f"modality {modality!r}; use one of {', '.join(MODALITIES)}")
    with connect(database_url) as conn:
        labels = conn.execute(
            "SELECT event_id, ts, asset_id, sku, class FROM defect_labels "
            "WHERE modality = %s AND (%s::text IS NULL OR sku = %s) AND has_features ORDER BY ts, event_id",
            (modality, sku, sku)).fetchall()
        defects = [r for r in labels if r[4] != GOOD_CLASS]
        if not defects:
            raise ConfigError(
                f"no confirmed {modality} defects with a class{f' for SKU {sku}' if sku else ''} and stored features; "
                "confirm some with `linewatch disposition ALERT_ID --label true_defect --class NAME`, "
                "and see what is there with `linewatch labels`")
        largest = max(np.unique([r[4] for r in defects], return_counts=True)[1])
        skus = sorted({r[3] for r in labels})
        labelled_ids = {r[0] for r in labels}
        model = _image_model(conn, [r[0] for r in defects]) if modality == "frames" else None
        normal = [r for r in _unflagged(conn, modality, skus, int(largest), model) if r[0] not in labelled_ids]
        rows = [*labels, *[(*r, GOOD_CLASS) for r in normal]]
        names, X = _features(conn, modality, rows, model)
    keep = ~np.isnan(X).any(axis=1) if X.size else np.zeros(len(rows), dtype=bool)
    return TrainingSet(X[keep], [str(r[4]) for r, k in zip(rows, keep, strict=True) if k], names, modality,
                       "label store", sku, event_ids=[str(r[0]) for r, k in zip(rows, keep, strict=True) if k],
                       feature_model=model)


def _image_model(conn: psycopg.Connection, defect_ids: list[object]) -> str | None:
    """The image model whose features most confirmed defects have (the newest on a tie).

    Only one model's pooled features are comparable (another model, another feature space), and
    the confirmed defects are the scarce rows: the good examples are then taken from that model too.
    """
    row = conn.execute("SELECT model_version FROM frame_features WHERE event_id = ANY(%s) "
                       "GROUP BY model_version ORDER BY count(*) DESC, max(ts) DESC LIMIT 1", (defect_ids,)).fetchone()
    return row[0] if row else None


def _unflagged(conn: psycopg.Connection, modality: str, skus: list[str], n: int, model: str | None = None
               ) -> list[tuple]:
    """The newest ``n`` ordinary events per SKU (every detector's score under ORDINARY_SCORE), features stored.

    Not merely unflagged: a defect the anomaly layer missed scores just under its threshold, and
    taking it as a good part would teach the classifier that the defect is normal.
    """
    stored = ("frame_features f WHERE f.ts = s.ts AND f.event_id = s.event_id AND f.model_version = %(model)s"
              if modality == "frames" else
              "spc_measurements f WHERE f.ts = s.ts AND f.event_id = s.event_id" if modality == "spc" else
              "signal_features f WHERE f.ts = s.ts AND f.asset_id = s.asset_id")
    query = f"""SELECT event_id, ts, asset_id, sku FROM (
                    SELECT s.event_id, s.ts, min(s.asset_id) AS asset_id, min(s.sku) AS sku,
                           row_number() OVER (PARTITION BY min(s.sku) ORDER BY s.ts DESC, s.event_id) AS k
                    FROM scores s
                    WHERE s.modality = %(modality)s AND s.sku = ANY(%(skus)s) AND EXISTS (SELECT 1 FROM {stored})
                    GROUP BY s.ts, s.event_id HAVING max(s.calibrated_score) < %(ordinary)s) x
                WHERE k <= %(n)s ORDER BY ts, event_id"""
    return conn.execute(query, {"skus": skus, "n": n, "modality": modality, "ordinary": ORDINARY_SCORE,
                                "model": model}).fetchall()


def _features(conn: psycopg.Connection, modality: str, rows: list[tuple], model: str | None = None
              ) -> tuple[list[str], np.ndarray]:
    """Feature names and a ``(len(rows), d)`` matrix in ``rows`` order (NaN where an event lacks one).

    Frames: the pooled features image model ``model`` computed (rows of another model are NaN).
    """
    ids = [r[0] for r in rows]
    if modality == "frames":
        found = dict(conn.execute("SELECT event_id, features FROM frame_features "
                                  "WHERE event_id = ANY(%s) AND model_version = %s", (ids, model)).fetchall())
        width = len(next(iter(found.values()))) if found else 0
        X = np.full((len(rows), width), np.nan)
        for i, eid in enumerate(ids):
            if eid in found:
                X[i] = found[eid]
        return pooled_feature_names(width // 2), X
    if modality == "spc":
        values = conn.execute("SELECT event_id, characteristic, value FROM spc_measurements "
                              "WHERE event_id = ANY(%s)", (ids,)).fetchall()
    else:
        values = conn.execute(
            """SELECT e.event_id, f.sensor || '.' || kv.key, (kv.value #>> '{}')::double precision
               FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[]) AS e(event_id, asset_id, ts)
               JOIN signal_features f ON f.asset_id = e.asset_id AND f.ts = e.ts
               CROSS JOIN LATERAL jsonb_each(f.features) AS kv
               WHERE jsonb_typeof(kv.value) = 'number'""",
            (ids, [r[2] for r in rows], [r[1] for r in rows])).fetchall()
    by_event: dict[object, dict[str, float]] = {}
    for eid, name, value in values:
        by_event.setdefault(eid, {})[name] = value
    present = [set(found) for found in by_event.values()]  # events with none are dropped by the caller
    names = sorted(set.intersection(*present)) if present else []
    X = np.array([[by_event.get(eid, {}).get(n, np.nan) for n in names] for eid in ids], dtype=np.float64)
    return names, X.reshape(len(rows), len(names))
