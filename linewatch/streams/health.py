"""The worker's ``GET /health``: per agent, its lag, last batch, sink, dead letters and models.

Served by Faust's own web server (aiohttp, on the worker's event loop), so there is no second
HTTP stack to run and the answer comes from the process that does the work. The report is built
by :func:`health_report`, a pure function of what was collected, so its rules (which state is
worst, when the answer is 503) are tested without a broker; :func:`register_health_view` does the
collecting:

- **Agents**: each runtime's :meth:`~linewatch.streams.runtime.BatchRuntime.health` snapshot
  (counters, sink state, dead letters by reason, model versions). The SPC runtime lives in a
  child process; its proxy asks the child over a pipe that a thread of the child answers, so a
  batch in progress (or a database retry) does not hold the answer up.
- **Lag**: which partitions this worker holds comes from Faust (``app.consumer.assignment()``,
  public API); their committed offsets and high watermarks come from the broker itself, through a
  small confluent-kafka client of our own (``Consumer.committed`` and
  ``get_watermark_offsets``; it never subscribes, so it never joins the group, and never commits).
  That is the least fragile source: it depends on no Faust internals (Faust keeps its committed
  offsets in private attributes, and its monitor's end offsets stop moving when a consumer
  stalls, which is when lag matters most), and it reports what ``kafka-consumer-groups
  --describe`` would: high watermark minus the group's committed offset. The high watermark of
  Faust's last fetch (``app.consumer.highwater``, public) is taken into account too, because the
  embedded broker's answer to the offsets request falls short (:func:`partition_lag`).

Statuses per agent, from least to most severe: ``ok``; ``starting`` (the SPC scoring process is
spawned when the worker first gets partitions); ``retrying`` (the database writer is inside its
retry budget); ``unresponsive`` (the agent's runtime did not answer); ``down`` (the writer gave up;
the worker is about to exit without acknowledging). The endpoint answers 503 when any agent is
``down`` or ``unresponsive`` and 200 otherwise: a worker riding out a database restart is doing
what it should, and a probe that restarted it then would only add a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import faust

from linewatch.kafka import make_consumer
from linewatch.lifecycle import HEALTH_PATH, HEALTH_URL_MESSAGE, health_url

__all__ = ["HEALTH_PATH", "HEALTH_URL_MESSAGE", "LagProbe", "PartitionLag", "agent_status", "health_port",
           "health_report", "health_url", "partition_lag", "register_health_view", "status_code", "web_options"]

log = logging.getLogger(__name__)

#: Agent statuses from least to most severe; a report's ``status`` is the worst of its agents'.
STATUSES = ("ok", "starting", "retrying", "unresponsive", "down")
#: Statuses that make ``/health`` answer 503 (and ``linewatch status`` exit 1).
FAILING = frozenset({"unresponsive", "down"})
#: Seconds the broker has to answer all of one health check's offset requests (then the rest is unknown).
LAG_TIMEOUT_S = 2.0


class HealthSource(Protocol):
    """What the endpoint needs from an agent's runtime: a ``BatchRuntime`` or an ``IsolatedRuntime``."""

    modality: str

    def health(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PartitionLag:
    """One assigned partition: the group's committed offset, the high watermark and the difference.

    ``committed`` is None when the group has committed nothing on the partition yet; the lag is
    then counted from the low watermark, where the worker starts (``auto_offset_reset=earliest``).
    ``lag`` is None when the broker did not give the watermarks in time.
    """

    topic: str
    partition: int
    committed: int | None
    high_watermark: int | None
    lag: int | None


def partition_lag(topic: str, partition: int, *, committed: int | None, low: int | None,
                  highs: Iterable[int | None]) -> PartitionLag:
    """One partition's lag, taking the high watermark as the largest of several lower bounds of the log end.

    The broker's answer to ListOffsets is the log end on Apache Kafka, but Tansu (the embedded
    broker) answers the last record *batch*'s base offset + 1, which is short by the records
    that batch holds; the high watermark of a fetch response and the committed offset are lower
    bounds too, and correct ones on Tansu. The largest of them never overshoots, so a lag is
    never invented, and a committed offset is never shown past the end.

    >>> partition_lag("spc", 1, committed=2, low=0, highs=(1, None))  # Tansu, one 2-record batch
    PartitionLag(topic='spc', partition=1, committed=2, high_watermark=2, lag=0)
    >>> partition_lag("spc", 0, committed=None, low=3, highs=(10, 7)).lag  # nothing committed: from the start
    7
    """
    known = [h for h in (*highs, committed) if h is not None]
    start = committed if committed is not None else low
    if not known or start is None:
        return PartitionLag(topic, partition, committed, max(known) if known else None, None)
    high = max(known)
    return PartitionLag(topic, partition, committed, high, max(0, high - start))


def agent_status(runtime: Mapping[str, Any]) -> str:
    """One agent's status (one of :data:`STATUSES`) from its runtime's health snapshot."""
    sink = runtime.get("sink")
    if sink in ("ok", "retrying", "down"):
        return str(sink)
    return "starting" if runtime.get("starting") else "unresponsive"


def health_report(
    runtimes: Mapping[str, Mapping[str, Any]],
    *,
    topics: Mapping[str, str],
    lag: Sequence[PartitionLag] = (),
    lag_error: str | None = None,
    uptime_s: float,
    now: float,
    app_id: str | None = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """The ``/health`` document, from each agent's runtime snapshot and the lag of the assigned partitions.

    ``runtimes`` and ``topics`` are keyed by agent name (``spc``, ``signals``, ``frames``);
    ``now`` is wall-clock time (``time.time()``), used for the last batch's age. Pure, so the
    rules are tested on synthetic snapshots; :func:`status_code` turns the result into 200 or 503.
    """
    agents: dict[str, Any] = {}
    for name, runtime in runtimes.items():
        topic = topics.get(name, name)
        parts = sorted((p for p in lag if p.topic == topic), key=lambda p: p.partition)
        known = [p.lag for p in parts if p.lag is not None]
        last = runtime.get("last_batch_at")
        agent: dict[str, Any] = {
            "status": agent_status(runtime),
            "sink": runtime.get("sink", "unknown"),
            "topic": topic,
            "unit": runtime.get("unit"),
            "processed": runtime.get("processed", 0),
            "batches": runtime.get("batches", 0),
            "counts": dict(runtime.get("counts", {})),
            "last_batch_at": _iso(last) if last is not None else None,
            "last_batch_age_s": round(max(0.0, now - last), 3) if last is not None else None,
            "deadletters": runtime.get("deadletters", 0),
            "deadletters_by_reason": dict(runtime.get("deadletters_by_reason", {})),
            "models": dict(runtime.get("models", {})),
            "partitions": [{k: v for k, v in asdict(p).items() if k != "topic"} for p in parts],
            "lag": sum(known) if known else (0 if not parts else None),
        }
        if runtime.get("pid") is not None:
            agent["pid"] = runtime["pid"]
        if runtime.get("error"):
            agent["error"] = runtime["error"]
        agents[name] = agent
    status = max((a["status"] for a in agents.values()), key=STATUSES.index, default="ok")
    report: dict[str, Any] = {
        "status": status,
        "healthy": status not in FAILING,
        "app_id": app_id,
        "pid": pid,
        "time": _iso(now),
        "uptime_s": round(uptime_s, 3),
        "agents": agents,
    }
    if lag_error:
        report["lag_error"] = lag_error
    return report


def status_code(report: Mapping[str, Any]) -> int:
    """HTTP status for a report: 503 when an agent is down or unresponsive, else 200."""
    return 200 if report.get("healthy") else 503


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LagProbe:
    """Committed offsets and watermarks of the consumer group, asked of the broker by a client of our own.

    Created on the first health check (a worker nobody asks pays nothing) and used from the
    health thread pool, one check at a time. The consumer never subscribes (so it never joins the
    group or causes a rebalance) and never commits (``make_consumer`` turns auto-commit off).
    """

    def __init__(self, bootstrap: str, group_id: str, *, timeout_s: float = LAG_TIMEOUT_S,
                 security: Mapping[str, str] | None = None) -> None:
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._security = dict(security or {})
        self._timeout_s = timeout_s
        self._consumer: Any = None
        self._lock = threading.Lock()

    def measure(self, partitions: Iterable[tuple[str, int]],
                fetched: Mapping[tuple[str, int], int | None] | None = None) -> list[PartitionLag]:
        """Lag of each ``(topic, partition)``; raises ``confluent_kafka.KafkaException`` when the broker fails.

        ``fetched`` are the high watermarks Faust's consumer saw in its last fetch responses
        (``app.consumer.highwater``), another lower bound of the log end (see :func:`partition_lag`).
        """
        from confluent_kafka import TopicPartition

        wanted = sorted(set(partitions))
        if not wanted:
            return []
        deadline = time.monotonic() + self._timeout_s
        with self._lock:
            if self._consumer is None:
                self._consumer = make_consumer(self._bootstrap, self._group_id, security=self._security,
                                               **{"client.id": "linewatch-health"})
            committed = {(tp.topic, tp.partition): tp.offset for tp in
                         self._consumer.committed([TopicPartition(t, p) for t, p in wanted], timeout=self._timeout_s)}
            out = []
            for topic, partition in wanted:
                offset = committed.get((topic, partition))
                done = offset if offset is not None and offset >= 0 else None  # OFFSET_INVALID: nothing committed
                left = deadline - time.monotonic()  # one request per partition: bound them all together
                marks = None if left <= 0 else self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=left, cached=False)
                low, listed = marks if marks is not None else (None, None)
                out.append(partition_lag(topic, partition, committed=done, low=low,
                                         highs=(listed, (fetched or {}).get((topic, partition)))))
            return out

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def health_port(host: str, port: int) -> int:
    """The port to serve ``/health`` on: ``port``, or a free one when ``port`` is 0 or already taken.

    Taken happens when several workers share a host (the demo, the benchmarks, two shells): the
    second one must still start, so it serves on a free port, and its log says which.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is free
            try:
                s.bind((host, port))
                return port
            except OSError as e:
                log.warning("port %d on %s is not free for /health (%s); serving it on a free port instead, "
                            "see the %r line", port, host, e.strerror, HEALTH_URL_MESSAGE)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def web_options(host: str, port: int) -> dict[str, object]:
    """Faust settings that turn its web server on for ``/health`` (``faust_settings`` leaves it off).

    Faust's own ``/router`` and ``/table`` endpoints stay off: linewatch has no tables to route,
    and they would show the cluster's layout to whoever reaches a port opened for probes.
    """
    return {"web_enabled": True, "web_bind": host, "web_host": host, "web_port": port,
            "web_router_enabled": False, "web_tables_enabled": False}


def register_health_view(
    app: faust.App,
    agents: Mapping[str, tuple[str, HealthSource]],
    *,
    bootstrap: str,
    group_id: str,
    url: str,
    security: Mapping[str, str] | None = None,
) -> None:
    """Serve ``GET /health`` on ``app``'s web server; ``agents`` maps agent name to ``(topic, runtime)``.

    ``security`` is the librdkafka TLS/SASL configuration (``Settings.kafka_client_config()``) for
    the lag probe's own broker connection.

    Everything that blocks (the child's pipe, the broker's answers) runs on a small pool of its
    own, never on Faust's event loop, and each part has its own timeout, so a slow part shows up
    as an error in the report instead of a check that hangs.
    """
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=len(agents) + 1, thread_name_prefix="health")
    probe = LagProbe(bootstrap, group_id, security=security)
    topics = {name: topic for name, (topic, _) in agents.items()}

    async def collect() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        names = list(agents)
        lag: list[PartitionLag] = []
        lag_error = None
        fetched: dict[tuple[str, int], int | None] = {}
        try:
            assigned = [tp for tp in app.consumer.assignment() if tp.topic in topics.values()]
        except Exception as e:  # Faust raises ConsumerNotStarted until the consumer thread runs
            assigned, lag_error = [], f"no partition assignment yet ({type(e).__name__})"
        for tp in assigned:
            try:
                fetched[(tp.topic, tp.partition)] = app.consumer.highwater(tp)
            except Exception:  # a partition revoked in between: the broker's figure alone will do
                fetched[(tp.topic, tp.partition)] = None
        snapshots = loop.run_in_executor(pool, lambda: [_snapshot(agents[n][1]) for n in names])
        try:
            lag = await loop.run_in_executor(pool, probe.measure, list(fetched), fetched)
        except Exception as e:  # the broker's problem is reported, not raised
            lag_error = f"could not read committed offsets and watermarks from the broker: {e}"
        runtimes = dict(zip(names, await snapshots, strict=True))
        return health_report(runtimes, topics=topics, lag=lag, lag_error=lag_error,
                             uptime_s=time.monotonic() - started, now=time.time(), app_id=group_id, pid=os.getpid())

    @app.page(HEALTH_PATH)
    async def health(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Per agent: lag per partition, last batch, sink, dead letters by reason, models (200, or 503 when failing)."""
        report = await collect()
        return view.json(report, status=status_code(report))

    @app.task
    async def announce() -> None:
        # After the web server started: the URL is reachable when this line is in the log.
        log.warning("%s %s", HEALTH_URL_MESSAGE, url)

    @app.on_before_shutdown.connect
    async def close_probe(sender: object, **_: object) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, probe.close)


def _snapshot(runtime: HealthSource) -> dict[str, Any]:
    """One runtime's snapshot; an exception becomes an unresponsive agent, not a failed check."""
    try:
        return runtime.health()
    except Exception as e:
        return {"modality": runtime.modality, "sink": "unknown", "error": f"health snapshot failed: {e!r}"}
