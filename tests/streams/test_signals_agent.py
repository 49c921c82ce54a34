"""The signals path end to end through the real broker, a real worker and the real database."""

from __future__ import annotations

import time
import uuid

import numpy as np
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from linewatch.producers.signals import produce_signals
from linewatch.schemas.codec import decode, encode_envelope
from linewatch.schemas.messages import Score
from linewatch.schemas.signal_rows import SignalFeatureRow
from linewatch.signals.framing import training_frames
from linewatch.signals.windows import SensorWindow, signal_meta_for
from linewatch.simulation.signals import simulate_signals
from linewatch.training import train_and_register
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

#: Rates low enough to keep the test fast; the model is trained on the same rates it scores.
RATES = {"vibration_rate": 2000.0, "current_rate": 500.0}
SNAPSHOT_S = 30.0

@pytest.fixture(scope="module")
def signals_worker(worker) -> object:
    """The session worker (``linewatch worker``), which runs the signals agent beside the others."""
    return worker


@pytest.fixture(scope="module")
def model(settings, database_url):
    healthy = simulate_signals(n_machines=1, duration_s=4 * 3600.0, snapshot_interval_s=SNAPSHOT_S, faults=[],
                               seed=21, **RATES)
    frames = training_frames(healthy.signal_messages(known_good_only=True))
    bundle, _ = train_and_register(frames.X, modality="signals", **frames.provenance(), database_url=database_url,
                                   model_dir=settings.model_dir, detector="dynamic_pca",
                                   detector_params={"lags": 1}, target_far=0.01)
    # The worker looks for new models at most every model_refresh_s: after this, any batch it
    # takes is scored with this version (windows it took before would be stored unscored).
    time.sleep(settings.model_refresh_s + 0.2)
    return bundle


def _windows(asset: str, n_snapshots: int, seed: int) -> list[SensorWindow]:
    sim = simulate_signals(n_machines=1, duration_s=n_snapshots * SNAPSHOT_S, snapshot_interval_s=SNAPSHOT_S,
                           faults=[], seed=seed, start=1_767_225_600.0 + 86400.0 * seed, **RATES)
    return [SensorWindow(asset, w.sensor, w.start, w.sample_rate_hz, w.samples) for w in sim.sensor_windows()]


def _count(database_url: str, sql: str, *params) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_windows_become_feature_rows_and_signal_scores(signals_worker, model, bootstrap, database_url):
    asset = f"sig-{uuid.uuid4().hex[:6]}"
    windows = _windows(asset, 12, seed=1)
    produce_signals(bootstrap, windows)
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s AND modality = 'signals'", (asset,), 12,
                    database_url) == 12
    assert _count(database_url, "SELECT count(*) FROM signal_features WHERE asset_id = %s", asset) == 36
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT ts, detector, model_version, ready, top_feature FROM scores WHERE asset_id = %s ORDER BY ts",
            (asset,)).fetchall()
        temps = conn.execute(
            "SELECT ts, mean, kind, unit, quality, features ->> 'mean' FROM signal_features "
            "WHERE asset_id = %s AND sensor = 'temperature' ORDER BY ts", (asset,)).fetchall()
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'signal_features'")}
        per_minute = conn.execute("SELECT sum(n_windows) FROM signal_features_1m WHERE asset_id = %s",
                                  (asset,)).fetchone()[0]
    assert set(SignalFeatureRow.model_fields) <= cols
    assert per_minute == 36
    assert {r[1] for r in rows} == {"dynamic_pca"} and {r[2] for r in rows} == {model.version}
    assert [r[3] for r in rows] == [False] + [True] * 11  # lags=1: the first frame is warm-up
    assert all(r[4] and "." in r[4] for r in rows[1:])  # "<sensor>.<feature>" is blamed
    expected = [float(w.samples[0]) for w in windows if w.sensor == "temperature"]
    assert [r[1] for r in temps] == pytest.approx(expected, rel=1e-6)
    assert all(r[2] == "temperature" and r[3] == "degC" and r[4] == [] for r in temps)
    assert [float(r[5]) for r in temps] == pytest.approx(expected, rel=1e-6)
    assert [r[0] for r in rows] == [r[0] for r in temps]  # one frame per snapshot, stamped at its start

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    parts = consumer.list_topics("scores", timeout=10).topics["scores"].partitions
    consumer.assign([TopicPartition("scores", p, OFFSET_BEGINNING) for p in parts])
    seen: list[Score] = []
    for _ in range(30):
        seen += [decode(m.value(), Score) for m in consumer.consume(500, 1.0)
                 if m.error() is None and m.key() == asset.encode()]
        if len(seen) >= 12:
            break
    consumer.close()
    assert len(seen) == 12 and all(s.modality == "signals" for s in seen)


def test_garbage_goes_to_deadletters_and_scoring_continues(signals_worker, model, bootstrap, database_url):
    asset = f"sig-{uuid.uuid4().hex[:6]}"
    windows = _windows(asset, 6, seed=2)
    bad_meta = signal_meta_for(windows[0])
    garbage = [b"\x00\x01 not an envelope " + uuid.uuid4().bytes,
               encode_envelope(bad_meta, np.zeros(3, dtype="<f4").tobytes())]  # header says more samples
    produce_signals(bootstrap, windows[:9], extra=garbage)
    produce_signals(bootstrap, windows[9:])
    assert wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), 6, database_url) == 6
    assert wait_for("SELECT count(*) FROM deadletters WHERE source_topic = 'signals' AND payload = ANY(%s)",
                    (garbage,), 2, database_url) == 2
    with psycopg.connect(database_url) as conn:
        reasons = [r[0] for r in conn.execute(
            "SELECT reason FROM deadletters WHERE source_topic = 'signals' AND payload = ANY(%s)", (garbage,))]
    assert any("not a linewatch envelope" in r for r in reasons)
    assert any("float32 samples" in r for r in reasons)
    assert signals_worker.poll() is None, "the worker must survive bad input"
