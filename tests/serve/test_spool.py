"""Kafka away: verdicts are still answered, events wait on disk, nothing is lost when the broker comes back.

The broker here is a real embedded one of the test's own, on a port chosen first: the service is
started while nothing listens there, and the broker is started on that port later.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from linewatch.embedded.broker import EmbeddedBroker
from linewatch.embedded.process import free_port, stop
from linewatch.kafka import ensure_topics
from linewatch.schemas.topics import SPC
from linewatch.serve.lanes import REQUEST_ID_HEADER, VERDICT_HEADER
from linewatch.serve.spool import Event, Forwarder, Spool, SpoolFull
from tests.serve.conftest import read_keyed, serve_settings, serving
from tests.spc_parts import part


def test_segments_survive_a_restart_in_order_and_a_corrupt_one_is_set_aside(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000, max_events=10)
    first = [Event("spc", b"a", b"one", (("h", b"\x00\xff"),)), Event("spc", None, b"two")]
    spool.append(first)
    spool.append([Event("frames", b"b", b"three")])
    (tmp_path / "0000000000000099.tmp").write_bytes(b"half a write")
    again = Spool(tmp_path, max_bytes=10_000, max_events=10)
    assert again.events == 3 and not list(tmp_path.glob("*.tmp"))
    (path_a, events_a), (path_b, events_b) = again.oldest()
    assert events_a == first and events_b == [Event("frames", b"b", b"three")] and path_a < path_b
    again.remove([path_a])
    assert again.events == 1
    path_b.write_bytes(path_b.read_bytes()[:-1] + b"\x00")  # a flipped byte: the checksum no longer holds
    third = Spool(tmp_path, max_bytes=10_000, max_events=10)
    assert third.events == 0 and len(list(tmp_path.glob("*.corrupt"))) == 1


def test_reservations_bound_events_and_bytes(tmp_path):
    spool = Spool(tmp_path, max_bytes=100, max_events=3)
    spool.reserve(2, 10)
    with pytest.raises(SpoolFull, match="serve_spool_max_events=3"):
        spool.reserve(2, 10)
    spool.release(2, 10)
    with pytest.raises(SpoolFull, match="serve_spool_max_bytes=100"):
        spool.reserve(1, 101)
    spool.reserve(3, 100)


@pytest.mark.integration
def test_broker_down_then_back_loses_nothing(tmp_path, ewma_bundle):
    port = free_port()
    asset = f"spool-{uuid.uuid4().hex[:6]}"
    n = 12
    settings = serve_settings(tmp_path, serve_spool_max_events=n)
    broker = EmbeddedBroker(data_dir=tmp_path / "broker", port=port)
    try:
        with serving(settings, bootstrap=f"127.0.0.1:{port}", bundles=[ewma_bundle]) as api:
            ids = []
            for i in range(n):
                record = json.loads(part(asset, i, (0.1 * i, 0.0)).model_dump_json())
                r = api.client.post("/v1/inspect/spc", json=record)
                assert r.status_code == 200, r.text  # the verdict does not wait for Kafka
                rec = r.json()["records"][0]
                assert rec["status"] == "scored" and rec["scores"][0]["detector"] == "ewma"
                ids.append(rec["event_id"])
            assert api.service.spool.events == n
            full = api.client.post("/v1/inspect/spc", json=json.loads(part(asset, n, (0, 0)).model_dump_json()))
            assert full.status_code == 503 and "nothing was scored" in full.json()["reason"], full.text
            assert api.client.get("/readyz").status_code == 503

            broker.start()  # the broker comes (back) on the address the service was given
            ensure_topics(broker.bootstrap, topics=[SPC])
            deadline = time.monotonic() + 30
            while api.service.spool.events and time.monotonic() < deadline:
                time.sleep(0.05)
            assert api.service.spool.events == 0, api.service.forwarder.state()
            assert api.service.forwarder.broker == "up"
        got = read_keyed(broker.bootstrap, SPC.name, asset.encode(), n)
    finally:
        stop(broker.proc, sig=signal.SIGKILL)  # in-memory topics, nothing to flush: Tansu takes seconds on SIGTERM
    events = [json.loads(m.value()) for m in got]
    assert [f"p{i:02d}" for i in range(n)] == [e["part_id"] for e in events]  # every one, in order
    headers = [dict(m.headers()) for m in got]
    assert all(json.loads(h[VERDICT_HEADER])["detectors"]["ewma"]["version"] == ewma_bundle.version
               for h in headers)
    assert all(h[REQUEST_ID_HEADER] for h in headers)
    assert len(ids) == len(set(ids)) == n


def test_an_event_the_producer_refuses_is_set_aside_not_lost_and_the_rest_flows(tmp_path):
    spool = Spool(tmp_path, max_bytes=10**8, max_events=10)
    spool.append([Event("frames", b"a", b"x" * 2_000_000)])  # over librdkafka's message.max.bytes
    forwarder = Forwarder(spool, f"127.0.0.1:{free_port()}").start()
    try:
        deadline = time.monotonic() + 10
        while spool.events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        forwarder.stop(drain_s=0)
    assert spool.events == 0 and len(list(tmp_path.glob("*.undeliverable"))) == 1
    assert "refused" in (forwarder.last_error or "")
