"""Calibrated scores of a simulated plant without running its detectors: what fusion sees, with known truth.

Fusion's promises (a fused false-alarm rate, false alerts per asset and day, detection of
evidence spread over modalities) are about calibrated tail probabilities, not about any one
detector, so the fusion tests and ``linewatch bench fusion`` drive the engine with scores whose
tails are drawn directly: uniform on normal data (what calibration guarantees), correlated
between modalities and autocorrelated from part to part (charts with memory) when asked
(:func:`normal_tails`), with injected evidence where a scenario wants it.
"""

from __future__ import annotations

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


def normal_tails(n: int, *, phi: float, rho: float, seed: int, k: int = 3) -> np.ndarray:
    """``(n, k)`` tail probabilities of normal events: uniform marginals, latent normals correlated ``rho``
    across the ``k`` modalities and AR(1) with coefficient ``phi`` along the parts."""
    from scipy import stats
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    cov = np.full((k, k), rho) + (1 - rho) * np.eye(k)
    e = rng.multivariate_normal(np.zeros(k), cov, size=n)
    z = lfilter([np.sqrt(1 - phi**2)], [1, -phi], e, axis=0)
    z[0] = e[0]
    return stats.norm.sf(z / z.std(axis=0)) if phi > 0 else stats.norm.sf(e)
