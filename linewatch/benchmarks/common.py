"""What the end-to-end benchmarks (SPC, signals, frames) share: the two baselines and the worker run.

Every benchmark compares the real worker with the same two floors, measured the same way, so
their ratios read side by side across modalities: a bare confluent-kafka consumer that only
decodes (:func:`bare_kafka`) and a bare Faust worker that does nothing per batch
(:func:`bare_faust`). The worker under test is started with the same environment and sampled
for peak memory the same way (:func:`running_worker`), and the backlog phase waits for its
rows with the same failure rules (:func:`wait_for_rows`, :func:`latencies`). Each runs on a
fresh stack of its own (:func:`bench_stack`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from rich.console import Console
from rich.markup import escape

from linewatch.config import Settings
from linewatch.embedded.process import spawn, stop, tail
from linewatch.embedded.stack import Stack
from linewatch.errors import ConfigError, InfrastructureError
from linewatch.kafka import ensure_topics
from linewatch.lifecycle import READY_MESSAGE
from linewatch.schemas.messages import SpcRecord
from linewatch.schemas.topics import SCORES
from linewatch.storage.migrations import migrate

#: How long any phase may take before the benchmark gives up.
TIMEOUT_S = 600.0
#: Seconds between peak-RSS samples of the worker.
RSS_SAMPLE_S = 0.1
#: How long :func:`fusion_lag` waits for the fusion agent to finish the scores of a drained backlog.
FUSION_CATCH_UP_S = 60.0


@contextmanager
def bench_stack(settings: Settings, prefix: str) -> Iterator[tuple[Settings, Stack, Path]]:
    """A temporary directory and a stack with topics and schema; yields (settings, stack, directory).

    With an embedded broker the settings point the stack's data at the temporary directory,
    so a benchmark never reads (or leaves) another run's data.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_dir:
        tmp = Path(tmp_dir)
        bench_settings = settings.model_copy(update={"data_dir": tmp}) if settings.embedded_broker else settings
        with Stack(bench_settings, fsync=True) as stack:
            ensure_topics(stack.bootstrap, partitions=settings.topic_partitions, security=stack.kafka_security)
            migrate(stack.database_url)
            yield bench_settings, stack, tmp


