"""What a worker process promises the processes that start and watch it: its ready line and exit codes.

The demo, the benchmarks and the tests start ``python -m linewatch worker`` as a child
process and wait for :data:`READY_MESSAGE` in its log before they produce anything; a
supervisor (systemd, Docker, Kubernetes) restarts a worker that exits with
:data:`EXIT_INFRASTRUCTURE`. These constants live here, apart from the Faust runtime in
:mod:`linewatch.streams.runtime` that emits them, so that watching a worker does not mean
importing Faust and the agents.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: Exit status when infrastructure stays unavailable (EX_SOFTWARE-like; supervisors restart on it).
EXIT_INFRASTRUCTURE = 70
#: Logged once the worker holds partitions; the demo and tests wait for it.
READY_MESSAGE = "linewatch worker ready:"
#: Logged by ``linewatch worker --processes N`` once every one of its N workers has logged :data:`READY_MESSAGE`.
GROUP_READY_MESSAGE = "linewatch worker group ready:"
#: Path of a worker's health endpoint (:mod:`linewatch.streams.health`; ``linewatch status`` reads it).
HEALTH_PATH = "/health"
#: Logged (at warning level, like the ready line) with the endpoint's URL once it listens.
HEALTH_URL_MESSAGE = "linewatch health endpoint:"
#: Exit status of a child that found its parent already gone when it started.
EXIT_ORPHANED = 75
#: Set by a worker before it starts a child that must not outlive it: the worker's pid.
DIE_WITH_PARENT_ENV = "LINEWATCH_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))


def health_url(host: str, port: int) -> str:
    """Where a worker's health endpoint is reached from its own host (a wildcard bind is reached on loopback).

    >>> health_url("0.0.0.0", 6066), health_url("::1", 7000)
    ('http://127.0.0.1:6066/health', 'http://[::1]:7000/health')
    """
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}{HEALTH_PATH}"


def worker_processes(requested: int) -> int:
    """How many worker processes ``linewatch worker`` runs: ``requested``, or one per two usable cores for 0.

    One per two cores, not one per core: a worker process already keeps about two cores busy (Faust's
    event loop and its scoring children run at once), and on two cores a second process cost 14-68 %
    more CPU per record for no more throughput (docs/benchmarks.md, "Worker processes").

    Usable means the CPUs this process may run on (its affinity mask: ``taskset``, a cpuset), not
    every core of the host. A CPU *quota* (``docker run --cpus``, a Kubernetes limit) is not seen
    here, so set the number explicitly under one.

    >>> worker_processes(3)
    3
    >>> worker_processes(0) >= 1
    True
    """
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def group_health_ports(port: int, processes: int) -> list[int]:
    """The ``/health`` ports of a group of ``processes`` workers whose first one is on ``port``: port + i.

    Port 0 stays 0 for every process (each picks a free port and logs it).

    >>> group_health_ports(6066, 3), group_health_ports(0, 2)
    ([6066, 6067, 6068], [0, 0])
    """
    return [port + i if port else 0 for i in range(processes)]


def die_with_parent_if_asked() -> None:
    """Arm the parent-death signal when :data:`DIE_WITH_PARENT_ENV` names this process's parent.

    Runs from ``linewatch/__init__.py``, so a scoring child arms it before importing anything
    heavy: a worker killed while its child is still importing (seconds, with onnxruntime and
    Faust) can no longer leave the child behind. A child whose parent is already gone when it
    gets here exits at once. The variable is removed, so the child's own children are not bound
    to it by mistake.
    """
    expected = os.environ.pop(DIE_WITH_PARENT_ENV, None)
    if not expected:
        return
    set_parent_death_signal()
    if str(os.getppid()) != expected:  # the parent died before the signal was armed
        os._exit(EXIT_ORPHANED)
