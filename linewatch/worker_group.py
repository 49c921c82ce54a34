"""``linewatch worker --processes N``: N Faust workers of one consumer group on this host, supervised.

One Faust worker is one Python interpreter: its event loop, its agents' batch threads and the
SPC scoring child share the cores it gets, and Faust's per-message path is single-threaded. More
throughput on one host therefore means more *processes*, and Kafka's consumer group is what
shares the work between them, exactly as between workers on different hosts: each child is an
ordinary ``linewatch worker --processes 1`` with the same app id (= group id), so every
partition goes to one process of the group and a rebalance moves it when a process comes or
goes. Nothing is shared between the children but Kafka and the database; each has its own
data directory (``<data_dir>/worker-w<i>``: Faust's data, its model cache, the signals state),
its own scoring child and its own ``/health`` port, ``LINEWATCH_HEALTH_PORT + i``
(:func:`~linewatch.lifecycle.group_health_ports`; ``linewatch status`` asks the same ports).
Their output reaches this process's stderr line by line as ``worker-<i> | ...``.

**A child that exits is restarted** (:class:`~linewatch.supervisor.RestartPolicy`: after 1 s,
doubling per quick exit up to 30 s), and the group stops only when one child exits
:data:`RESTARTS_BEFORE_GIVING_UP` times in a row within a minute of starting, with that child's
exit code. Why not stop the whole group at the first error: the other children are healthy and
hold their partitions; stopping them would turn one process's failure into a rebalance and a
model reload of all N. A worker exits on purpose in two cases, and both want a restart of that
process alone: a database outage past its retry budget (exit 70, the others are riding out the
same outage and exit too if it lasts) and a message that killed it mid-batch (the next
incarnation finds the unfinished span in ``processing_attempts`` and sets the message aside).
Why give up at all: a child that cannot start (a bad setting, a broker that refuses it) would
otherwise be restarted for ever behind a parent that looks alive; exiting with its code lets
the supervisor above (Compose's ``restart:``, Kubernetes, systemd) see the crash loop.

SIGTERM and SIGINT stop the group: the children get SIGTERM (Faust's graceful stop: the batch in
flight is finished and committed), then SIGKILL after :data:`STOP_TIMEOUT_S`; the children
run in a process group of their own, so a Ctrl-C in the terminal reaches them only through this
supervisor. If this process is killed outright, the children get SIGTERM from the kernel
(their parent-death signal).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from linewatch.config import Settings
from linewatch.kafka import ensure_topics, partition_counts
from linewatch.lifecycle import GROUP_READY_MESSAGE, group_health_ports
from linewatch.schemas.topics import FRAMES, SCORES, SIGNALS, SPC
from linewatch.storage.migrations import migrate
from linewatch.supervisor import RestartPolicy, Supervisor

log = logging.getLogger(__name__)

#: Quick exits in a row (each within :data:`STABLE_AFTER_S` of its start) after which the group gives up.
RESTARTS_BEFORE_GIVING_UP = 5
#: A child that ran this long was healthy: its next exit starts the count (and the backoff) again.
STABLE_AFTER_S = 60.0
#: The group's restart policy: 1, 2, 4, 8, 16 s between the restarts of a child that keeps exiting.
GROUP_RESTARTS = RestartPolicy(first_delay_s=1.0, max_delay_s=30.0, max_restarts=RESTARTS_BEFORE_GIVING_UP,
                               stable_after_s=STABLE_AFTER_S)
#: Seconds each child has to stop after SIGTERM before it is killed (Compose's stop_grace_period is 30 s).
STOP_TIMEOUT_S = 25.0
#: The topics whose partitions the group's processes share (the dispositions topic has one on purpose).
WORK_TOPICS = (SPC.name, SIGNALS.name, FRAMES.name, SCORES.name)
#: How the supervisor's own lines start, beside its children's ``worker-<i> | ``.
GROUP_LABEL = "group    | "
LOG_FORMAT = GROUP_LABEL + "[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s"


def partition_warning(partitions: Mapping[str, int], processes: int) -> str | None:
    """What to say when some topic has fewer partitions than the group has processes (None: nothing).

    >>> partition_warning({"spc": 4, "signals": 4}, 4) is None
    True
    >>> print(partition_warning({"spc": 2, "signals": 4}, 3))  # doctest: +ELLIPSIS
    3 worker processes but topic spc has 2 partition(s): each partition goes to one process ...
    """
    short = {name: n for name, n in partitions.items() if n < processes}
    if not short:
        return None
    topics = ", ".join(f"{name} has {n} partition(s)" for name, n in sorted(short.items()))
    fewest = min(short.values())
    return (f"{processes} worker processes but topic {topics}: each partition goes to one process of the group, so "
            f"{processes - fewest} process(es) get none of it and sit idle on it. Run at most {fewest} processes "
            f"(--processes {fewest}), or add partitions (kafka-topics.sh --alter --topic NAME --partitions "
            f"{processes}; LINEWATCH_TOPIC_PARTITIONS sets it for topics created later). Across hosts, the "
            "processes of every host count together.")


def child_argv(*, log_level: str | None, config: Path | None) -> list[str]:
    """The command line of one child: the same worker, one process, the same log level and config file."""
    argv = [sys.executable, "-m", "linewatch", "worker", "--processes", "1"]
    if log_level:
        argv += ["--log-level", log_level]
    if config is not None:
        argv += ["--config", str(config)]
    return argv


def _exit_status(returncode: int) -> int:
    """A child's ``Popen.returncode`` as a process exit status (killed by signal N: 128 + N, as shells say).

    >>> _exit_status(70), _exit_status(-9)
    (70, 137)
    """
    return 128 - returncode if returncode < 0 else returncode


def run_worker_group(settings: Settings, *, processes: int, bootstrap: str, database_url: str,
                     log_level: str | None = None, config: Path | None = None) -> int:
    """Prepare topics and schema once, run ``processes`` supervised workers until SIGTERM/SIGINT; the exit status.

    0 after a requested stop; a child's exit status when that child kept exiting and the group
    gave up (see the module docstring).
    """
    _log_to_stderr(log_level or settings.log_level)
    security = settings.kafka_client_config()
    ensure_topics(bootstrap, partitions=settings.topic_partitions, security=security)
    warning = partition_warning(partition_counts(bootstrap, WORK_TOPICS, security=security), processes)
    if warning:
        log.warning(warning)
    migrate(database_url)
    ports = group_health_ports(settings.health_port, processes)
    log.warning("starting %d worker processes of group %r (health ports %s)", processes, settings.app_id,
                ", ".join(map(str, ports)) if settings.health_port else "picked by each")
    supervisor = Supervisor("worker", env=os.environ, data_dir=settings.data_dir, slots=processes,
                            argv=child_argv(log_level=log_level, config=config), restart=GROUP_RESTARTS,
                            slot_env=lambda i: {"LINEWATCH_HEALTH_PORT": str(ports[i])})
    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        supervisor.start()
        status = _watch(supervisor, processes, stopping)
    finally:
        if received:
            log.warning("%s received: stopping the %d worker processes", signal.Signals(received[0]).name, processes)
        supervisor.stop(timeout=STOP_TIMEOUT_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in supervisor.left_behind:
        log.error("a process outlived its worker and was killed: %s", line)
    log.warning("all %d worker processes stopped", processes)
    return status


def _watch(supervisor: Supervisor, processes: int, stopping: threading.Event) -> int:
    """Report exits and readiness until a stop is asked (0) or a child is given up (its exit status)."""
    announced, reported = False, 0
    while not stopping.wait(0.2):
        for e in supervisor.exits[reported:]:
            log.warning("worker-%d exited with status %d (incarnation %d); restarting it unless it keeps exiting",
                        e.slot, _exit_status(e.returncode), e.incarnation)
        reported = len(supervisor.exits)
        if not announced and supervisor.all_ready():
            announced = True
            log.warning("%s all %d processes have joined the group", GROUP_READY_MESSAGE, processes)
        gave_up = supervisor.given_up_exit()
        if gave_up is not None:
            status = _exit_status(gave_up.returncode)
            log.error("worker-%d exited %d times in a row within %.0f s of starting (last status %d): stopping the "
                      "group with that status; its last lines:\n%s", gave_up.slot, RESTARTS_BEFORE_GIVING_UP + 1,
                      STABLE_AFTER_S, status, supervisor.output.tail(gave_up.slot))
            return status or 1
    return 0


def _log_to_stderr(level: str) -> None:
    """The supervisor's own lines, marked :data:`GROUP_LABEL` so they read apart from its children's."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    log.setLevel(logging.INFO if level.lower() in ("debug", "info") else logging.WARNING)
    log.propagate = False
