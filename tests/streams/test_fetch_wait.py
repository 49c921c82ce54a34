"""The worker's consumer really fetches with ``Settings.fetch_max_wait_ms``, not Faust's fixed 1500 ms.

The consumer is built by the app's own transport exactly as a worker builds it, started against
the test broker (which creates aiokafka's fetcher), and the fetcher's wait is read back; no Faust
worker is started.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import faust
import pytest

from linewatch.config import DEFAULT_FETCH_MAX_WAIT_MS, Settings
from linewatch.streams.app import KafkaTransport, faust_settings, new_app

pytestmark = pytest.mark.integration

FAUST_FIXED_FETCH_WAIT_MS = 1500


def _settings(bootstrap: str, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(broker_url=bootstrap, database_url="postgresql://unused/x", data_dir=tmp_path,
                    app_id=f"fetch-wait-{uuid.uuid4().hex[:8]}", **overrides)


def _started_fetch_wait(app: faust.App) -> int:
    """Build the app's worker consumer as its consumer thread does, start it, return its fetcher's wait."""

    async def run() -> int:
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.start()
        try:
            return consumer._fetcher._fetch_max_wait_ms
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_worker_consumer_gets_the_configured_fetch_wait(bootstrap: str, tmp_path: Path) -> None:
    app = new_app(_settings(bootstrap, tmp_path, fetch_max_wait_ms=37), bootstrap)
    assert isinstance(app.transport, KafkaTransport)
    assert _started_fetch_wait(app) == 37


def test_default_is_linewatch_not_faust(bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINEWATCH_FETCH_MAX_WAIT_MS", raising=False)
    settings = _settings(bootstrap, tmp_path)
    assert _started_fetch_wait(new_app(settings, bootstrap)) == DEFAULT_FETCH_MAX_WAIT_MS
    # Why the transport exists: a plain Faust app with the same settings gets Faust's fixed wait.
    plain = faust.App(settings.app_id + "-plain", **faust_settings(settings, bootstrap))
    assert _started_fetch_wait(plain) == FAUST_FIXED_FETCH_WAIT_MS


def test_environment_variable_reaches_the_consumer(bootstrap: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEWATCH_FETCH_MAX_WAIT_MS", "250")
    assert _started_fetch_wait(new_app(_settings(bootstrap, tmp_path), bootstrap)) == 250
