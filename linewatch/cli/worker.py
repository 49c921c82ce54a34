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
) -> None:
    """Run the Faust worker: consume input topics, score, persist and publish.

    Needs LINEWATCH_BROKER_URL and LINEWATCH_DATABASE_URL (or `linewatch up` running elsewhere);
    start several with the same app id to share partitions.
    """
    from linewatch.streams.worker import run_worker

    s = settings(config)
    if s.embedded_broker or s.embedded_database:
        raise ConfigError(
            "the worker needs an existing broker and database: set LINEWATCH_BROKER_URL and "
            "LINEWATCH_DATABASE_URL (for a local pair, run `linewatch up` and copy what it prints)"
        )
    run_worker(s, bootstrap=s.broker_url.removeprefix("kafka://"),  # type: ignore[union-attr]
               database_url=s.database_url.get_secret_value(), loglevel=log_level)  # type: ignore[union-attr]


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
