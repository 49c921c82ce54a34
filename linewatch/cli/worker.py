"""``linewatch worker`` and ``linewatch up``: the Faust worker, and a local broker and database for it.

The worker never starts embedded services: in production it runs against Apache Kafka and
TimescaleDB, and locally against the pair ``linewatch up`` keeps running in another shell.
"""

from __future__ import annotations

from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, settings, wait_for_signal
from linewatch.errors import ConfigError


def worker_cmd(
    config: ConfigOption = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warn, error or crit")] = None,
    processes: Annotated[int | None, typer.Option(
        "--processes", min=0, metavar="N",
        help="Faust workers to run in one consumer group, each its own OS process with its own scoring child "
        "and /health port (LINEWATCH_HEALTH_PORT + i); this process supervises them (default: "
        "LINEWATCH_WORKER_PROCESSES; 0 = one per two CPU cores). 1 runs the worker in this process")] = None,
) -> None:
    """Run the Faust worker: consume input topics, score, persist and publish.

    Needs LINEWATCH_BROKER_URL and LINEWATCH_DATABASE_URL (or `linewatch up` running elsewhere).

    With --processes N > 1, runs N workers of one consumer group and restarts one that exits.

    The topics need at least N partitions for all N to get work (other hosts with the same app id share them too).
    """
    from linewatch.lifecycle import worker_processes

    s = settings(config)
    if s.embedded_broker or s.embedded_database:
        raise ConfigError(
            "the worker needs an existing broker and database: set LINEWATCH_BROKER_URL and "
            "LINEWATCH_DATABASE_URL (for a local pair, run `linewatch up` and copy what it prints)"
        )
    bootstrap = s.broker_url.removeprefix("kafka://")  # type: ignore[union-attr]
    database_url = s.database_url.get_secret_value()  # type: ignore[union-attr]
    n = worker_processes(s.worker_processes if processes is None else processes)
    if n == 1:
        from linewatch.streams.worker import run_worker

        run_worker(s, bootstrap=bootstrap, database_url=database_url, loglevel=log_level)
        return
    from linewatch.worker_group import run_worker_group

    status = run_worker_group(s, processes=n, bootstrap=bootstrap, database_url=database_url, log_level=log_level,
                              config=config)
    if status:
        raise typer.Exit(status)


def up_cmd(config: ConfigOption = None) -> None:
    """Start the embedded broker and PostgreSQL, migrate, print their URLs and wait for Ctrl-C."""
    from linewatch.embedded.stack import Stack
    from linewatch.kafka import ensure_topics
    from linewatch.storage.migrations import migrate

    s = settings(config)
    with Stack(s) as stack:
        ensure_topics(stack.bootstrap, partitions=s.topic_partitions, security=stack.kafka_security)
        migrate(stack.database_url)
        print(f"export LINEWATCH_BROKER_URL={stack.bootstrap}")
        print(f"export LINEWATCH_DATABASE_URL={stack.database_url}", flush=True)
        console.print("embedded services are up; Ctrl-C stops them")
        wait_for_signal()
