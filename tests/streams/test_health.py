"""The worker's ``/health`` and ``linewatch status``: the report's rules on synthetic data, then the real worker."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from linewatch.cli import app as cli_app
from linewatch.cli.status import normalize_url
from linewatch.config import Settings
from linewatch.lifecycle import DIE_WITH_PARENT_ENV, HEALTH_URL_MESSAGE
from linewatch.streams import runtime as runtime_module
from linewatch.streams.batch import BatchResult
from linewatch.streams.health import PartitionLag, health_port, health_report, partition_lag, status_code
from linewatch.streams.isolated import IsolatedRuntime
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import MAX_DEADLETTER_REASONS, OTHER_REASONS, BatchRuntime

NOW = 1_780_000_000.0


def _runtime(sink: str = "ok", **extra: Any) -> dict[str, Any]:
    """A runtime snapshot as ``BatchRuntime.health`` makes one."""
    return {"modality": "spc", "unit": "records", "pid": 42, "processed": 120, "batches": 3,
            "counts": {"records": 120, "scores": 120}, "sink": sink, "last_batch_at": NOW - 2.5,
            "deadletters": 2, "deadletters_by_reason": {"invalid JSON": 2}, "models": {"spc:*:*:hotelling": "v1"},
            **extra}


TOPICS = {"spc": "spc", "signals": "signals", "frames": "frames"}


def _report(runtimes: dict[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return health_report(runtimes, topics=TOPICS, uptime_s=12.0, now=NOW, app_id="lw", pid=7, **kw)


def test_report_per_agent_lag_last_batch_models_and_dead_letters() -> None:
    lag = [PartitionLag("spc", 1, 10, 15, 5), PartitionLag("spc", 0, None, 4, 4),
           PartitionLag("signals", 0, 7, 7, 0), PartitionLag("frames", 2, 3, None, None)]
    report = _report({"spc": _runtime(), "signals": _runtime(processed=0, last_batch_at=None),
                      "frames": _runtime()}, lag=lag)
    assert (report["status"], report["healthy"], status_code(report)) == ("ok", True, 200)
    assert report["uptime_s"] == 12.0 and report["app_id"] == "lw"
    spc = report["agents"]["spc"]
    assert [p["partition"] for p in spc["partitions"]] == [0, 1]  # sorted, only this agent's topic
    assert spc["partitions"][0] == {"partition": 0, "committed": None, "high_watermark": 4, "lag": 4}
    assert spc["lag"] == 9
    assert spc["last_batch_age_s"] == 2.5 and spc["last_batch_at"].endswith("Z")
    assert spc["deadletters_by_reason"] == {"invalid JSON": 2}
    assert spc["models"] == {"spc:*:*:hotelling": "v1"}
    assert (spc["processed"], spc["unit"], spc["sink"]) == (120, "records", "ok")
    signals = report["agents"]["signals"]
    assert signals["last_batch_at"] is None and signals["last_batch_age_s"] is None and signals["lag"] == 0
    assert report["agents"]["frames"]["lag"] is None  # watermarks unknown: no figure rather than a wrong one
    json.dumps(report)  # the endpoint serves it as is


def test_the_worst_agent_decides_and_only_down_or_unresponsive_fail() -> None:
    retrying = _report({"spc": _runtime("retrying"), "signals": _runtime()})
    assert (retrying["status"], status_code(retrying)) == ("retrying", 200)
    down = _report({"spc": _runtime("retrying"), "signals": _runtime("down")})
    assert (down["status"], down["healthy"], status_code(down)) == ("down", False, 503)
    starting = _report({"spc": {"modality": "spc", "sink": "unknown", "starting": True, "error": "not yet"},
                        "signals": _runtime()})
    assert (starting["status"], status_code(starting)) == ("starting", 200)
    assert starting["agents"]["spc"]["error"] == "not yet"
    gone = _report({"spc": {"modality": "spc", "sink": "unknown", "starting": False, "error": "no answer"}})
    assert (gone["status"], status_code(gone)) == ("unresponsive", 503)


def test_partition_lag_takes_the_best_lower_bound_of_the_log_end() -> None:
    # Tansu answers ListOffsets short of a multi-record batch; the fetch response and the commit are right.
    assert partition_lag("spc", 0, committed=5, low=0, highs=(3, 9)) == PartitionLag("spc", 0, 5, 9, 4)
    assert partition_lag("spc", 0, committed=None, low=2, highs=(6, None)).lag == 4
    assert partition_lag("spc", 0, committed=None, low=None, highs=(None, None)) == PartitionLag("spc", 0, None, None,
                                                                                                None)


def test_lag_error_is_reported_without_failing_the_check() -> None:
    report = _report({"spc": _runtime()}, lag_error="could not read committed offsets")
    assert report["lag_error"] == "could not read committed offsets" and status_code(report) == 200
    assert report["agents"]["spc"]["partitions"] == [] and report["agents"]["spc"]["lag"] == 0


class _Runtime(BatchRuntime):
    modality = "spc"
    unit = "records"
    train_hint = "linewatch train spc"

    def score(self, messages: list[RawMessage]) -> BatchResult:
        result = BatchResult()
        for m in messages:
            result.deadletters.add(m, ValueError(f"bad value {m.offset} " + "x" * 100))
        result.counts["records"] += len(messages)
        return result


def test_runtime_health_counts_reasons_by_prefix_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "Publisher", lambda *a, **kw: None)  # no broker needed here
    rt = _Runtime(settings=Settings(broker_url="127.0.0.1:1", database_url="postgresql://u@127.0.0.1:1/db"),
                  bootstrap="127.0.0.1:1", database_url="postgresql://u@127.0.0.1:1/db",
                  logger=logging.getLogger("test-health"))
    before = rt.health()
    assert (before["sink"], before["processed"], before["last_batch_at"], before["models"]) == ("ok", 0, None, {})
    messages = [RawMessage("spc", 0, i, None, b"{}") for i in range(MAX_DEADLETTER_REASONS + 5)]
    rt._count(rt.score(messages))
    h = rt.health()
    assert h["processed"] == len(messages) and h["batches"] == 1 and h["last_batch_at"] is not None
    reasons = h["deadletters_by_reason"]
    assert len(reasons) == MAX_DEADLETTER_REASONS + 1 and reasons[OTHER_REASONS] == 5
    assert all(len(r) <= 80 for r in reasons)
    assert sum(reasons.values()) == h["deadletters"] == len(messages)
    json.dumps(h)


class _BlockingRuntime:
    """Stands in for a runtime in the scoring child: its batch blocks until a file appears."""

    modality = "spc"

    def __init__(self, release: str) -> None:
        self.release = Path(release)
        self.batches = 0

    def process(self, messages: list[RawMessage]) -> BatchResult:
        while not self.release.exists():
            time.sleep(0.01)
        self.batches += 1
        return BatchResult()

    def health(self) -> dict[str, Any]:
        return {"modality": "spc", "sink": "retrying" if not self.release.exists() else "ok",
                "batches": self.batches}


def _blocking_runtime(release: str) -> _BlockingRuntime:
    return _BlockingRuntime(release)


def test_isolated_runtime_answers_health_while_its_child_is_busy(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from functools import partial

    monkeypatch.setenv(DIE_WITH_PARENT_ENV, "")  # IsolatedRuntime sets it for its child; undone after the test
    release = tmp_path / "release"
    rt = IsolatedRuntime(partial(_blocking_runtime, str(release)), modality="spc", logger=logging.getLogger())
    # A long-lived batch thread, as the agent's: the child is spawned from it and its parent-death
    # signal follows that thread (Linux PR_SET_PDEATHSIG), so the thread must outlive the checks.
    agent_thread = ThreadPoolExecutor(max_workers=1)
    try:
        assert rt.health(timeout=0.1)["starting"] is True  # no child before the first task
        batch = agent_thread.submit(rt.process, [])  # spawns the child, whose one worker then blocks in the batch
        deadline = time.monotonic() + 60
        while (h := rt.health(timeout=1.0)).get("sink") == "unknown":
            assert time.monotonic() < deadline, h
        assert h == {"modality": "spc", "sink": "retrying", "batches": 0}  # answered mid-batch
        release.touch()
        batch.result(30)
        assert rt.health() == {"modality": "spc", "sink": "ok", "batches": 1}
    finally:
        release.touch()
        rt.shutdown()
        agent_thread.shutdown()


def test_health_port_falls_back_to_a_free_port_when_taken() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = health_port("127.0.0.1", taken)
        assert port != taken and port > 0
    assert health_port("127.0.0.1", 0) > 0


def test_status_urls_are_normalized() -> None:
    assert normalize_url("w1:6066") == "http://w1:6066/health"
    assert normalize_url("https://w1:6066/x/health/") == "https://w1:6066/x/health"


@pytest.fixture
def fake_worker() -> Iterator[tuple[str, dict[str, Any]]]:
    """A tiny HTTP server that answers like a worker's /health, with whatever the test puts in ``state``."""
    state: dict[str, Any] = {"status": 200, "body": {}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state["body"]).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def test_status_prints_tables_and_exits_1_when_a_sink_is_down(fake_worker) -> None:
    url, state = fake_worker
    lag = [PartitionLag("spc", 0, 5, 8, 3)]
    state["body"] = _report({"spc": _runtime(), "signals": _runtime()}, lag=lag)
    ok = CliRunner().invoke(cli_app, ["status", "--url", url])
    assert ok.exit_code == 0, ok.output
    assert "invalid JSON" in ok.output and "spc:*:*:hotelling" in ok.output and "lag per partition" in ok.output

    state["status"], state["body"] = 503, _report({"spc": _runtime("down"), "signals": _runtime()})
    down = CliRunner().invoke(cli_app, ["status", "--url", url, "--json"])
    assert down.exit_code == 1
    out = json.loads(down.stdout)
    assert out["healthy"] is False and out["workers"][0]["http_status"] == 503
    assert "spc agent down" in str(down.exception) and "LINEWATCH_DATABASE_URL" in str(down.exception)