def bare_kafka(bootstrap: str, topic: str, n: int, *, decode: Callable[[list[Message]], int], max_messages: int,
               poll_s: float, verb: str = "read", noun: str = "messages",
               security: Mapping[str, str] | None = None) -> float:
    """Messages per second of a confluent-kafka consumer reading ``topic`` from the start.

    ``decode`` gets each polled batch and returns how many messages it decoded (the work that
    makes this the floor of a consumer that validates its input). Steady state: timed from the
    end of the first non-empty batch, whose messages are not counted. ``security``: the broker's
    TLS/SASL client configuration.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800, **(security or {})})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    got, first, first_batch = 0, None, 0
    deadline = time.monotonic() + TIMEOUT_S
    while got < n and time.monotonic() < deadline:
        msgs = consumer.consume(max_messages, poll_s)
        if not msgs:
            continue
        k = decode(msgs)
        if first is None:
            first, first_batch = time.monotonic(), k
        got += k
    consumer.close()
    if got < n or first is None:
        raise InfrastructureError(f"bare consumer {verb} only {got} of {n} {noun}")
    return (got - first_batch) / max(time.monotonic() - first, 1e-9)


def bare_faust(bootstrap: str, topic: str, n: int, tmp: Path, batch: int,
               kafka_env: Mapping[str, str] | None = None) -> float:
    """Messages per second of :mod:`linewatch.benchmarks.bare_faust`, run as its own process.

    ``kafka_env``: the broker's TLS/SASL settings as variables (:meth:`Settings.kafka_env`), which
    the child's own settings read.
    """
    out = tmp / "bare-faust.json"
    log = tmp / "bare-faust.log"
    proc = spawn([sys.executable, "-m", "linewatch.benchmarks.bare_faust", "--bootstrap", bootstrap,
                  "--topic", topic, "--n", str(n), "--batch", str(batch), "--out", str(out)], log_path=log,
                 env={**os.environ, **(kafka_env or {})})
    try:
        proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
    if not out.exists():
        raise InfrastructureError(f"the bare Faust consumer did not finish:\n{tail(log)}")
    return float(json.loads(out.read_text())["per_s"])


@dataclass
class WorkerRun:
    """The worker under test: its process, its log and the peak resident memory seen so far.

    Memory counts the worker and its children (the SPC scoring process), summed per sample; every
    sample is kept (``samples``: monotonic time, MB) so :meth:`drain_growth_mb` can tell a worker
    whose memory is flat while a backlog drains from one that accumulates.
    """

    proc: subprocess.Popen
    log: Path
    #: The worker's app id, which is its Kafka consumer group (Faust's ``group.id``).
    group: str = ""
    peak_rss_mb: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def drain_growth_mb(self, start: float, end: float) -> float | None:
        """Median RSS of the last quarter of ``[start, end]`` minus that of its second quarter.

        The first quarter is left out: models load, the group joins and the first batches warm
        the allocator there. What grows between the second and the last quarter grows with the
        backlog (buffers, state per asset, leaks); flat memory is a figure near zero. None where
        the window is too short to hold samples in both quarters.
        """
        span, samples = end - start, np.array(self.samples, dtype=float).reshape(-1, 2)  # a copy: the sampler appends
        t, rss = samples[:, 0], samples[:, 1]
        second = rss[(t >= start + span / 4) & (t < start + span / 2)]
        last = rss[(t >= start + 3 * span / 4) & (t <= end)]
        if span <= 0 or not len(second) or not len(last):
            return None
        return round(float(np.median(last) - np.median(second)), 1)

    def _sample(self) -> None:
        p = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            try:
                rss = p.memory_info().rss
                for child in p.children(recursive=True):
                    try:
                        rss += child.memory_info().rss
                    except psutil.Error:
                        continue  # a child that just exited
                self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
                self.samples.append((time.monotonic(), rss / 2**20))
            except psutil.Error:
                return
            time.sleep(RSS_SAMPLE_S)


@contextmanager
def running_worker(settings: Settings, stack: Stack, tmp: Path, argv: Sequence[str] | None = None, *,
                   group: str | None = None, env: Mapping[str, str] | None = None,
                   log_name: str = "worker.log") -> Iterator[WorkerRun]:
    """Run ``python -m linewatch worker`` (or ``argv``) against ``stack`` for the ``with`` block.

    The worker gets a fresh app id unless ``group`` names one (a fresh group reads the backlog from
    the start; the latency sweep keeps one group, so nothing is read twice), ``tmp`` as its data
    directory, the benchmark's batch size and then ``env``; its log goes to ``tmp/<log_name>``. On
    exit the sampling stops and the worker is stopped.
    """
    group = group or f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "LINEWATCH_BROKER_URL": stack.bootstrap, "LINEWATCH_DATABASE_URL": stack.database_url,
           "LINEWATCH_DATA_DIR": str(tmp), "LINEWATCH_APP_ID": group,
           "LINEWATCH_BATCH_SIZE": str(settings.batch_size), **settings.kafka_env(), **(env or {})}
    log = tmp / log_name
    cmd = list(argv or [sys.executable, "-m", "linewatch", "worker", "--processes", "1", "--log-level", "warn"])
    run = WorkerRun(spawn(cmd, log_path=log, env=env), log, group)
    threading.Thread(target=run._sample, daemon=True).start()
    try:
        yield run
    finally:
        run._stop.set()
        stop(run.proc, timeout=30)


def wait_ready(worker: WorkerRun, timeout_s: float) -> None:
    """Wait until the worker logs :data:`~linewatch.lifecycle.READY_MESSAGE` (it holds partitions)."""
    deadline = time.monotonic() + timeout_s
    while READY_MESSAGE not in (worker.log.read_text(errors="replace") if worker.log.exists() else ""):
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise InfrastructureError(f"the worker did not join:\n{tail(worker.log)}")
        time.sleep(0.2)


def stamped_now(records: Iterable[SpcRecord]) -> Iterator[SpcRecord]:
    """Each record with the moment the paced producer pulls it as its event time, so written_at - ts is latency."""
    for rec in records:
        yield rec.model_copy(update={"ts": datetime.now(UTC)})


def wait_for_rows(conn: psycopg.Connection, query: str, params: Any, n: int, *, worker: WorkerRun,
                  deadline: float, what: str, no_progress_s: float | None = None) -> tuple[float, float]:
    """Poll ``query`` (a count) until it reaches ``n``; returns when (monotonic) the first rows and the last were seen.

    Fails, with the tail of the worker's log, if the worker exits, ``deadline`` passes or, with
    ``no_progress_s``, the worker has logged readiness but the count has not moved for that
    long (a worker that joined but does not run the agent under test). ``what`` names the rows
    in the error ("records", "windows", ...).
    """
    last, last_change, first_seen = -1, time.monotonic(), None
    while True:
        done = conn.execute(query, params).fetchone()[0]
        if done and first_seen is None:
            first_seen = time.monotonic()
        if done >= n:
            return first_seen if first_seen is not None else time.monotonic(), time.monotonic()
        if done != last:
            last, last_change = done, time.monotonic()
        stalled = no_progress_s is not None and READY_MESSAGE in worker.log.read_text(errors="replace") and \
            time.monotonic() - last_change > no_progress_s
        if worker.proc.poll() is not None or time.monotonic() > deadline or stalled:
            raise InfrastructureError(f"the worker stopped after {done}/{n} {what}:\n{tail(worker.log)}")
        time.sleep(0.2)


def fusion_lag(stack: Stack, worker: WorkerRun, *, since: float,
               timeout_s: float = FUSION_CATCH_UP_S) -> tuple[float | None, int]:
    """How long after ``since`` (monotonic) the fusion agent had consumed every score published so far.

    Read from the worker group's committed offsets on ``scores`` against the topic's end offsets
    taken now (a consumer that never subscribes does not join the group, so the worker is not
    disturbed). Faust commits every 2.8 s, so a fusion agent that keeps up reads as up to about
    3 s; more is fusion falling behind the scorers. Returns ``(seconds, 0)``, or ``(None, messages
    still unconsumed)`` where it has not caught up within ``timeout_s``.
    """
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": worker.group,
                         "enable.auto.commit": False, **(stack.kafka_security or {})})
    try:
        parts = [TopicPartition(SCORES.name, p)
                 for p in consumer.list_topics(SCORES.name, timeout=10).topics[SCORES.name].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        deadline = time.monotonic() + timeout_s
        while True:
            committed = consumer.committed(parts, timeout=10)
            behind = sum(max(0, ends[tp.partition] - max(tp.offset, 0)) for tp in committed)
            if behind == 0:
                return max(0.0, time.monotonic() - since), 0
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                return None, behind
            time.sleep(0.2)
    finally:
        consumer.close()


def drain_figures(stack: Stack, worker: WorkerRun, drain: tuple[float, float], *, n: int, rate: float
                  ) -> dict[str, Any]:
    """What the drain of a backlog of ``n`` events at ``rate``/s says beside the rate: memory and fusion.

    ``drain`` is :func:`wait_for_rows`'s (first rows seen, last rows seen). Called right after the
    drain, before a latency phase adds scores: ``rss_drain_growth_mb`` (:meth:`WorkerRun.drain_growth_mb`),
    ``backlog_s`` (the backlog in seconds of throughput), and :func:`fusion_lag`'s ``fusion_lag_s``
    and ``fusion_behind_messages``.
    """
    lag, behind = fusion_lag(stack, worker, since=drain[1])
    return {"rss_drain_growth_mb": worker.drain_growth_mb(*drain), "backlog_s": round(n / rate, 1),
            "fusion_lag_s": None if lag is None else round(lag, 1), "fusion_behind_messages": behind}


def steady_rate(counted: int, seconds: float, *, n: int, what: str) -> float:
    """``counted`` rows over ``seconds``: the rate after the first batch, which holds the group join.

    With a backlog that fits in one or two of the worker's batches there is no span left to time
    (the rate would be zero, or rows over a zero interval), so the run is refused with what to
    change instead of printing a meaningless figure.
    """
    if counted <= 0 or seconds <= 0:
        raise ConfigError(f"all {n} {what} were written in one batch of the worker, so there is no rate to "
                          f"time; pre-fill more (a larger --records, or --seconds instead)")
    return counted / seconds


def latencies(conn: psycopg.Connection, asset: str, m: int, *, deadline: float,
              worker: WorkerRun | None = None) -> np.ndarray:
    """Seconds from event time to the score row written, for the ``m`` scores of ``asset``.

    Waits for all ``m`` rows until ``deadline``; with ``worker`` it also gives up, with the tail
    of the worker's log, as soon as the worker exits.
    """
    while conn.execute("SELECT count(*) FROM scores WHERE asset_id = %s", (asset,)).fetchone()[0] < m:
        if time.monotonic() > deadline or (worker is not None and worker.proc.poll() is not None):
            log_tail = f":\n{tail(worker.log)}" if worker is not None else ""
            raise InfrastructureError(f"latency phase did not complete in time{log_tail}")
        time.sleep(0.2)
    return np.array([r[0] for r in conn.execute(
        "SELECT extract(epoch FROM written_at - ts) FROM scores WHERE asset_id = %s", (asset,))], dtype=float)


def print_worker_stats(console: Console, log: Path, prefix: str) -> None:
    """Print the worker's last throughput line (``"<prefix>... busy ..."``), from ``prefix`` on."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if prefix in ln and "busy" in ln]
    if lines:
        console.print("worker: " + escape(lines[-1].split(prefix, 1)[1]))
