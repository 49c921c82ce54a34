"""A replay's results in the ``replay`` schema (``sql/180_replay.sql``), under its run id, with COPY.

The rows are the live pipeline's own row tuples (the same :class:`~linewatch.schemas.rows.Row`
types the worker writes) with the run id in front, so SQL over ``replay.scores`` reads like SQL
over ``scores`` plus ``WHERE run_id = ...``. Live tables are never written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from psycopg import sql

from linewatch.schemas.rows import AlertRow, AlertSuppressionRow, DeadLetterRow, Row, ScoreRow, ShadowScoreRow, columns
from linewatch.storage.connection import connect
from linewatch.streams.batch import BatchResult

#: The row types a replay keeps (inputs and their features stay where the plant put them).
STORED: tuple[type[Row], ...] = (ScoreRow, ShadowScoreRow, AlertRow, AlertSuppressionRow, DeadLetterRow)
SCHEMA = "replay"


class ReplayStore:
    """One replay run's rows: a ``replay.runs`` row at the start, COPY per slice, ``replay.run_results`` at the end."""

    def __init__(self, database_url: str, run_id: uuid.UUID | None = None) -> None:
        self.url = database_url
        self.run_id = run_id or uuid.uuid4()
        self._conn = connect(database_url)
        self.written: dict[str, int] = {}

    def start(self, *, source: str, description: str, arguments: Mapping[str, Any],
              models: Mapping[str, str]) -> None:
        with self._conn.transaction():
            self._conn.execute(
                "INSERT INTO replay.runs (run_id, source, description, arguments, models) VALUES (%s, %s, %s, %s, %s)",
                (self.run_id, source, description, json.dumps(arguments, default=str), json.dumps(dict(models))))

    def write(self, result: BatchResult) -> None:
        rows = result.rows()
        with self._conn.transaction(), self._conn.cursor() as cur:
            for row_type in STORED:
                batch = rows.get(row_type) or []
                if not batch:
                    continue
                cols = ("run_id", *columns(row_type))
                statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                    sql.Identifier(SCHEMA), sql.Identifier(row_type.__table__),
                    sql.SQL(", ").join(map(sql.Identifier, cols)))
                with cur.copy(statement) as copy:
                    for row in batch:
                        copy.write_row((self.run_id, *row))
                self.written[row_type.__table__] = self.written.get(row_type.__table__, 0) + len(batch)

    def finish(self, *, counts: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        with self._conn.transaction():
            self._conn.execute("INSERT INTO replay.run_results (run_id, counts, metrics) VALUES (%s, %s, %s)",
                               (self.run_id, json.dumps(dict(counts), default=str),
                                json.dumps(dict(metrics), default=str)))

    def close(self) -> None:
        self._conn.close()
