"""Keep a number of worker processes running: restart one that exits, stop them all on request.

Two owners share this one supervisor: ``linewatch worker --processes N`` (N Faust workers of one
consumer group, on one host) and ``linewatch chaos`` (a worker under a supervisor, as systemd or
Compose would run it, killed on purpose). Each worker is a slot; a slot's process that exits is
started again after a delay that doubles with every exit that came soon after its start
(:class:`RestartPolicy`), and a slot that keeps exiting is given up (:meth:`Supervisor.given_up`),
so its owner decides what a crash loop means: ``linewatch chaos`` reports it, a worker group stops
and exits with the child's code so the supervisor above it (Compose, Kubernetes, systemd) sees it.

A slot's output goes either to one log file per incarnation (:class:`LogFiles`: chaos counts what
each incarnation went through) or, line by line with the slot's name in front, to the owner's own
stream (:class:`PrefixedLines`: a worker group's children appear in ``docker compose logs`` as one
stream whose lines say which process wrote them). Either way the supervisor knows when an
incarnation has logged :data:`~linewatch.lifecycle.READY_MESSAGE`.

Children are started with a parent-death signal (:func:`linewatch.embedded.process.spawn`); Linux
sends it when the *thread* that started the child ends, so the restarts happen on the watcher
thread, which lives until :meth:`Supervisor.stop`. This module imports neither Faust nor the
agents: it watches workers from the outside, by their exits, their output and their processes.
"""

from __future__ import annotations

import contextlib
import math
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import psutil

from linewatch.embedded.process import die_with_parent, spawn, stop, tail
from linewatch.errors import InfrastructureError
from linewatch.lifecycle import READY_MESSAGE

#: Lines of a child's output :class:`PrefixedLines` keeps for error messages.
TAIL_LINES = 40
#: How often the watcher looks at its slots.
WATCH_S = 0.05


@dataclass(frozen=True)
class RestartPolicy:
    """When a slot's exited process is started again, and when the slot is given up.

    An exit counts as a *quick* one when the process ran less than ``stable_after_s``; the delay
    before a restart is ``first_delay_s`` doubled per quick exit in a row, at most ``max_delay_s``,
    and the slot is given up after ``max_restarts`` quick exits in a row. A process that ran
    ``stable_after_s`` or more starts the count again: a worker that exits once a day (a database
    outage past its retry budget) is restarted every time, one that dies at start is not for ever.

    >>> p = RestartPolicy(first_delay_s=1.0, max_delay_s=8.0, max_restarts=5, stable_after_s=60.0)
    >>> [p.delay(k) for k in range(6)]
    [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    """

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_restarts: int = 5
    stable_after_s: float = 60.0

    def delay(self, quick_exits: int) -> float:
        """Seconds to wait before the restart that follows ``quick_exits`` quick exits in a row (0 = the first)."""
        return min(self.first_delay_s * 2.0 ** min(quick_exits, 30), self.max_delay_s)


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen | None = None
    log: Path | None = None
    incarnation: int = 0
    restarts: int = 0
    #: Exits in a row that came sooner than the policy's ``stable_after_s`` after their start.
    quick_exits: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    gave_up: bool = False
    logs: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerExit:
    slot: int
    incarnation: int
    returncode: int
    at: float  # time.monotonic()


class Output(Protocol):
    """Where a slot's output goes, and what the supervisor can learn from it."""

    def start(self, argv: Sequence[str], env: Mapping[str, str], slot: int, incarnation: int) -> subprocess.Popen:
        """Start ``argv`` for this slot's incarnation, its stdout and stderr going where this output sends them."""
        ...

    def ready(self, slot: int, incarnation: int) -> bool:
        """Whether that incarnation has logged the ready line."""
        ...

    def tail(self, slot: int) -> str:
        """The last lines the slot's latest incarnation wrote (for an error message)."""
        ...


class LogFiles:
    """One log file per incarnation, ``<log_dir>/<name>-w<slot>-<incarnation>.log`` (what chaos reads back)."""

    def __init__(self, log_dir: Path, name: str) -> None:
        self.log_dir, self.name = log_dir, name
        self.paths: dict[tuple[int, int], Path] = {}

    def path(self, slot: int, incarnation: int) -> Path:
        return self.log_dir / f"{self.name}-w{slot}-{incarnation}.log"

    def start(self, argv: Sequence[str], env: Mapping[str, str], slot: int, incarnation: int) -> subprocess.Popen:
        path = self.path(slot, incarnation)
        self.paths[slot, incarnation] = path
        return spawn(argv, log_path=path, env=dict(env))

    def ready(self, slot: int, incarnation: int) -> bool:
        path = self.paths.get((slot, incarnation))
        return path is not None and path.exists() and READY_MESSAGE in path.read_text(errors="replace")

    def tail(self, slot: int) -> str:
        latest = [p for (s, _), p in sorted(self.paths.items()) if s == slot]
        return tail(latest[-1], 30) if latest else "(no log)"


