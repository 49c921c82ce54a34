"""A shadow (challenger) SPC version scores the same stream as its champion through the real worker.

Its rows land in ``shadow_scores`` only, its messages on the ``shadow_scores`` topic only; the
champion's scores are exactly what the champion alone gives (so the two never share chart
memory), and promotion then makes the challenger the champion.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.producers.spc import produce_spc
from linewatch.schemas.codec import decode, encode
from linewatch.schemas.messages import Score
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.promotion import promote
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch
from linewatch.training import train_and_register
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

N_PARTS = 120
#: Parts per produced chunk (and per offline batch).
CHUNK = 30


class Fixed:
    """A model source serving a fixed list of bundles to every event (the offline reference)."""

    def __init__(self, bundles: list[ModelBundle]) -> None:
        self.bundles = bundles

    def models_for(self, modality, asset_id, sku, camera="*"):
        return self.bundles


def _loaded(ref, *, shadow: bool) -> ModelBundle:
    """The version as a worker holds it: loaded from its saved files, marked the way the cache marks it."""
    bundle = ModelBundle.load(ref.artifact_path)
    bundle.meta["version"], bundle.meta["shadow"] = ref.version, shadow
    return bundle


def _scores_on(bootstrap: str, topic: str, key: bytes, versions: set[str], expected: int) -> list[Score]:
    """``topic``'s scores of the given model versions for one asset (other tests' models may score it too)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def take(timeout: float) -> list[Score]:
        found = [decode(m.value(), Score) for m in consumer.consume(500, timeout)
                 if m.error() is None and m.key() == key]
        return [s for s in found if s.model_version in versions]

    out: list[Score] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(out) < expected:
        out += take(0.5)
    out += take(1.0)  # a little longer: anything more than expected would be a duplicate or a leak
    consumer.close()
    return out


