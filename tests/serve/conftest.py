"""The inspection API on a real uvicorn in a thread, and small models for it (fitted in about a second).

:func:`serving` starts an :class:`~linewatch.serve.service.InspectionService` behind the real
ASGI app on a free loopback port and yields an ``httpx`` client for it; the service's models come
from the registry (``database_url``) and/or bundles added to its caches directly.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from linewatch.config import Settings
from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.embedded.process import free_port
from linewatch.kafka import make_consumer
from linewatch.serve.http import create_app
from linewatch.serve.server import uvicorn_server
from linewatch.serve.service import InspectionService
from linewatch.simulation.frames import render_batch
from linewatch.training import fit_model
from tests.spc_parts import FEATURES, good_rows

FRAME_SIZE = 64
SOURCE_SKU = "bracket-a"  # what the simulated frames look like
SERVER_START_TIMEOUT_S = 20.0


@dataclass
class Serving:
    client: httpx.Client
    service: InspectionService


@contextmanager
def serving(settings: Settings, *, bootstrap: str, database_url: str | None = None,
            bundles: Sequence[ModelBundle] = ()) -> Iterator[Serving]:
    """The API on a free port with ``settings``; ``bundles`` are served beside the registry's models."""
    service = InspectionService(settings, bootstrap=bootstrap, database_url=database_url)
    for b in bundles:
        (service.spc_models if b.modality == "spc" else service.frame_models).add(b)
    port = free_port()
    server = uvicorn_server(create_app(service), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)  # type: ignore[attr-defined]
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:  # type: ignore[attr-defined]
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the inspection API did not start")
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield Serving(client, service)
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=30)


def read_keyed(bootstrap: str, topic: str, key: bytes, n: int, timeout_s: float = 20.0) -> list[Message]:
    """The first ``n`` messages of ``topic`` with ``key`` (in partition order), read from the beginning."""
    consumer = make_consumer(bootstrap, f"t-{uuid.uuid4().hex}")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in consumer.consume(500, 0.5) if m.error() is None and m.key() == key]
        return got
    finally:
        consumer.close()


def serve_settings(tmp: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp, serve_spool_dir=tmp / "spool", model_refresh_s=1.0, serve_spool_fsync=False,
                    **overrides)


@pytest.fixture(scope="session")
def ewma_bundle() -> ModelBundle:
    """An EWMA chart (state carried per asset) over ``tests.spc_parts``' two characteristics, any scope."""
    return fit_model(good_rows(2000, 0), feature_names=FEATURES, detector="ewma", target_far=0.01, seed=0,
                     scope=Scope())


@pytest.fixture(scope="session")
def good_frames():
    return render_batch(SOURCE_SKU, n=40, size=FRAME_SIZE, seed=0)[0]


@pytest.fixture(scope="session")
def frames_bundle(good_frames) -> ModelBundle:
    """A PatchCore model for the simulated bracket frames at 64 px, for SKU ``bracket-a`` on any camera."""
    return fit_model(good_frames, modality="frames", scope=Scope(sku=SOURCE_SKU), target_far=0.5,
                     calibration_fraction=0.6, detector_params={"image_size": FRAME_SIZE}, seed=0)
