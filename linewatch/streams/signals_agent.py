"""The signals agent: take a batch from ``signals``, score it, persist it, publish it, then acknowledge.

Thin, like the SPC agent (:mod:`linewatch.streams.spc_agent`), and built on the same
:class:`~linewatch.streams.runtime.BatchRuntime`, with the same guarantees: the
body of the ``take_events`` loop returns only after the ``signal_features``, ``scores`` and
dead-letter rows are committed and the published messages are confirmed, so a Kafka offset
never runs ahead of durable data; scoring, COPY and flush run off the event loop (in the scoring
child, below, or on one worker thread) so it keeps heartbeating. Same failure policy:

- bad data -> dead letter (topic and table) with the reason; the agent goes on;
- an unexpected error while scoring a batch -> the batch is re-scored one message at a time
  and only the message that fails is dead-lettered;
- database or broker unavailable after retries -> log and exit the process at once without
  acknowledging, so the supervisor restarts the worker and the batch is redelivered.

Batches are capped at :data:`MAX_BATCH_WINDOWS` windows whatever ``batch_size`` says: a 1 s
vibration window at 10 kHz is 40 kB, two orders of magnitude more than an SPC record.

The per-asset state (partial frames, online detector copies, lagged rows) is saved to
``<data_dir>/signals-state`` when the worker shuts down and restored when it starts, so a
restart does not lose the frames waiting for a slow sensor nor the online models' learning.
Redelivered windows are recognised by their event id and do not score twice.

With ``isolate_scoring`` (the default, as for SPC) the runtime, its state included, lives in a child
process (:class:`~linewatch.streams.isolated.IsolatedRuntime`): decoding, features, scoring, COPY and
publishing no longer share a GIL with Faust's per-message work, which on two cores is what held the
agent to about a third of bare Faust. The state is saved by the child, on its one batch process, so
no batch is half-way through it while it is written.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

import faust

from linewatch.config import Settings
from linewatch.schemas.topics import SIGNALS
from linewatch.signals.framing import BearingEnvelope
from linewatch.streams.batch import BatchResult
from linewatch.streams.isolated import IsolatedRuntime
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import BatchRuntime, raw_topic, register_batch_agent
from linewatch.streams.signals_pipeline import SignalsState, score_signals_batch

log = logging.getLogger(__name__)

#: Windows per batch at most: 500 vibration windows of 10 kHz x 1 s are 20 MB of samples, enough
#: to amortise a COPY and a flush, small enough that features never hold more than ~150 MB.
MAX_BATCH_WINDOWS = 500
#: Logged (at warning level, like the SPC agent's line) once the signals models are loaded.
SIGNALS_READY_MESSAGE = "linewatch signals agent ready:"
STATE_DIR = "signals-state"


class SignalsRuntime(BatchRuntime):
    """The signals agent's state: the shared runtime plus each asset's frames and online models."""

    modality = "signals"
    unit = "windows"
    train_hint = "linewatch train signals"

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str,
                 state_dir: Path | None = None) -> None:
        super().__init__(settings=settings, bootstrap=bootstrap, database_url=database_url, logger=log)
        self.state_dir = state_dir if state_dir is not None else settings.data_dir / STATE_DIR
        self.envelope = BearingEnvelope.from_settings(settings.asset_speed_hz, settings.bearing_geometry)
        self.state = self._restore()

    def _restore(self) -> SignalsState:
        if not (self.state_dir / "metadata.json").exists():
            return SignalsState(envelope=self.envelope)
        try:
            state = SignalsState.load(self.state_dir, envelope=self.envelope)
        except (OSError, ValueError, KeyError) as e:
            log.error("cannot restore the signals state from %s (%s); starting with empty frames and fresh "
                      "online models", self.state_dir, e)
            return SignalsState(envelope=self.envelope)
        log.warning("signals state restored from %s (%d asset(s))", self.state_dir, len(state.frames.assets))
        return state

    def save_state(self) -> None:
        """Write the state next to the worker's data (a fresh directory, then swapped in)."""
        tmp = self.state_dir.with_name(self.state_dir.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        self.state.save(tmp)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        tmp.rename(self.state_dir)

    def score(self, messages: list[RawMessage]) -> BatchResult:
        return score_signals_batch(messages, self.models, self.state, event_window=self.event_window,
                                   defects=self.defects)

    def extra_stats(self) -> str:
        c = self.state.frames.counters()
        samples = self.stats.counts["samples"] / max(1e-9, time.monotonic() - self.stats.started)
        return f"; {c['late']} late frames, {c['missing']} missing, {c['no_speed']} without shaft speed, " \
               f"{c['duplicate']} duplicate windows, " \
               f"{samples / 1e6:.2f} M samples/s"


#: The child process's runtime (set by :func:`_child_runtime`, in the child only).
_CHILD: SignalsRuntime | None = None


def _child_runtime(**kwargs: Any) -> SignalsRuntime:
    """Build the scoring child's runtime and remember it, so :func:`_save_child_state` can reach it."""
    global _CHILD
    # A Ctrl-C or SIGTERM sent to the whole process group must not end the child before the worker
    # has asked it to save the state; it still dies with the worker (a parent-death SIGKILL).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _CHILD = SignalsRuntime(**kwargs)
    return _CHILD


def _save_child_state() -> None:
    if _CHILD is not None:
        _CHILD.save_state()


class IsolatedSignalsRuntime(IsolatedRuntime):
    """The signals runtime in a child process; :meth:`save_state` runs there, after any batch in flight."""

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str) -> None:
        factory = partial(_child_runtime, settings=settings, bootstrap=bootstrap, database_url=database_url)
        super().__init__(factory, modality=SignalsRuntime.modality, logger=log)
        self.state_dir = settings.data_dir / STATE_DIR

    def save_state(self) -> None:
        """Ask the child to write its state (the child's one worker runs it after the current batch)."""
        self._pool.submit(_save_child_state).result()


def register_signals_agent(app: faust.App, *, settings: Settings, bootstrap: str,
                           database_url: str) -> SignalsRuntime | IsolatedSignalsRuntime:
    """Add the signals agent to ``app`` (called by :func:`linewatch.streams.app.build_app`); returns its runtime.

    The runtime is a :class:`SignalsRuntime`, or with ``isolate_scoring`` the
    :class:`IsolatedSignalsRuntime` that holds one in a child process.
    """
    runtime: SignalsRuntime | IsolatedSignalsRuntime = (
        IsolatedSignalsRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url)
        if settings.isolate_scoring else SignalsRuntime(settings=settings, bootstrap=bootstrap,
                                                        database_url=database_url))
    # Any error from process() stops the worker before Faust can acknowledge the batch, as in the
    # other agents: a batch that was not written must be redelivered.
    pool = register_batch_agent(app, raw_topic(app, SIGNALS.name), runtime,
                                batch_size=min(settings.batch_size, MAX_BATCH_WINDOWS),
                                within=settings.batch_within_s, name="linewatch.score_signals",
                                thread_name_prefix="signals-batch", ready_message=SIGNALS_READY_MESSAGE)

    @app.on_before_shutdown.connect
    async def _save(sender: object, **_: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            # On the batch thread, so no batch is half-way through the state while it is written.
            await loop.run_in_executor(pool, runtime.save_state)
        except (OSError, BrokenProcessPool) as e:
            log.error("could not save the signals state to %s: %s", runtime.state_dir, e)

    return runtime
