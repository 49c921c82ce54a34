"""``linewatch serve``: the synchronous inspection API (see :mod:`linewatch.serve` and ``docs/api.md``)."""

from __future__ import annotations

from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, settings


def serve_cmd(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(
        help="address to bind (default serve_host, 127.0.0.1); anything but loopback needs LINEWATCH_SERVE_API_KEYS")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port to bind (default serve_port, 8080)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level: debug, info, warning or error")] = "warning",
) -> None:
    """Serve the inspection API: score a frame or SPC records now over HTTP, with the worker's models.

    POST /v1/inspect/frame and /v1/inspect/spc answer with the verdict at once.

    Every inspected event is also published to its topic (through an on-disk spool while Kafka is
    away), so the worker stores it.

    Without LINEWATCH_BROKER_URL / LINEWATCH_DATABASE_URL the embedded broker and PostgreSQL of the
    data dir are started (with the demo's models once `linewatch demo` ran).

    The OpenAPI page is at /docs; one JSON access-log line per request goes to stdout.
    """
    import logging

    from linewatch.embedded.stack import Stack
    from linewatch.errors import InfrastructureError
    from linewatch.kafka import ensure_topics
    from linewatch.serve.http import create_app
    from linewatch.serve.server import check_bind, configure_access_log, uvicorn_server
    from linewatch.serve.service import InspectionService
    from linewatch.storage.migrations import migrate

    s = settings(config)
    bind_host, bind_port = host or s.serve_host, port if port is not None else s.serve_port
    check_bind(bind_host, s)  # before anything starts: a refused bind must not leave services behind
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_access_log()
    with Stack(s) as stack:
        migrate(stack.database_url)
        try:
            ensure_topics(stack.bootstrap, partitions=s.topic_partitions, security=stack.kafka_security)
        except InfrastructureError as e:  # the API serves without Kafka: events wait in the spool
            console.print(f"[yellow]warning:[/] {e}; inspected events are spooled until the broker answers")
        service = InspectionService(s, bootstrap=stack.bootstrap, database_url=stack.database_url,
                                    security=stack.kafka_security)
        console.print(f"linewatch serve on http://{bind_host}:{bind_port} (OpenAPI page: /docs); spool "
                      f"{s.serve_spool_path}; Ctrl-C stops it")
        uvicorn_server(create_app(service), host=bind_host, port=bind_port, log_level=log_level).run()  # type: ignore[attr-defined]
