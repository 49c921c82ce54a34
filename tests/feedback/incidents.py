"""Alerts, the scores behind them and a registered model, written straight into the real database.

The fusion agent (written elsewhere) produces alerts live; these tests need alerts with known
scores, so they insert ``AlertRow``/``ScoreRow``/``SpcMeasurementRow`` rows as the agents would.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from linewatch.detectors.bundle import Scope
from linewatch.schemas.rows import AlertRow, ScoreRow, SpcMeasurementRow, columns
from linewatch.storage.writer import BatchWriter
from linewatch.training import train_and_register

DETECTOR = "hotelling"  # any detector: the rule is on calibrated scores; this one fits in milliseconds
FEATURES = ("bore_mm", "runout_um")


def register_model(database_url: str, model_dir, asset: str):
    """An SPC model (DETECTOR) for ``asset`` at target 1e-3 (threshold 3.0), and its version."""
    X = np.random.default_rng(5).normal(size=(2000, len(FEATURES)))
    bundle, ref = train_and_register(X, feature_names=FEATURES, database_url=database_url, model_dir=model_dir,
                                     detector=DETECTOR, target_far=1e-3, scope=Scope(asset=asset), run_rules=None)
    return bundle, ref


def insert_alert(database_url: str, asset: str, *, score: float, threshold: float = 3.0, version: str = "v1",
                 ts: datetime | None = None, state: str = "open") -> tuple[uuid.UUID, uuid.UUID]:
    """One open alert on ``asset`` behind one score of ``score`` by DETECTOR; returns (alert_id, event_id)."""
    ts = ts or datetime.now(UTC) - timedelta(minutes=5)
    event = uuid.uuid4()
    alert_id = uuid.uuid4()
    contributors = [{"name": "bore_mm", "value": score, "share": 0.8, "kind": "feature", "modality": "spc"},
                    {"name": "runout_um", "value": 1.0, "share": 0.2, "kind": "feature", "modality": "spc"}]
    score_row = ScoreRow(ts=ts, event_id=event, modality="spc", asset_id=asset, sku="default",
                         part_id=f"P-{event.hex[:6]}",
                         detector=DETECTOR, model_version=version, raw_score=score * 2, tail_probability=10 ** -score,
                         calibrated_score=score, threshold=threshold, is_anomaly=score > threshold, ready=True,
                         top_feature="bore_mm", explanation=json.dumps(contributors[:1]), scored_at=ts)
    ref = {"ts": ts.isoformat(), "event_id": str(event), "detector": DETECTOR, "model_version": version,
           "modality": "spc", "calibrated_score": score}
    alert = AlertRow(ts=ts, alert_id=alert_id, state=state, asset_id=asset, severity="warning", opened_at=ts,
                     score=score, modalities=["spc"], contributors=json.dumps(contributors), event_ids=[event],
                     shadow=False, kind="anomaly", route="quality", p_value=10 ** -score, scores=json.dumps([ref]),
                     model_versions=[f"{DETECTOR}@{version}"], actor=None, note="")
    measurements = [SpcMeasurementRow(ts=ts, event_id=event, asset_id=asset, sku="default", part_id=score_row.part_id,
                                      shift="A", characteristic=name, value=value, lsl=None, usl=None, target=None)
                    for name, value in zip(FEATURES, (25.0 + score / 100, 3.0), strict=True)]
    tuples = {t: [tuple(getattr(r, c) for c in columns(t)) for r in rows]
              for t, rows in ((ScoreRow, [score_row]), (AlertRow, [alert]), (SpcMeasurementRow, measurements))}
    writer = BatchWriter(database_url)
    try:
        writer.write(tuples)
    finally:
        writer.close()
    return alert_id, event
