"""The live worker and ``linewatch replay`` on the same multimodal stream: the same score and alert rows.

The plant (one asset, its parts measured and photographed, its spindle sending vibration, current
and temperature, three faults and an idle period) goes through the real broker to the real
worker, which scores, fuses and stores it. Then the replay reads the same topics back from Kafka
and runs them through the replay pipeline. Every score row (every detector's raw score, tail
probability, calibrated score, verdict and explanation) and every alert row must be equal,
field by field; only the wall-clock ``scored_at`` may differ.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from linewatch.detectors.bundle import Scope
from linewatch.plant_models import PlantModels, register_plant_models
from linewatch.producers.plant import produce_plant
from linewatch.replay.kafka_source import KafkaRange, kafka_history
from linewatch.replay.pipeline import ReplayPipeline
from linewatch.schemas.rows import AlertRow, ScoreRow, columns
from linewatch.schemas.topics import FRAMES, MACHINE_STATES, SIGNALS, SPC
from linewatch.simulation.plant import PlantConfig, simulate_plant
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.batch import BatchResult
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SCORE_COLUMNS = [c for c in columns(ScoreRow) if c != "scored_at"]
ALERT_COLUMNS = list(columns(AlertRow))
JSON_COLUMNS = {"explanation", "contributors", "scores"}
#: Plant seconds per wall second: 10 plant minutes in 20 s; fusion's 300 s lateness is then 10 s of worker lag, far
#: more than a worker that keeps up with a line lags (it scores a frame in ~20 ms), even while the suite's other
#: process keeps the second core busy.
SPEED = 30.0


def _scoped(models: PlantModels, asset: str, camera: str) -> PlantModels:
    """Copies of the session's plant models for this asset (SPC, signals) and this camera (frames) only."""
    out = PlantModels()
    out.spc = {d: replace(copy.copy(b), scope=Scope(asset=asset)) for d, b in models.spc.items()}
    out.signals = replace(copy.copy(models.signals), scope=Scope(asset=asset))
    out.frames = {s: replace(copy.copy(b), scope=Scope(sku=s, camera=camera)) for s, b in models.frames.items()}
    return out


def _normalise(row: dict) -> tuple:
    return tuple(json.loads(v) if k in JSON_COLUMNS and isinstance(v, str) else v for k, v in row.items())


def _sorted(rows: list[dict], cols: list[str], order: list[str]) -> list[tuple]:
    rows = sorted(rows, key=lambda r: tuple(r[c] if c == "ts" else str(r[c]) for c in order))
    return [_normalise({c: r[c] for c in cols}) for r in rows]


def _live_rows(database_url: str, table: str, cols: list[str], asset: str, order: list[str]) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE asset_id = %s", (asset,))
        return _sorted([dict(zip(cols, r, strict=True)) for r in cur.fetchall()], cols, order)


def _replay_rows(tuples: list[tuple], row_cols: tuple[str, ...], cols: list[str], order: list[str]) -> list[tuple]:
    return _sorted([dict(zip(row_cols, t, strict=True)) for t in tuples], cols, order)


def test_live_worker_and_replay_write_the_same_scores_and_alerts(worker, bootstrap, database_url, plant_models,
                                                                tmp_path):
    asset, camera = f"rp-{uuid.uuid4().hex[:6]}", f"cam-{uuid.uuid4().hex[:6]}"
    config = PlantConfig(assets=(asset,), camera=camera, duration_s=600.0)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    sim = simulate_plant(config, start=start)
    models = register_plant_models(_scoped(plant_models, asset, camera), database_url=database_url,
                                   model_dir=tmp_path / "models")
    try:
        time.sleep(2.5)  # the worker's model caches refresh every second
        # At the plant's pace (sped up 60x): the scorers keep up, as on a line, so no part is decided
        # without a modality that is merely behind (fusion's lateness, docs/replay.md)
        counts = produce_plant(bootstrap, sim, speed=SPEED)
        n_parts, n_frames = counts[SPC.name], counts[FRAMES.name]
        expected = 2 * n_parts + n_frames + len({m.start for m, _ in sim.signals})  # two SPC detectors
        got = wait_for("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,), expected, database_url,
                       timeout=120)
        assert got == expected
        # fusion is behind the scorers: wait until its alert rows stop changing
        last, stable = -1, 0
        while stable < 3:
            time.sleep(1.0)
            with psycopg.connect(database_url) as conn:
                n = conn.execute("SELECT count(*) FROM alerts WHERE asset_id = %s", (asset,)).fetchone()[0]
            stable, last = (stable + 1, n) if n == last else (0, n)

        cache = ModelCache(database_url=database_url, modalities=("spc", "signals", "frames"), refresh_s=1e9)
        cache.refresh(force=True)
        pipeline = ReplayPipeline(cache, fusion=worker_fusion_config())
        replayed = BatchResult()
        history = list(kafka_history(bootstrap, [MACHINE_STATES.name, SPC.name, SIGNALS.name, FRAMES.name],
                                     KafkaRange(assets=frozenset({asset}))))
        assert len(history) == sum(counts.values())
        for lo in range(0, len(history), 400):
            replayed.merge(pipeline.feed(history[lo:lo + 400]))
        pipeline.close()
    finally:
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE model_versions SET active = false WHERE model_id = ANY(%s)",
                         ([r.model_id for r in models.refs],))

    order = ["ts", "event_id", "detector"]
    live_scores = _live_rows(database_url, "scores", SCORE_COLUMNS, asset, order)
    replay_scores = _replay_rows(replayed.tables[ScoreRow], columns(ScoreRow), SCORE_COLUMNS, order)
    assert len(replay_scores) == len(live_scores) == expected
    differ = [(live, again) for live, again in zip(live_scores, replay_scores, strict=True) if live != again]
    detector = SCORE_COLUMNS.index("detector")
    assert not differ, (f"{len(differ)} of {len(live_scores)} score rows differ, by detector "
                        f"{Counter(a[detector] for a, _ in differ)}; the first:\n{_diff(*differ[0])}")
    assert sum(r[SCORE_COLUMNS.index("is_anomaly")] for r in live_scores) > 20  # the faults were seen

    alert_order = ["ts", "alert_id", "state"]
    live_alerts = _live_rows(database_url, "alerts", ALERT_COLUMNS, asset, alert_order)
    replay_alerts = _replay_rows(replayed.tables[AlertRow], columns(AlertRow), ALERT_COLUMNS, alert_order)
    assert [r[2] for r in live_alerts].count("open") >= 2
    state = ALERT_COLUMNS.index("state")
    assert len(replay_alerts) == len(live_alerts), (
        f"live {[(r[0], r[state]) for r in live_alerts]}\nreplay {[(r[0], r[state]) for r in replay_alerts]}")
    for live, again in zip(live_alerts, replay_alerts, strict=True):
        assert live == again, "\n".join(f"  {c}: live {a!r} replay {b!r}" for c, a, b in
                                        zip(ALERT_COLUMNS, live, again, strict=True) if a != b)


def _diff(live: tuple, again: tuple) -> str:
    return "\n".join(f"  {c}: live {a!r} replay {b!r}" for c, a, b in zip(SCORE_COLUMNS, live, again, strict=True)
                     if a != b) + f"\n  (event {live[1]}, {live[6]})"


def worker_fusion_config():
    from linewatch.config import Settings

    return Settings().fusion_config()
