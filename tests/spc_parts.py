"""SPC parts built by hand (not by the simulators, which change under us): known centre and σ per characteristic.

Two characteristics: ``bore_mm`` (centre 25, σ 0.01) and ``runout_um`` (centre 10, σ 2). The
helpers place a live part a given number of σ from the centre, so a test says which run rule it
expects and where.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from linewatch.schemas.messages import SpcRecord

FEATURES = ("bore_mm", "runout_um")
CENTER = np.array([25.0, 10.0])
SIGMA = np.array([0.01, 2.0])
#: First live part's time: 10:00 UTC, inside the training hours (06-21) of :func:`good_context`.
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def good_rows(n: int, seed: int) -> np.ndarray:
    """Known-good ``(n, 2)`` rows: independent normal noise around the centres."""
    return CENTER + SIGMA * np.random.default_rng(seed).normal(size=(n, 2))


def good_context(n: int, asset: str) -> dict[str, Any]:
    """Training context: one asset, shifts ``early``/``late``, lot ``L1``, running, hours 06-21 UTC."""
    hours = 6 + (np.arange(n) * 16) // n
    ts = np.datetime64("2026-03-01T00:00", "m") + hours.astype("timedelta64[h]")
    return {"asset": [asset] * n, "shift": np.where(hours < 14, "early", "late"), "lot": ["L1"] * n,
            "machine_state": ["running"] * n, "hour": ts}


def part(asset: str, i: int, z: tuple[float, float], *, minutes: int | None = None, **context: Any) -> SpcRecord:
    """Part ``i`` of ``asset`` with each characteristic ``z`` σ from its centre (``context``: shift, lot ...)."""
    values = CENTER + SIGMA * np.asarray(z)
    ts = START + timedelta(minutes=i if minutes is None else minutes)
    fields: dict[str, Any] = {"shift": "early", "lot": "L1", "machine_state": "running", **context}
    return SpcRecord(asset_id=asset, part_id=f"p{i:02d}", ts=ts,
                     values=dict(zip(FEATURES, map(float, values), strict=True)), **fields)
