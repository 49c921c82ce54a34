"""Every linewatch connection to PostgreSQL, opened one way: bounded connect, keepalives, statement timeout.

Why: a database that hangs (a stopped server, a dead host, a half-open connection after a network
change) must become an outage the worker notices and reports, never a call that blocks forever.
libpq bounds the connect (``connect_timeout``), TCP keepalives and ``tcp_user_timeout`` end a
connection to a host that stopped answering, and ``statement_timeout`` makes a live server end a
statement that runs away. A server process that is stopped while the host is up still has its
kernel acknowledge packets, so only a client-side deadline catches that; the writer adds one
(:class:`~linewatch.storage.writer.BatchWriter`).

psycopg's errors are left as they are: what a failed connection means (a bad query? a database
that is down?) is the caller's to say.
"""

from __future__ import annotations

from typing import Any

import psycopg

#: libpq gives up connecting after this many seconds (a stopped server accepts TCP but never answers).
CONNECT_TIMEOUT_S = 5
#: The server ends any statement that runs longer (a batch COPY takes well under a second).
STATEMENT_TIMEOUT_S = 30
#: Keepalive probes start after this idle time, every few seconds, and give up after a few misses.
KEEPALIVES_IDLE_S = 10
KEEPALIVES_INTERVAL_S = 3
KEEPALIVES_COUNT = 3
#: Unacknowledged data older than this ends the connection (Linux TCP_USER_TIMEOUT).
TCP_USER_TIMEOUT_MS = 15_000


def connection_options(*, statement_timeout_s: float | None = STATEMENT_TIMEOUT_S) -> dict[str, Any]:
    """The libpq options every connection gets (``None`` leaves the server's statement timeout alone)."""
    options: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE_S,
        "keepalives_interval": KEEPALIVES_INTERVAL_S,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }
    if statement_timeout_s is not None:
        options["options"] = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    return options


def connect(url: str, *, statement_timeout_s: float | None = STATEMENT_TIMEOUT_S, **options: Any) -> psycopg.Connection:
    """A new connection to ``url`` with :func:`connection_options` (``options`` override them).

    A context manager: commits and closes on exit.
    """
    return psycopg.connect(url, **{**connection_options(statement_timeout_s=statement_timeout_s), **options})
