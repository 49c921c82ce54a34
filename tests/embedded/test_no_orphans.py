"""Embedded services never outlive linewatch: not on Ctrl-C, not on an error, not on kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.integration


def _start_up(tmp_path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    env = {**os.environ, "LINEWATCH_DATA_DIR": str(tmp_path / "lw")}
    env.pop("LINEWATCH_BROKER_URL", None)
    env.pop("LINEWATCH_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "linewatch", "up"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    lines = [proc.stdout.readline() for _ in range(2)]
    assert lines[1].startswith("export LINEWATCH_DATABASE_URL="), lines
    children, names = [], set()
    for c in psutil.Process(proc.pid).children(recursive=True):
        try:  # a short-lived helper (pg_ctl, a shell) may be gone between the listing and the look
            names.add(c.name())
        except psutil.NoSuchProcess:
            continue
        children.append(c)
    assert any("tansu" in n for n in names) and "postgres" in names, names
    return proc, children


def _all_gone(procs: list[psutil.Process], timeout: float = 20.0) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_stops_every_service(tmp_path):
    proc, children = _start_up(tmp_path)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) in (0, 130)
    assert _all_gone(children)


def test_kill_9_of_the_parent_takes_the_services_down(tmp_path):
    proc, children = _start_up(tmp_path)
    proc.kill()
    proc.wait(10)
    time.sleep(0.2)
    assert _all_gone(children)
