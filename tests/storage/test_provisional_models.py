"""A model whose data cannot resolve its target is registered as provisional, with its report, in SQL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from linewatch.detectors.bundle import Scope
from linewatch.simulation.spc import simulate_spc
from linewatch.training import train_and_register

pytestmark = pytest.mark.integration


def test_provisional_and_resolved_models_are_told_apart_in_sql(database_url, tmp_path):
    asset = f"press-{uuid.uuid4().hex[:6]}"
    # Strongly autocorrelated, lot-switching parts: 3000 of them resolve 1 %, not 0.01 %.
    sim = simulate_spc(n_parts=3000, assets=(asset,), seed=5, fault_fraction=0.0, autocorrelation=0.8,
                       regime_shift_sigma=1.0)
    refs = {}
    for far in (1e-2, 1e-4):
        bundle, refs[far] = train_and_register(
            sim.X, modality="spc", detector="ewma", feature_names=sim.feature_names, scope=Scope(asset),
            target_far=far, database_url=database_url, model_dir=tmp_path)
        assert bundle.provisional is (far == 1e-4)
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute(
            "SELECT (calibration->>'target_far')::float, provisional FROM model_versions WHERE scope_asset = %s",
            (asset,)).fetchall())
        ess, lo, hi, warnings = conn.execute(
            """SELECT (calibration->'report'->>'effective_sample_size')::float,
                      (calibration->'report'->'far_interval_90'->>0)::float,
                      (calibration->'report'->'far_interval_90'->>1)::float,
                      calibration->'report'->'warnings'
               FROM model_versions WHERE model_id = %s AND version = %s""",
            (refs[1e-4].model_id, refs[1e-4].version)).fetchone()
    assert rows == {1e-2: False, 1e-4: True}
    assert 100 < ess < 3000 and lo < 1e-4 < hi
    assert len(warnings) == 1 and "--target-far" in warnings[0]
