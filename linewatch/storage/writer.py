"""Batched, idempotent writes with COPY.

COPY is the fastest way into PostgreSQL but has no conflict handling. Each table's rows are
first COPied straight into the table inside a savepoint; only when that hits a natural-key
conflict (a redelivered or replayed event) does the batch go through a temporary staging
table and one ``INSERT ... ON CONFLICT DO NOTHING``, so the common case pays for one pass
over the data and a redelivered batch is still a no-op. The whole batch (measurements,
scores, dead letters) commits in one transaction, and the caller acknowledges the Kafka
offsets only after :meth:`BatchWriter.write` returns.

Connection failures are retried with backoff; when the database stays away the error is an
:class:`~linewatch.errors.InfrastructureError` so the worker stops loudly instead of
acknowledging messages it could not store. A database that hangs is the same outage: every
attempt has a client-side deadline (``attempt_timeout_s``), past which the connection's socket
is shut down from a watchdog thread, so the blocked call fails and the retry path takes over
(keepalives and the server's statement timeout cannot catch a server process that is stopped:
its host's kernel still answers TCP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from psycopg import sql

from linewatch.errors import InfrastructureError
from linewatch.schemas.rows import Row, columns
from linewatch.storage.connection import STATEMENT_TIMEOUT_S, connection_options

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Longest pause between two attempts: a database that comes back is noticed within a second.
MAX_RETRY_DELAY_S = 1.0
#: How long a worker retries an unavailable database before it exits (``LINEWATCH_DB_RETRY_TOTAL_S``).
DEFAULT_RETRY_TOTAL_S = 30.0
#: One attempt (connect, COPY, commit) that takes longer than this is a hung database.
DEFAULT_ATTEMPT_TIMEOUT_S = 10.0


def retry_schedule(total_s: float) -> tuple[float, ...]:
    """Backoff delays doubling from 0.25 s up to :data:`MAX_RETRY_DELAY_S`, summing to at most ``total_s``.

    >>> retry_schedule(4.0)
    (0.25, 0.5, 1.0, 1.0, 1.0)
    >>> round(sum(retry_schedule(30.0)), 2), max(retry_schedule(30.0))
    (29.75, 1.0)
    """
    delays: list[float] = []
    delay = 0.25
    while sum(delays) + delay <= total_s:
        delays.append(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY_S)
    return tuple(delays)


RETRY_DELAYS_S: tuple[float, ...] = retry_schedule(DEFAULT_RETRY_TOTAL_S)


@contextmanager
def deadline(conn: psycopg.Connection | None, seconds: float, what: str) -> Iterator[None]:
    """Shut ``conn``'s socket down if the enclosed work is still running after ``seconds``.

    Why a socket shutdown: it is the one thing that wakes a thread blocked in libpq on a server
    that stopped answering; the blocked call then fails with ``OperationalError`` like any lost
    connection. Shutting down a duplicate of the descriptor acts on the shared socket.
    """
    if conn is None or seconds <= 0:
        yield
        return
    fd = conn.pgconn.socket

    def expire() -> None:
        log.warning("%s took longer than %.0f s; treating the database as hung", what, seconds)
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError as e:
            log.warning("could not interrupt the hung connection: %s", e)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()




#: ``(topic, partition, first offset, last offset)``: what a batch (or one message) covers.
Span = tuple[str, int, int, int]


def spans_of(messages: Sequence[object]) -> list[Span]:
    """One span per topic partition, from messages with ``topic``, ``partition`` and ``offset``.

    >>> from types import SimpleNamespace as M
    >>> spans_of([M(topic="spc", partition=0, offset=7), M(topic="spc", partition=0, offset=5),
    ...           M(topic="spc", partition=1, offset=2)])
    [('spc', 0, 5, 7), ('spc', 1, 2, 2)]
    """
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    for m in messages:
        key = (m.topic, m.partition)  # type: ignore[attr-defined]
        lo, hi = bounds.get(key, (m.offset, m.offset))  # type: ignore[attr-defined]
        bounds[key] = (min(lo, m.offset), max(hi, m.offset))  # type: ignore[attr-defined]
    return [(t, p, lo, hi) for (t, p), (lo, hi) in sorted(bounds.items())]


@dataclass
class WriteResult:
    inserted: dict[str, int] = field(default_factory=dict)
    offered: dict[str, int] = field(default_factory=dict)


class BatchWriter:
    """One connection, one transaction per batch; safe to call from a worker thread."""

    def __init__(
        self,
        database_url: str,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = database_url
        self._clock = clock
        self._retry_delays = tuple(retry_delays)
        self._attempt_timeout_s = attempt_timeout_s
        self._sleep = sleep
        self._conn: psycopg.Connection | None = None
        self._staged: set[str] = set()
        #: ``ok``, ``retrying`` or ``down``: what a health check reports about the sink.
        self.state = "ok"

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # libpq bounds the connect itself (connect_timeout), so no deadline is needed here.
            options = connection_options(statement_timeout_s=min(STATEMENT_TIMEOUT_S, self._attempt_timeout_s))
            # libpq's smallest connect timeout is 2 s; half an attempt leaves time to COPY after it.
            options["connect_timeout"] = max(2, min(options["connect_timeout"], int(self._attempt_timeout_s / 2)))
            self._conn = psycopg.connect(self._url, **options)
            self._staged = set()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, batches: dict[type[Row], Sequence[tuple]], *, finished: Sequence[Span] = (),
              alone: bool = False) -> WriteResult:
        """Write row tuples (in :func:`columns` order) for each row type, all in one transaction.

        ``finished`` spans are removed from ``processing_attempts`` in the same transaction: the
        rows of those offsets are durable, so they are no longer in flight. A batch clears every
        unfinished span it overlaps; one message processed ``alone`` clears only its own record.
        """
        return self._with_retries(lambda: self._write_once(batches, finished, alone))

    def begin_batch(self, spans: Sequence[Span]) -> list[Span]:
        """Record that a batch covering ``spans`` is being processed; return the unfinished spans it overlaps.

        An unfinished span (of a batch or of a message processed alone) means a worker died while
        those offsets were in flight; the caller processes the messages inside it one at a time.
        """
        return self._with_retries(lambda: self._begin_once(spans, alone=False)[1])

    def begin_alone(self, span: Span) -> int:
        """Record that one message is processed on its own; return how often that began and never finished.

        Only earlier attempts at this very message alone count, so the batch it was part of when a
        worker died (possibly for another message, or killed from outside) does not condemn it.
        """
        return self._with_retries(lambda: self._begin_once([span], alone=True)[0])

    def _begin_once(self, spans: Sequence[Span], *, alone: bool) -> tuple[int, list[Span]]:
        conn = self._connect()
        previous, stale = 0, []
        with deadline(conn, self._attempt_timeout_s, "recording a processing attempt"), conn.transaction():
            for topic, partition, first, last in spans:
                if alone:
                    row = conn.execute(
                        """SELECT attempts FROM processing_attempts WHERE topic = %s AND "partition" = %s
                           AND first_offset = %s AND last_offset = %s AND alone""",
                        (topic, partition, first, last)).fetchone()
                    previous = max(previous, int(row[0]) if row else 0)
                else:
                    stale += [(topic, partition, int(a), int(b)) for a, b in conn.execute(
                        """SELECT first_offset, last_offset FROM processing_attempts WHERE topic = %s
                           AND "partition" = %s AND first_offset <= %s AND last_offset >= %s""",
                        (topic, partition, last, first))]
                conn.execute(
                    """INSERT INTO processing_attempts (topic, "partition", first_offset, last_offset, alone, attempts)
                       VALUES (%s, %s, %s, %s, %s, 1)
                       ON CONFLICT (topic, "partition", first_offset, last_offset, alone)
                       DO UPDATE SET attempts = processing_attempts.attempts + 1, last_attempt_at = now()""",
                    (topic, partition, first, last, alone))
        return previous, stale

    def _with_retries(self, attempt_once: Callable[[], _T]) -> _T:
        attempt, first_failure = 0, None
        while True:
            try:
                result = attempt_once()
                if self.state != "ok":
                    log.warning("database write succeeded again after %d failed attempt(s)", attempt)
                self.state = "ok"
                return result
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                self.close()
                now = self._clock()
                first_failure = now if first_failure is None else first_failure
                # Wall time, not only the count of attempts: connects to a hung server take seconds each.
                if attempt >= len(self._retry_delays) or now - first_failure >= sum(self._retry_delays):
                    self.state = "down"
                    raise InfrastructureError(
                        f"database unavailable after {attempt + 1} attempts over "
                        f"{now - first_failure:.0f} s: {str(e).strip()}; "
                        "check LINEWATCH_DATABASE_URL and that the server is up"
                    ) from e
                self.state = "retrying"
                delay = self._retry_delays[attempt]
                log.warning("database write failed (%s); retrying in %.2f s", str(e).strip(), delay)
                self._sleep(delay)
                attempt += 1

    def _write_once(self, batches: dict[type[Row], Sequence[tuple]], finished: Sequence[Span],
                    alone: bool) -> WriteResult:
        conn = self._connect()
        with deadline(conn, self._attempt_timeout_s, "a database write"):
            return self._write_rows(conn, batches, finished, alone)

    def _write_rows(self, conn: psycopg.Connection, batches: dict[type[Row], Sequence[tuple]],
                    finished: Sequence[Span], alone: bool) -> WriteResult:
        result = WriteResult()
        with conn.transaction(), conn.cursor() as cur:
            for topic, partition, first, last in finished:
                if alone:
                    cur.execute("""DELETE FROM processing_attempts WHERE topic = %s AND "partition" = %s
                                   AND first_offset = %s AND last_offset = %s AND alone""",
                                (topic, partition, first, last))
                else:
                    cur.execute("""DELETE FROM processing_attempts WHERE topic = %s AND "partition" = %s
                                   AND first_offset <= %s AND last_offset >= %s""", (topic, partition, last, first))
            for row_type, rows in batches.items():
                if not rows:
                    continue
                table = row_type.__table__
                try:
                    # Fast path: COPY straight into the table inside a savepoint. A redelivered
                    # event violates the natural key and sends the batch down the staged path.
                    with conn.transaction():
                        self._copy(cur, table, columns(row_type), rows)
                    result.inserted[table] = len(rows)
                except psycopg.errors.UniqueViolation:
                    result.inserted[table] = self._staged_insert(cur, row_type, rows)
                result.offered[table] = len(rows)
        return result

    @staticmethod
    def _copy(cur: psycopg.Cursor, table: str, cols: tuple[str, ...], rows: Sequence[tuple]) -> None:
        col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), col_list)) as copy:
            for row in rows:
                copy.write_row(row)

    def _staged_insert(self, cur: psycopg.Cursor, row_type: type[Row], rows: Sequence[tuple]) -> int:
        """COPY into a temporary table, then INSERT ... ON CONFLICT DO NOTHING: idempotent on the keys."""
        table = row_type.__table__
        stage = f"_stage_{table}"
        cols = columns(row_type)
        if stage not in self._staged:
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS INCLUDING GENERATED) "
                    "ON COMMIT DELETE ROWS"
                ).format(
                    sql.Identifier(stage), sql.Identifier(table)
                )
            )
            self._staged.add(stage)
        self._copy(cur, stage, cols, rows)
        col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT DISTINCT ON ({}) {} FROM {} ON CONFLICT DO NOTHING").format(
                sql.Identifier(table), col_list,
                sql.SQL(", ").join(map(sql.Identifier, row_type.__key__)), col_list, sql.Identifier(stage),
            )
        )
        inserted = cur.rowcount
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(stage)))
        return inserted
