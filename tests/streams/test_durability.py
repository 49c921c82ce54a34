"""Offsets follow durable rows: a worker that loses its database stops without acknowledging,
and the batch it could not store is written after a restart, exactly once."""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from linewatch.embedded.postgres import EmbeddedPostgres
from linewatch.embedded.process import spawn, stop, tail
from linewatch.lifecycle import EXIT_INFRASTRUCTURE, READY_MESSAGE
from linewatch.producers.spc import produce_spc
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.migrations import migrate
from linewatch.training import train_and_register
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _worker(bootstrap: str, db_url: str, data_dir, app_id: str, log_name: str):
    # A short session timeout: Faust joins its group in about one (the worker starts twice here).
    # Health port 0: the default port may be held by another worker on this machine.
    env = {**os.environ, "LINEWATCH_BROKER_URL": bootstrap, "LINEWATCH_DATABASE_URL": db_url,
           "LINEWATCH_DATA_DIR": str(data_dir), "LINEWATCH_APP_ID": app_id, "LINEWATCH_BATCH_WITHIN_S": "0.1",
           "LINEWATCH_DB_RETRY_TOTAL_S": "1", "LINEWATCH_MODEL_REFRESH_S": "1", "LINEWATCH_SESSION_TIMEOUT_S": "3",
           "LINEWATCH_HEALTH_PORT": "0"}
    log = data_dir / log_name
    proc = spawn([sys.executable, "-m", "linewatch", "worker", "--processes", "1", "--log-level", "warn"],
                 log_path=log, env=env)
    deadline = time.monotonic() + 90
    while READY_MESSAGE not in (log.read_text(errors="replace") if log.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, tail(log, 40)
        time.sleep(0.2)
    return proc, log


def _parts(asset: str, n: int, seed: int):
    return simulate_spc(n_parts=n, seed=seed, assets=(asset,), fault_fraction=0.0,
                        start=datetime(2026, 6, 1, tzinfo=UTC).replace(day=1 + seed)).records()


def test_database_loss_stops_the_worker_and_nothing_is_lost_or_doubled(bootstrap, tmp_path):
    pg = EmbeddedPostgres(data_dir=tmp_path / "own-db", fsync=False).start()
    worker = None
    try:
        migrate(pg.url)
        normal = simulate_spc(n_parts=3000, seed=21, fault_fraction=0.0)
        # Hotelling's fits in milliseconds (the default MCD takes ~10 s); what is counted is rows, not alarms.
        train_and_register(normal.X, feature_names=normal.feature_names, database_url=pg.url,
                           model_dir=tmp_path / "models", target_far=0.01, detector="hotelling")
        app_id = f"durability-{uuid.uuid4().hex[:6]}"
        asset = f"dur-{uuid.uuid4().hex[:6]}"
        worker, log = _worker(bootstrap, pg.url, tmp_path, app_id, "worker-1.log")
        produce_spc(bootstrap, _parts(asset, 20, 1))
        count = "SELECT count(*) FROM scores WHERE asset_id = %s"
        assert wait_for(count, (asset,), 20, pg.url) == 20

        port = pg.port
        pg.stop()
        produce_spc(bootstrap, _parts(asset, 20, 2))  # arrives while the database is down
        assert worker.wait(60) == EXIT_INFRASTRUCTURE, tail(log, 40)
        assert "stopping the worker" in log.read_text()

        pg = EmbeddedPostgres(data_dir=tmp_path / "own-db", fsync=False, port=port).start()
        worker, log = _worker(bootstrap, pg.url, tmp_path, app_id, "worker-2.log")
        assert wait_for(count, (asset,), 40, pg.url) == 40
        time.sleep(2)  # anything redelivered twice would land by now
        with psycopg.connect(pg.url) as conn:
            assert conn.execute(count, (asset,)).fetchone()[0] == 40
            assert conn.execute("SELECT count(DISTINCT event_id) FROM spc_measurements WHERE asset_id = %s",
                                (asset,)).fetchone()[0] == 40
    finally:
        stop(worker)
        pg.stop()
