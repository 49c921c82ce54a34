"""A child a worker marks (the scoring child) cannot outlive it: armed by linewatch's first import.

Both orders of events: the parent is killed after the child armed the parent-death signal, and
the parent is killed while the child is still starting (before it imported linewatch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from linewatch.lifecycle import DIE_WITH_PARENT_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

PARENT = """
import os, subprocess, sys
os.environ[{env!r}] = str(os.getpid())
child = subprocess.Popen([sys.executable, "-c", {child!r}])
print(child.pid, flush=True)
child.wait()
"""


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _start(child_code: str) -> tuple[subprocess.Popen, int]:
    code = PARENT.format(env=DIE_WITH_PARENT_ENV, child=child_code)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items() if k != DIE_WITH_PARENT_ENV})
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def _kill(parent: subprocess.Popen) -> None:
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)


def test_a_child_that_imported_linewatch_dies_with_its_killed_parent(tmp_path) -> None:
    ready = tmp_path / "armed"
    parent, child = _start(f"import linewatch, pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        _kill(parent)
        assert _gone(child, timeout=5.0), "the child outlived its SIGKILLed parent"
    finally:
        if not _gone(child, 0):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_died_while_it_started_exits_at_its_first_import() -> None:
    parent, child = _start("import time; time.sleep(1.0); import linewatch; time.sleep(60)")
    try:
        _kill(parent)  # the child is still sleeping: the signal is not armed yet
        assert _gone(child, timeout=15.0), "the orphaned child kept running after importing linewatch"
    finally:
        if not _gone(child, 0):
            os.kill(child, signal.SIGKILL)


def test_a_process_not_marked_is_left_alone() -> None:
    out = subprocess.run([sys.executable, "-c", "import linewatch, os; print(os.getpid())"], capture_output=True,
                         text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != DIE_WITH_PARENT_ENV})
    assert out.returncode == 0, out.stderr
