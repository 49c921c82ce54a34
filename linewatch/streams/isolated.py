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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from linewatch.embedded.process import _die_with_parent
from linewatch.streams.messages import RawMessage

#: The same line format Faust's worker logs with, so the worker log reads as one.
LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s"

_child_runtime: Any = None


def _init_child(factory: Callable[[], Any], log_level: int) -> None:
    global _child_runtime
    _die_with_parent()  # the child must never outlive the worker that feeds it
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    _child_runtime = factory()


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
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of Faust's threads and sockets
            initializer=_init_child,
            initargs=(factory, logging.getLogger().getEffectiveLevel()),
        )
        self.models = _ModelsProxy(self._pool)
        self.modality = modality
        self.log = logger

    def process(self, messages: list[RawMessage]) -> dict[str, float]:
        """Blocks the calling (agent) thread until the child has written and published the batch."""
        return self._pool.submit(_process, messages).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
