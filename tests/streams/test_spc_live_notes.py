"""Run rules and training coverage live: through the real broker, the real worker and the real database."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from pydantic import TypeAdapter

from linewatch.detectors.bundle import Scope
from linewatch.producers.spc import produce_spc
from linewatch.schemas.messages import Contribution
from linewatch.training import train_and_register
from tests.conftest import wait_for
from tests.spc_parts import FEATURES, good_context, good_rows, part

pytestmark = pytest.mark.integration

#: The worker refreshes its models every second (LINEWATCH_MODEL_REFRESH_S=1 in the fixture).
PROBES = 30


def _scored_by(database_url: str, asset: str, part_id: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT model_version FROM scores WHERE asset_id = %s AND part_id = %s",
                           (asset, part_id)).fetchone()
    return row[0] if row else None


def test_rule_violations_and_unseen_context_reach_the_score_rows(worker, settings, bootstrap, database_url):
    asset = f"rules-{uuid.uuid4().hex[:6]}"
    bundle, ref = train_and_register(
        good_rows(3000, 50), feature_names=FEATURES, database_url=database_url, model_dir=settings.model_dir,
        detector="robust_mahalanobis", target_far=0.01, scope=Scope(asset=asset), context=good_context(3000, asset),
        calibration_fraction=0.3)  # one robust fit, not six cross-fitted ones: the test is about the live notes
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT coverage FROM model_versions WHERE model_id = %s AND version = %s",
                              (ref.model_id, ref.version)).fetchone()[0]
    assert stored["counts"]["shift"] == {"early": 1500, "late": 1500} and stored["counts"]["hour"]["03"] == 0

    # Probes sit exactly on the centre line (z = 0: on neither side), so they start no run of their own.
    center = bundle.meta["run_rules"]["center"]
    for k in range(PROBES):
        probe = part(asset, 90 + k, (0.0, 0.0))
        probe = probe.model_copy(update={"values": dict(zip(FEATURES, center, strict=True)), "part_id": f"probe-{k}"})
        produce_spc(bootstrap, [probe])
        wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND part_id = %s", (asset, probe.part_id), 1,
                 database_url, timeout=10)
        if _scored_by(database_url, asset, probe.part_id) == bundle.version:
            break
    else:
        pytest.fail("the worker never served the new model")

    # bore 0.5σ above centre part after part; runout alternates around its centre (no pattern).
    recs = [part(asset, i, (0.5, 0.3 if i % 2 else -0.3)) for i in range(10)]
    recs[8] = recs[8].model_copy(update={"lot": "L2"})
    recs[9] = part(asset, 9, (0.5, 0.3), shift="night", minutes=17 * 60)  # 03:00 UTC the next day
    produce_spc(bootstrap, recs[:5])
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND part_id < 'p90'", (asset,), 5,
                    database_url) == 5
    produce_spc(bootstrap, recs[5:])  # a later batch: the run of eight spans the two
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND part_id < 'p90'", (asset,), 10,
                    database_url) == 10

    with psycopg.connect(database_url) as conn:
        rules = conn.execute("SELECT part_id, characteristic, rule, z, model_version FROM spc_rule_violations "
                             "WHERE asset_id = %s ORDER BY part_id", (asset,)).fetchall()
        unseen = conn.execute("SELECT part_id, dimension, note FROM scores_unseen_context WHERE asset_id = %s "
                              "ORDER BY part_id, dimension", (asset,)).fetchall()
        expl = conn.execute("SELECT explanation, top_feature FROM scores WHERE asset_id = %s AND part_id = 'p09'",
                            (asset,)).fetchone()
    assert [(r[0], r[1], r[2]) for r in rules] == [("p07", "bore_mm", "we4"), ("p08", "bore_mm", "we4"),
                                                   ("p09", "bore_mm", "we4")]
    assert all(abs(r[3] - 0.5) < 0.1 and r[4] == bundle.version for r in rules)
    assert unseen == [("p08", "lot", "lot=L2 never in training"), ("p09", "hour", "hour 03 never in training"),
                      ("p09", "shift", "shift=night never in training")]
    entries = TypeAdapter(list[Contribution]).validate_json(json.dumps(expl[0]))
    assert [e.kind for e in entries] == ["feature", "feature", "rule", "unseen_context", "unseen_context"]
    assert expl[1] in FEATURES  # top_feature is still the score's own first contribution