class PrefixedLines:
    """Each child's stdout and stderr, line by line, written to ``stream`` after ``label(slot)``.

    One thread per incarnation reads its pipe, so a child never blocks on a full pipe; a line is
    written whole (one ``write`` under a lock), so lines of two children never interleave.
    Children start in a process group of their own: a Ctrl-C in the terminal reaches the
    supervisor, which stops them in order, rather than every process at once.
    """

    def __init__(self, stream: IO[str] | None = None, label: Callable[[int], str] = lambda i: f"worker-{i} | ") -> None:
        self._stream = stream
        self._label = label
        self._lock = threading.Lock()
        self._ready: set[tuple[int, int]] = set()
        self._tails: dict[int, deque[str]] = {}

    def start(self, argv: Sequence[str], env: Mapping[str, str], slot: int, incarnation: int) -> subprocess.Popen:
        try:
            proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=dict(env), preexec_fn=die_with_parent,
                                    process_group=0)
        except OSError as e:
            raise InfrastructureError(f"could not start {argv[0]}: {e}") from e
        self._tails[slot] = deque(maxlen=TAIL_LINES)
        threading.Thread(target=self._forward, args=(proc, slot, incarnation), name=f"output-{slot}",
                         daemon=True).start()
        return proc

    def _forward(self, proc: subprocess.Popen, slot: int, incarnation: int) -> None:
        assert proc.stdout is not None
        prefix = self._label(slot)
        lines = self._tails[slot]
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if READY_MESSAGE in line:
                self._ready.add((slot, incarnation))
            stream = self._stream or sys.stderr
            with self._lock:
                stream.write(f"{prefix}{line}\n")
                stream.flush()
        proc.stdout.close()

    def ready(self, slot: int, incarnation: int) -> bool:
        return (slot, incarnation) in self._ready

    def tail(self, slot: int) -> str:
        return "\n".join(self._tails.get(slot, ())) or "(no output)"