def test_status_says_what_to_check_when_nobody_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    result = CliRunner().invoke(cli_app, ["status", "--url", f"127.0.0.1:{port}", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["workers"][0]["error"].startswith("no answer")
    assert HEALTH_URL_MESSAGE in str(result.exception)


@pytest.mark.integration
def test_the_real_worker_serves_health_and_linewatch_status_reads_it(worker, settings, bootstrap) -> None:
    from linewatch.producers.spc import produce_spc

    url = f"http://127.0.0.1:{settings.health_port}/health"
    deadline = time.monotonic() + 60
    while HEALTH_URL_MESSAGE not in worker.log_path.read_text(errors="replace"):
        assert worker.poll() is None and time.monotonic() < deadline, "the worker never logged its health URL"
        time.sleep(0.1)
    assert f"{HEALTH_URL_MESSAGE} {url}" in worker.log_path.read_text(errors="replace")

    # One undecodable message: it shows up as a dead letter by reason, once its batch is committed.
    garbage = b"health-check garbage " + uuid.uuid4().hex.encode()
    produce_spc(bootstrap, [], extra=[garbage])
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                code, report = response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            code, report = e.code, json.loads(e.read())
        spc = report["agents"]["spc"]
        # Faust commits every few seconds: wait until the garbage's offset is committed too.
        if spc["status"] == "ok" and any("invalid JSON" in r for r in spc["deadletters_by_reason"]) \
                and spc["lag"] == 0 and any(p["committed"] for p in spc["partitions"]):
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.2)
    assert code == 200 and report["healthy"] is True
    assert set(report["agents"]) == {"spc", "signals", "frames", "fusion", "dispositions"}
    assert spc["sink"] == "ok" and spc["unit"] == "records" and spc["last_batch_at"] is not None
    assert spc["pid"] != report["pid"]  # the SPC runtime answers from its scoring child process
    partitions = spc["partitions"]
    assert sorted(p["partition"] for p in partitions) == list(range(settings.topic_partitions))
    for p in partitions:
        assert p["high_watermark"] is not None and p["lag"] >= 0
        assert p["committed"] is None or p["committed"] <= p["high_watermark"]
    assert "lag_error" not in report

    status = subprocess.run([sys.executable, "-m", "linewatch", "status", "--url", url, "--json"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    answer = json.loads(status.stdout)
    assert answer["healthy"] is True and answer["workers"][0]["health"]["agents"]["spc"]["status"] == "ok"
