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
acknowledging messages it could not store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from linewatch.errors import InfrastructureError
from linewatch.schemas.rows import Row, columns

log = logging.getLogger(__name__)

#: Backoff between reconnect attempts (seconds); the sum (~30 s) bounds how long a worker
#: waits for a database restart before it gives up and lets its supervisor restart it.
RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def retry_schedule(total_s: float) -> tuple[float, ...]:
    """Doubling backoff delays (from 0.25 s) whose sum stays within ``total_s``.

    >>> retry_schedule(4.0)
    (0.25, 0.5, 1.0, 2.0)
    """
    delays: list[float] = []
    delay = 0.25
    while sum(delays) + delay <= total_s:
        delays.append(delay)
        delay = min(delay * 2, 15.0)
    return tuple(delays)


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = database_url
        self._retry_delays = tuple(retry_delays)
        self._sleep = sleep
        self._conn: psycopg.Connection | None = None
        self._staged: set[str] = set()

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url)
            self._staged = set()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, batches: dict[type[Row], Sequence[tuple]]) -> WriteResult:
        """Write row tuples (in :func:`columns` order) for each row type, all in one transaction."""
        attempt = 0
        while True:
            try:
                return self._write_once(batches)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                self.close()
                if attempt >= len(self._retry_delays):
                    raise InfrastructureError(
                        f"database unavailable after {attempt + 1} attempts: {e}; "
                        "check LINEWATCH_DATABASE_URL and that the server is up"
                    ) from e
                delay = self._retry_delays[attempt]
                log.warning("database write failed (%s); retrying in %.1f s", e, delay)
                self._sleep(delay)
                attempt += 1

    def _write_once(self, batches: dict[type[Row], Sequence[tuple]]) -> WriteResult:
        conn = self._connect()
        result = WriteResult()
        with conn.transaction(), conn.cursor() as cur:
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
