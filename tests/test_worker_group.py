"""``linewatch worker --processes N``: N real Faust workers share one consumer group, and stop together.

The integration test runs the real command against a broker and a PostgreSQL of its own (so the
session broker's backlog of other tests' events does not land on these two workers), with SPC
topics of 4 partitions; the supervisor's restart policy is checked apart, on tiny processes that
exit at once.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.config import Settings
from linewatch.embedded.process import free_port, spawn, stop, tail
from linewatch.embedded.stack import Stack
from linewatch.kafka import ensure_topics
from linewatch.lifecycle import GROUP_READY_MESSAGE
from linewatch.producers.spc import produce_spc
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.migrations import migrate
from linewatch.supervisor import PrefixedLines, RestartPolicy, Supervisor
from linewatch.training import train_and_register
from tests.conftest import wait_for

PARTITIONS = 4
RECORDS = 400


def _two_free_ports() -> int:
    """A port p such that p and p + 1 are both free now (the group's two /health ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    pytest.fail("no two consecutive free ports on this machine")


def _descendants(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.integration
def test_two_processes_share_the_group_score_each_record_once_and_stop_together(tmp_path: Path) -> None:
    with Stack(Settings(data_dir=tmp_path / "stack"), fsync=False) as stack:
        ensure_topics(stack.bootstrap, partitions=PARTITIONS)
        migrate(stack.database_url)
        normal = simulate_spc(n_parts=3000, seed=31, fault_fraction=0.0)
        # Hotelling's fits in milliseconds; what is counted is rows, not alarms.
        train_and_register(normal.X, feature_names=normal.feature_names, database_url=stack.database_url,
                           model_dir=tmp_path / "models", target_far=0.01, detector="hotelling")
        port = _two_free_ports()
        env = {**os.environ, "LINEWATCH_BROKER_URL": stack.bootstrap, "LINEWATCH_DATABASE_URL": stack.database_url,
               "LINEWATCH_DATA_DIR": str(tmp_path / "worker"), "LINEWATCH_APP_ID": f"group-{uuid.uuid4().hex[:6]}",
               "LINEWATCH_BATCH_WITHIN_S": "0.1", "LINEWATCH_MODEL_REFRESH_S": "1",
               "LINEWATCH_SESSION_TIMEOUT_S": "3", "LINEWATCH_HEALTH_PORT": str(port)}
        log = tmp_path / "group.log"
        parent = spawn([sys.executable, "-m", "linewatch", "worker", "--processes", "2", "--log-level", "warn"],
                       log_path=log, env=env)
        try:
            deadline = time.monotonic() + 60
            while GROUP_READY_MESSAGE not in (log.read_text(errors="replace") if log.exists() else ""):
                assert parent.poll() is None and time.monotonic() < deadline, tail(log, 40)
                time.sleep(0.2)
            processes = _descendants(parent.pid)  # the parent, 2 workers, their scoring children
            assets = [f"grp-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]  # 8 keys: spread over the 4 partitions
            sim = simulate_spc(n_parts=RECORDS, seed=32, fault_fraction=0.0, assets=tuple(assets),
                               start=datetime(2026, 7, 1, tzinfo=UTC))
            produce_spc(stack.bootstrap, sim.records())
            count = "SELECT count(*) FROM scores WHERE asset_id = ANY(%s)"
            assert wait_for(count, (assets,), RECORDS, stack.database_url, timeout=30) == RECORDS, tail(log, 40)

            result = CliRunner().invoke(app, ["status", "--json", "--processes", "2"],
                                        env={"LINEWATCH_HEALTH_PORT": str(port), "LINEWATCH_HEALTH_HOST": "127.0.0.1"})
            assert result.exit_code == 0, result.output
            workers = json.loads(result.stdout)["workers"]
            spc = [w["health"]["agents"]["spc"] for w in workers]
            assert len({w["health"]["pid"] for w in workers}) == 2  # two processes answered, one per port
            assert all(a["partitions"] for a in spc), spc  # each holds SPC partitions: both joined the group
            assert all(a["processed"] > 0 for a in spc) and sum(a["processed"] for a in spc) == RECORDS, spc
            with psycopg.connect(stack.database_url) as conn:
                distinct = conn.execute("SELECT count(DISTINCT event_id) FROM scores WHERE asset_id = ANY(%s)",
                                        (assets,)).fetchone()[0]
                assert (distinct, conn.execute(count, (assets,)).fetchone()[0]) == (RECORDS, RECORDS)

            parent.send_signal(signal.SIGTERM)
            assert parent.wait(40) == 0, tail(log, 40)
            _, alive = psutil.wait_procs(processes, timeout=5)
            assert not alive, f"left behind: {[p.pid for p in alive]}"
            text = log.read_text(errors="replace")
            assert "worker-0 | " in text and "worker-1 | " in text and "sit idle" not in text
            assert "SIGTERM received: stopping the 2 worker processes" in text
        finally:
            stop(parent, timeout=30)


def test_a_process_that_keeps_exiting_is_restarted_with_backoff_then_given_up(tmp_path: Path) -> None:
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    policy = RestartPolicy(first_delay_s=0.2, max_delay_s=0.8, max_restarts=3, stable_after_s=60.0)
    code = "import sys; print('hello from', sys.argv[1]); sys.exit(3)"
    sup = Supervisor("t", env=os.environ, data_dir=tmp_path, slots=1, restart=policy,
                     argv=[sys.executable, "-c", code, "x"], output=PrefixedLines(Lines()))  # type: ignore[arg-type]
    sup.start()
    try:
        deadline = time.monotonic() + 20
        while not sup.given_up() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sup.given_up()
    finally:
        sup.stop(timeout=5)
    exits = sup.exits
    assert [e.returncode for e in exits] == [3] * 4 and [e.incarnation for e in exits] == [1, 2, 3, 4]
    gaps = [b.at - a.at for a, b in itertools.pairwise(exits)]
    # at least 0.2 s, 0.4 s, 0.8 s (the ceiling) between one exit and the next (plus a Python start each)
    assert all(gap >= delay for gap, delay in zip(gaps, (0.2, 0.4, 0.8), strict=True)), gaps
    assert sup.given_up_exit() == exits[-1]
    time.sleep(0.1)  # the last child's output thread
    assert "worker-0 | hello from x\n" in lines
