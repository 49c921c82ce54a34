"""Building ``Score`` objects for fusion tests: a plant's verdicts without running its detectors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from linewatch.schemas.ids import event_id
from linewatch.schemas.messages import Contribution, Score

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def score(asset: str, modality: str, ts: datetime, tail: float, *, part_id: str | None = None,
          detector: str | None = None, name: str = "x", threshold: float = 3.0, machine_state: str | None = None,
          notes: tuple[str, ...] = (), ready: bool = True, version: str = "v1") -> Score:
    detector = detector or {"spc": "robust_mahalanobis", "frames": "patchcore", "signals": "pca"}[modality]
    key = part_id if part_id is not None else ts.isoformat()
    cal = float(-np.log10(max(tail, 1e-300)))
    expl = [Contribution(name=n, value=0.0, share=0.0) for n in notes]
    expl.append(Contribution(name=name, value=cal, share=1.0))
    return Score(event_id=event_id(modality, asset, key), modality=modality, asset_id=asset, part_id=part_id, ts=ts,
                 detector=detector, model_version=version, raw_score=cal, tail_probability=tail,
                 calibrated_score=cal, threshold=threshold, is_anomaly=cal >= threshold and ready, ready=ready,
                 explanation=expl, machine_state=machine_state)


def plant_scores(asset: str, tails: dict[str, np.ndarray], *, interval_s: float = 10.0, start: datetime = T0,
                 names: dict[str, str] | None = None, machine_state: list[str | None] | None = None) -> list[Score]:
    """One asset's scores: ``tails[modality][i]`` for part (or signals frame) ``i``; spc and frames share part ids."""
    names = names or {}
    out: list[Score] = []
    n = len(next(iter(tails.values())))
    for i in range(n):
        ts = start + timedelta(seconds=i * interval_s)
        state = machine_state[i] if machine_state else None
        for m, t in tails.items():
            part = None if m == "signals" else f"{asset}-P{i:06d}"
            out.append(score(asset, m, ts, float(t[i]), part_id=part, name=names.get(m, f"{m}-feature"),
                             machine_state=state))
    return out


def new_id() -> uuid.UUID:
    return uuid.uuid4()