class Supervisor:
    """Keeps ``slots`` workers running, restarting one that exits as :class:`RestartPolicy` says.

    ``env`` is every child's environment; ``slot_env(i)`` adds what differs per slot (a worker
    group gives each its own health port), and each slot gets its own data directory,
    ``<data_dir>/<name>-w<slot>`` (its Faust data, model cache and signals state are its own).
    With ``log_dir`` each incarnation logs to a file of its own (:class:`LogFiles`), so "ready"
    means ready in this incarnation's log; without it, ``output`` (default :class:`PrefixedLines`
    on stderr). Exits are counted (:attr:`exits`) until :meth:`stop`, which stops the restarting
    first and then every worker with SIGTERM.
    """

    def __init__(self, name: str, *, env: Mapping[str, str], data_dir: Path, log_dir: Path | None = None,
                 slots: int = 1, argv: Sequence[str] | None = None, restart: RestartPolicy | None = None,
                 slot_env: Callable[[int], Mapping[str, str]] | None = None, output: Output | None = None) -> None:
        self.name = name
        self._env, self._data_dir = dict(env), data_dir
        self._slot_env = slot_env or (lambda _i: {})
        self.output: Output = LogFiles(log_dir, name) if log_dir is not None else (output or PrefixedLines())
        self._argv = list(argv or [sys.executable, "-m", "linewatch", "worker", "--processes", "1",
                                   "--log-level", "warn"])
        self.policy = restart or RestartPolicy()
        self._slots = [_Slot(i) for i in range(slots)]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.exits: list[WorkerExit] = []
        #: Every process seen under a worker; after :meth:`stop` each must be gone (no orphans).
        self._seen: dict[int, psutil.Process] = {}
        #: Processes that outlived their worker and had to be killed by :meth:`stop`.
        self.left_behind: list[str] = []

    def slot_dir(self, slot: int) -> Path:
        """The slot's own ``LINEWATCH_DATA_DIR``."""
        return self._data_dir / f"{self.name}-w{slot}"

    def _spawn(self, slot: _Slot) -> None:
        slot.incarnation += 1
        env = {**self._env, **self._slot_env(slot.index), "LINEWATCH_DATA_DIR": str(self.slot_dir(slot.index))}
        slot.proc = self.output.start(self._argv, env, slot.index, slot.incarnation)
        slot.started_at = time.monotonic()
        if isinstance(self.output, LogFiles):
            slot.log = self.output.paths[slot.index, slot.incarnation]
            slot.logs.append(slot.log)

    def start(self) -> Supervisor:
        with self._lock:
            for slot in self._slots:
                self._spawn(slot)
        self._watcher = threading.Thread(target=self._watch, name=f"supervisor-{self.name}", daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        # Restarted workers are children of this thread; it lives until stop() (their death
        # signal follows the thread that started them), so it must not die on an error.
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._lock:
                for slot in self._slots:
                    if self._stopping.is_set():
                        break
                    self._look_at(slot, now)
            self._stopping.wait(WATCH_S)

    def _look_at(self, slot: _Slot, now: float) -> None:
        proc = slot.proc
        if proc is not None:
            if proc.poll() is None:
                return
            self.exits.append(WorkerExit(slot.index, slot.incarnation, proc.returncode, now))
            slot.proc = None
            ran = now - slot.started_at
            slot.quick_exits = slot.quick_exits + 1 if ran < self.policy.stable_after_s else 1
            if slot.quick_exits > self.policy.max_restarts:
                slot.gave_up = True
                return
            slot.restart_at = now + self.policy.delay(slot.quick_exits - 1)
        if slot.gave_up or slot.restart_at is None or now < slot.restart_at:
            return
        slot.restart_at = None
        slot.restarts += 1
        try:
            self._spawn(slot)
        except InfrastructureError:
            slot.proc = None
            slot.gave_up = True

    def pid(self, slot: int = 0) -> int | None:
        with self._lock:
            proc = self._slots[slot].proc
            return proc.pid if proc is not None and proc.poll() is None else None

    def incarnation(self, slot: int = 0) -> int:
        return self._slots[slot].incarnation

    def given_up(self) -> bool:
        """Whether a slot kept exiting and will not be restarted again."""
        return any(s.gave_up for s in self._slots)

    def last_exit(self, slot: int) -> WorkerExit | None:
        """The slot's latest exit, if it had one."""
        return next((e for e in reversed(self.exits) if e.slot == slot), None)

    def given_up_exit(self) -> WorkerExit | None:
        """The last exit of the first slot given up (what a worker group exits with), or None."""
        for s in self._slots:
            if s.gave_up:
                return self.last_exit(s.index)
        return None

    def all_ready(self) -> bool:
        """Whether every slot's current incarnation is running and has logged the ready line."""
        with self._lock:
            return all(s.proc is not None and s.proc.poll() is None and self.output.ready(s.index, s.incarnation)
                       for s in self._slots)

    def remember_children(self) -> None:
        """Note every worker's descendants now, so :meth:`stop` can check that none outlived it."""
        for slot in range(len(self._slots)):
            pid = self.pid(slot)
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for p in [root, *root.children(recursive=True)]:
                    self._seen.setdefault(p.pid, p)

    def signal(self, sig: int, slot: int = 0) -> int:
        """Send ``sig`` to the slot's current worker; returns the incarnation signalled."""
        self.remember_children()
        with self._lock:
            s = self._slots[slot]
            if s.proc is None or s.proc.poll() is not None:
                raise InfrastructureError(f"{self.name}: worker {slot} is not running to receive signal {sig}")
            s.proc.send_signal(sig)
            return s.incarnation

    def wait_ready(self, slot: int = 0, *, after: int = 0, timeout: float = 90.0) -> float:
        """Wait until an incarnation newer than ``after`` has logged its ready line; returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                s = self._slots[slot]
                inc, proc = s.incarnation, s.proc
            if inc > after and proc is not None and proc.poll() is None and self.output.ready(slot, inc):
                return time.monotonic()
            if self.given_up():
                break
            time.sleep(0.1)
        raise InfrastructureError(f"{self.name}: worker {slot} did not become ready within {timeout:.0f} s:\n"
                                  f"{self.output.tail(slot)}")

    def children(self, slot: int = 0) -> list[psutil.Process]:
        pid = self.pid(slot)
        if pid is None:
            return []
        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return []

    def logs(self) -> list[Path]:
        return [p for s in self._slots for p in s.logs]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop restarting, SIGTERM every worker (SIGKILL after ``timeout``), then make sure nothing is left.

        A worker's children die with it (their parent-death signal); any process once seen under a
        worker that is still alive 10 s later is recorded in :attr:`left_behind` and killed.
        """
        self.remember_children()
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(5)
        with self._lock:
            procs = [s.proc for s in self._slots]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for proc in procs:
            stop(proc, sig=signal.SIGTERM, timeout=timeout)
        _, alive = psutil.wait_procs(list(self._seen.values()), timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                self.left_behind.append(f"pid {p.pid}: {' '.join(p.cmdline())[:120]}")
                p.kill()


#: What ``linewatch chaos`` restarts like: every exit, a second later, 20 times per scenario at most.
CHAOS_RESTARTS = RestartPolicy(first_delay_s=1.0, max_delay_s=1.0, max_restarts=20, stable_after_s=math.inf)
