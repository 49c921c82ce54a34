"""Run an agent's batch work in a child process, so it does not share a GIL with Faust's loop.

Faust spends most of its per-message cost in Python on its event loop; scoring, COPY and
publishing a batch in a thread of the same process compete with it for one interpreter lock,
which on a 2-core machine roughly doubles the time of both. An :class:`IsolatedRuntime` keeps
the runtime (models, chart memory, writer, publisher) in one child process and hands it each
batch's raw bytes; the agent still awaits the result before Faust acknowledges the batch, so
the durability contract is unchanged. An error in the child comes back as the same exception
(an :class:`~linewatch.errors.InfrastructureError` stays one), and a child that dies is a
``BrokenProcessPool``: both stop the worker without acknowledging.

The child's runtime is a process-wide singleton by construction (one child, one runtime), set
once by the pool initializer; nothing in the parent touches it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from linewatch.lifecycle import DIE_WITH_PARENT_ENV
from linewatch.streams.messages import RawMessage

#: The same line format Faust's worker logs with, so the worker log reads as one.
LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s"

#: How long the parent waits for the child's health snapshot before calling the child unresponsive.
HEALTH_TIMEOUT_S = 2.0

_child_runtime: Any = None


def _init_child(factory: Callable[[], Any], log_level: int, health_conn: Connection | None = None) -> None:
    global _child_runtime
    # The parent-death signal is already armed: importing linewatch did it, before anything heavy.
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    _child_runtime = factory()
    if health_conn is not None:
        threading.Thread(target=_serve_health, args=(health_conn,), name="health", daemon=True).start()


def _serve_health(conn: Connection) -> None:
    """Answer each request on ``conn`` with the runtime's health snapshot, beside the batch being processed.

    A thread of its own, not a task on the pool: the pool's one process is busy for the whole of
    a batch, and a database outage keeps it there for the whole retry budget, exactly when a
    health check must still answer (``retrying``).
    """
    while True:
        try:
            conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            report = _child_runtime.health()
        except Exception as e:  # a bug in a report must not end the channel
            report = {"modality": getattr(_child_runtime, "modality", "?"), "sink": "unknown",
                      "error": f"the scoring process could not build its health report: {e!r}"}
        try:
            conn.send(report)
        except OSError:
            return


def _process(messages: list[RawMessage]) -> dict[str, float]:
    return dict(_child_runtime.process(messages).counts)


def _refresh(force: bool) -> list[str]:
    return _child_runtime.models.refresh(force=force)


def _model_count() -> int:
    return len(_child_runtime.models)


class _ModelsProxy:
    """The parent's view of the child's model cache: what the readiness hook asks for."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool

    def refresh(self, *, force: bool = False) -> list[str]:
        return self._pool.submit(_refresh, force).result()

    def __len__(self) -> int:
        return self._pool.submit(_model_count).result()


class IsolatedRuntime:
    """Stands in for a ``BatchRuntime`` in :func:`register_batch_agent`; the work happens in a child."""

    def __init__(self, factory: Callable[[], Any], *, modality: str, logger: logging.Logger) -> None:
        # Read by the child's first import of linewatch (see linewatch.lifecycle.die_with_parent_if_asked).
        os.environ[DIE_WITH_PARENT_ENV] = str(os.getpid())
        context = multiprocessing.get_context("spawn")  # no fork of Faust's threads and sockets
        # The health channel: the child's end travels with the initializer's arguments.
        self._health_conn, child_conn = context.Pipe()
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_init_child,
            initargs=(factory, logging.getLogger().getEffectiveLevel(), child_conn),
        )
        self.models = _ModelsProxy(self._pool)
        self.modality = modality
        self.log = logger
        self._health_lock = threading.Lock()
        self._health_pending = False  # a request is out that the child has not answered yet
        self._health_answered = False  # the child answered at least once (so it is past its start)

    def process(self, messages: list[RawMessage]) -> dict[str, float]:
        """Blocks the calling (agent) thread until the child has written and published the batch."""
        return self._pool.submit(_process, messages).result()

    def health(self, timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
        """The child's :meth:`BatchRuntime.health` snapshot, asked over a pipe the child answers on a thread.

        Not a pool task like :meth:`_ModelsProxy.refresh`: that would wait behind the batch the
        child is processing. At most one request is out at a time, so an answer that arrives after
        a timeout is the answer to the next call, never a mismatch. A child that does not answer
        within ``timeout`` is reported with sink ``unknown``: ``starting`` when it never answered
        (it is spawned when the worker first gets partitions), else unresponsive.
        """
        with self._health_lock:
            try:
                if not self._health_pending:
                    self._health_conn.send(None)
                    self._health_pending = True
                if self._health_conn.poll(timeout):
                    report: dict[str, Any] = self._health_conn.recv()
                    self._health_pending, self._health_answered = False, True
                    return report
                error = f"the {self.modality} scoring process did not answer within {timeout:.0f} s"
            except (EOFError, OSError) as e:
                error = f"the {self.modality} scoring process is gone ({e!r})"
        starting = not self._health_answered
        if starting:
            error += " (it starts when the worker first gets partitions)"
        return {"modality": self.modality, "sink": "unknown", "starting": starting, "error": error}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
