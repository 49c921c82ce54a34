"""Run the dashboards' and alert rules' SQL against a database, as Grafana's role, and check what comes back.

Apart from :mod:`linewatch.dashboards.queries` (the registry) because it needs the alert rules' queries
too (:mod:`linewatch.dashboards.alerting`), which are built on the registry's :class:`PanelQuery`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from linewatch.dashboards.alerting import alert_queries
from linewatch.dashboards.queries import (
    KIND_OF_OID,
    QUERIES,
    Flavour,
    PanelQuery,
    QueryResult,
    column_problems,
    expanded_queries,
)


def check_queries(database_url: str, *, role: str | None = "linewatch_reader", flavour: Flavour = "plain",
                  variables: Mapping[str, str] | None = None, start: datetime | None = None,
                  end: datetime | None = None, interval_s: float = 60,
                  queries: Iterable[PanelQuery] | None = None) -> list[QueryResult]:
    """Run every registered query (default: :data:`QUERIES` plus the alert rules' queries) against a
    database as ``role``, read-only and rolled back, and compare its columns and their types with the
    registry.

    Catches what a reviewer cannot: a renamed column, a missing grant, a count that became text.
    ``role`` comes from the command line, so it is quoted as an identifier, never pasted into the SQL;
    ``None`` runs as the login itself (Grafana's own read-only login, as docker-compose has it).
    """
    import psycopg

    if queries is None:
        queries = [*QUERIES.values(), *alert_queries()]
    statements = expanded_queries(flavour=flavour, start=start or datetime(2000, 1, 1, tzinfo=UTC),
                                  end=end or datetime(2100, 1, 1, tzinfo=UTC), interval_s=interval_s,
                                  variables=variables, queries=queries)
    results = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for q, sql in statements:
            try:
                desc, rows = run_read_only(conn, sql, role)
                n = len(rows)
                names = tuple(d.name for d in desc)
                kinds = tuple(KIND_OF_OID.get(d.type_code, f"oid {d.type_code}") for d in desc)
                results.append(QueryResult(q, names, kinds, n, column_problems(q, names, kinds, flavour)))
            except psycopg.Error as e:
                results.append(QueryResult(q, (), (), 0, f"{type(e).__name__}: {e}".strip()))
    return results


def run_read_only(conn: Any, sql: str, role: str | None) -> tuple[Sequence[Any], list[tuple]]:
    """One statement as Grafana runs it: read-only, as ``role`` (quoted as an identifier), rolled back after.

    Returns the cursor's column descriptions and the rows; ``conn`` is an autocommit psycopg connection.
    """
    from psycopg import sql as pgsql

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        if role:
            conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(role)))
        cur = conn.execute(sql)
        return tuple(cur.description or ()), cur.fetchall()
