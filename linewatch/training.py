"""Fit a model on known-good data, save it as a version and make it the active one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import psycopg

from linewatch.detectors.bundle import ModelBundle
from linewatch.storage.model_registry import ANY, ModelRef, save_and_register


def train_and_register(
    X: np.ndarray,
    *,
    feature_names: list[str] | tuple[str, ...],
    database_url: str,
    model_dir: Path,
    modality: str = "spc",
    detector: str = "robust_mahalanobis",
    calibration: str = "auto",
    target_far: float = 1e-3,
    seed: int = 0,
    scope_asset: str = ANY,
    scope_sku: str = ANY,
    train_start: datetime | None = None,
    train_end: datetime | None = None,
) -> tuple[ModelBundle, ModelRef]:
    """The one training path the CLI, the demo and the tests use."""
    bundle = ModelBundle.fit(
        detector, X, feature_names=feature_names, calibration=calibration, target_far=target_far, seed=seed,
        meta={"train_start": train_start.isoformat() if train_start else None,
              "train_end": train_end.isoformat() if train_end else None,
              "scope_asset": scope_asset, "scope_sku": scope_sku},
    )
    with psycopg.connect(database_url) as conn:
        ref = save_and_register(conn, bundle, model_dir=model_dir, modality=modality,
                                scope_asset=scope_asset, scope_sku=scope_sku)
    return bundle, ref