def _rows(database_url: str, table: str, asset: str, version: str) -> dict[uuid.UUID, tuple[float, float, bool]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f"SELECT event_id, raw_score, calibrated_score, is_anomaly FROM {table} "
                            "WHERE asset_id = %s AND model_version = %s", (asset, version)).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_a_shadow_version_scores_beside_the_champion_and_never_reaches_scores(worker, settings, bootstrap,
                                                                               database_url):
    asset, probe = f"sh-{uuid.uuid4().hex[:6]}", f"shp-{uuid.uuid4().hex[:6]}"
    normal = simulate_spc(n_parts=1500, seed=21, fault_fraction=0.0, assets=(asset,))
    common = {"feature_names": normal.feature_names, "database_url": database_url, "model_dir": settings.model_dir,
              "detector": "ewma", "target_far": 0.01, "scope": Scope(asset)}
    _, champion = train_and_register(normal.X, seed=0, **common)
    # The challenger: the same chart with a faster memory, so the two must disagree somewhere.
    _, shadow = train_and_register(normal.X, seed=1, shadow=True, detector_params={"lam": 0.4}, **common)
    assert shadow.shadow and not champion.shadow
    # A shadow of its own for a probe asset, registered last: once the worker scores the probe with
    # it, the refresh that loaded it has loaded the asset's two versions too.
    _, probe_ref = train_and_register(normal.X, seed=2, shadow=True, **{**common, "scope": Scope(probe)})
    for i in range(60):
        start = datetime(2026, 4, 1, tzinfo=UTC) + timedelta(minutes=i)
        produce_spc(bootstrap, simulate_spc(n_parts=1, seed=100 + i, fault_fraction=0.0, assets=(probe,),
                                            start=start).records())
        if wait_for("SELECT count(*) FROM shadow_scores WHERE asset_id = %s", (probe,), 1, database_url,
                    timeout=1.0) >= 1:
            break
    else:
        pytest.fail("the worker never served the probe's shadow version")
    # The probe's version is a shadow without a champion of its model id: it scored into shadow_scores only.
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND model_version = %s",
                    (probe, probe_ref.version), 1, database_url, timeout=1) == 0

    live = simulate_spc(n_parts=N_PARTS, seed=22, fault_fraction=0.3, assets=(asset,), episode_length=15,
                        start=datetime(2026, 4, 2, tzinfo=UTC))
    records = [r.model_copy(update={"machine_state": "running"}) for r in live.records()]
    for chunk in range(0, N_PARTS, CHUNK):  # several batches: chart memory must carry across them
        produce_spc(bootstrap, records[chunk : chunk + CHUNK])
        time.sleep(0.3)
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND model_version = %s",
                    (asset, champion.version), N_PARTS, database_url) == N_PARTS
    assert wait_for("SELECT count(*) FROM shadow_scores WHERE asset_id = %s AND model_version = %s",
                    (asset, shadow.version), N_PARTS, database_url) == N_PARTS
    # Never the other way round.
    assert not _rows(database_url, "scores", asset, shadow.version)
    assert not _rows(database_url, "shadow_scores", asset, champion.version)

    # The champion's scores are the champion's alone: exactly what it gives with no shadow beside it.
    msgs = [RawMessage("spc", 0, i, asset.encode(), encode(r)) for i, r in enumerate(records)]
    alone = score_spc_batch(msgs, Fixed([_loaded(champion, shadow=False)]), StreamStates())
    both_models, both_states = Fixed([_loaded(champion, shadow=False), _loaded(shadow, shadow=True)]), StreamStates()
    both = BatchResult()
    for chunk in range(0, N_PARTS, CHUNK):
        both.merge(score_spc_batch(msgs[chunk : chunk + CHUNK], both_models, both_states))
    expected_champion = {r[1]: (r[8], r[10], r[12]) for r in alone.scores}
    expected_shadow = {r[1]: (r[8], r[10], r[12]) for r in both.shadow_scores}
    got_champion = _rows(database_url, "scores", asset, champion.version)
    got_shadow = _rows(database_url, "shadow_scores", asset, shadow.version)
    assert got_champion.keys() == expected_champion.keys() == {r.event_id for r in records}
    for eid, (raw, cal, flag) in expected_champion.items():
        assert got_champion[eid] == (pytest.approx(raw, rel=1e-12), pytest.approx(cal, rel=1e-12), flag)
    # ... and the shadow's are its own chart's (a shared chart would have moved twice per part).
    for eid, (raw, _, _) in expected_shadow.items():
        assert got_shadow[eid][0] == pytest.approx(raw, rel=1e-12)
    champion_raw = np.array([got_champion[r.event_id][0] for r in records])
    shadow_raw = np.array([got_shadow[r.event_id][0] for r in records])
    assert not np.allclose(champion_raw, shadow_raw), "two different charts must not score identically"
    assert {r[1]: (r[8], r[10], r[12]) for r in both.scores} == expected_champion

    # Messages: the shadow's on shadow_scores only, marked; the champion's on scores only.
    key, versions = asset.encode(), {champion.version, shadow.version}
    on_shadow = _scores_on(bootstrap, "shadow_scores", key, versions, N_PARTS)
    on_scores = _scores_on(bootstrap, "scores", key, versions, N_PARTS)
    assert sorted(s.event_id for s in on_shadow) == sorted(r.event_id for r in records)
    assert all(s.shadow and s.model_version == shadow.version for s in on_shadow)
    assert sorted(s.event_id for s in on_scores) == sorted(r.event_id for r in records)
    assert all(not s.shadow and s.model_version == champion.version for s in on_scores)
    assert {s.machine_state for s in on_scores + on_shadow} == {"running"}

    # Promotion: the challenger becomes the champion; the next parts score into `scores` with it.
    with psycopg.connect(database_url) as conn:
        done = promote(conn, shadow.model_id, shadow.version, actor="qa-lead", note="fewer false alarms")
        rows = conn.execute("SELECT version, active, shadow FROM model_versions WHERE model_id = %s "
                            "ORDER BY created_at", (shadow.model_id,)).fetchall()
        recorded = conn.execute("SELECT previous, actor, note FROM model_promotions WHERE model_id = %s "
                                "AND version = %s", (shadow.model_id, shadow.version)).fetchall()
    assert done.previous == champion.version
    assert rows == [(champion.version, False, False), (shadow.version, True, False)]
    assert recorded == [(champion.version, "qa-lead", "fewer false alarms")]
    after = [r.model_copy(update={"ts": r.ts + timedelta(days=1)}) for r in live.records()[:10]]
    for _ in range(30):
        produce_spc(bootstrap, after)
        if wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND model_version = %s",
                    (asset, shadow.version), 10, database_url, timeout=1.0) >= 10:
            break
        after = [r.model_copy(update={"ts": r.ts + timedelta(hours=1)}) for r in after]  # new event ids
    else:
        pytest.fail("the promoted version never scored into `scores`")
    assert worker.poll() is None
