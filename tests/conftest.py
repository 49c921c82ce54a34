"""Session fixtures: a real Kafka-protocol broker, a real PostgreSQL and a real Faust worker.

They start once per test session (about two seconds for the services, a few more for the
worker to join its group) and stop at the end; tests that need them are marked
``integration`` and isolate themselves by using their own asset ids. The suite runs on two
processes (pytest-xdist, a test module at a time each: ``addopts`` in pyproject.toml), each with its
own session services; ``-n 0`` runs it in one.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from linewatch.config import Settings
from linewatch.embedded.process import free_port, spawn, stop, tail
from linewatch.embedded.stack import Stack
from linewatch.kafka import ensure_topics
from linewatch.storage.migrations import migrate

WORKER_READY_TIMEOUT_S = 90.0

@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("linewatch")
    with Stack(Settings(data_dir=data_dir), fsync=False) as st:
        ensure_topics(st.bootstrap)
        migrate(st.database_url)
        yield st


@pytest.fixture(scope="session")
def plant_models() -> object:
    """The simulated plant's fitted models (every modality, wildcard scopes; ~17 s): fitted once per session.

    Tests that register them must scope copies to their own assets (or deactivate them after), so
    the other tests' events never meet them.
    """
    from linewatch.plant_models import fit_plant_models
    from linewatch.simulation.plant import PlantConfig

    return fit_plant_models(PlantConfig())


@pytest.fixture(scope="session")
def bootstrap(stack: Stack) -> str:
    return stack.bootstrap


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    return stack.database_url


@pytest.fixture(scope="session")
def settings(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        broker_url=stack.bootstrap,
        database_url=stack.database_url,
        data_dir=tmp_path_factory.mktemp("worker"),
        app_id=f"linewatch-test-{uuid.uuid4().hex[:8]}",
        model_refresh_s=1.0,
        batch_within_s=0.1,
        health_port=free_port(),  # not the default: other workers on this machine may hold it
    )


@pytest.fixture(scope="session")
def worker(settings: Settings) -> Iterator[object]:
    """The real worker (``python -m linewatch worker``) as a child process, ready when it holds partitions."""
    from linewatch.lifecycle import READY_MESSAGE

    env = dict(os.environ)
    env.update({
        "LINEWATCH_BROKER_URL": settings.broker_url or "",
        "LINEWATCH_DATABASE_URL": settings.database_url.get_secret_value() if settings.database_url else "",
        "LINEWATCH_DATA_DIR": str(settings.data_dir),
        "LINEWATCH_APP_ID": settings.app_id,
        "LINEWATCH_MODEL_REFRESH_S": "1",
        "LINEWATCH_BATCH_WITHIN_S": "0.1",
        "LINEWATCH_HEALTH_PORT": str(settings.health_port),
    })
    log_path = Path(settings.data_dir) / "worker.log"
    proc = spawn([sys.executable, "-m", "linewatch", "worker", "--processes", "1", "--log-level", "warn"],
                 log_path=log_path, env=env)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while READY_MESSAGE not in (log_path.read_text(errors="replace") if log_path.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"worker did not become ready:\n{tail(log_path, 40)}")
        time.sleep(0.2)
    proc.log_path = log_path  # type: ignore[attr-defined]
    yield proc
    stop(proc, sig=signal.SIGTERM, timeout=30)


def wait_for(query: str, params: tuple, expected: int, database_url: str, timeout: float = 60.0) -> int:
    """Poll a ``SELECT count(*)`` until it reaches ``expected``; returns the last count."""
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            n = conn.execute(query, params).fetchone()[0]
        if n >= expected:
            return n
        time.sleep(0.2)
    return n
