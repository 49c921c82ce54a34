"""The data behind ``linewatch report``: the dashboards' own registry queries, run once with concrete values.

Why the registry and not new SQL: the pictures must show what Grafana would show. Every view names the
:data:`~linewatch.dashboards.queries.QUERIES` keys its panels use (:data:`VIEW_QUERIES`); each is expanded with
:func:`~linewatch.dashboards.queries.expand_macros` for the report's time range, bucket width and variables, and
run read-only (rolled back) as Grafana's reader role where the login may take it, like
:func:`~linewatch.dashboards.check.check_queries`. Rendering (:mod:`linewatch.dashboards.report`) then only
reads :class:`Frame` objects and never touches the database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from linewatch.dashboards.check import run_read_only
from linewatch.dashboards.queries import QUERIES, expand_macros

#: The read-only role Grafana's datasource uses (sql/ grants it SELECT on the views).
READER_ROLE = "linewatch_reader"

#: Per view, the registry keys it runs, in the order the page shows them.
VIEW_QUERIES: dict[str, tuple[str, ...]] = {
    "overview": ("overview.open-alerts", "overview.critical-open", "overview.incidents", "overview.deadletters",
                 "overview.open-by-asset", "overview.fused-heatmap", "overview.incidents-table"),
    "asset": ("asset.score.spc", "asset.score.signals", "asset.score.frames", "asset.annotation.alerts"),
    "spc": ("spc.individuals", "spc.moving-range", "spc.violations", "spc.capability-daily"),
    "drift": ("drift.score-psi", "drift.input-psi", "drift.alarm-rate", "drift.latest"),
}

#: Bucket widths a range is split into, as Grafana rounds ``$__interval`` (seconds).
_NICE_INTERVALS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def bucket_seconds(start: datetime, end: datetime, points: int = 240) -> int:
    """The ``$__interval`` for a range: the smallest nice width giving at most ``points`` buckets, as a
    Grafana panel about a thousand pixels wide would ask for."""
    span = max((end - start).total_seconds(), 1.0)
    return next((s for s in _NICE_INTERVALS_S if span / s <= points), _NICE_INTERVALS_S[-1])


def _plain(value: Any) -> Any:
    """Decimals (``round(x::numeric, n)``) as floats, so numpy and matplotlib take them."""
    return float(value) if isinstance(value, Decimal) else value


@dataclass(frozen=True)
class Frame:
    """One query's result: its registry key, column names and rows (Python values, times UTC-aware)."""

    key: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """One column's values, in row order."""
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def records(self) -> list[dict[str, Any]]:
        """The rows as ``{column: value}``."""
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def series(self, value: str, by: str = "metric") -> dict[str, tuple[list[datetime], list[float | None]]]:
        """A long time-series result (``time``, ``metric``, values) split into one (times, values) per metric,
        the way Grafana turns a ``time_series`` query into series."""
        out: dict[str, tuple[list[datetime], list[float | None]]] = {}
        ti, mi, vi = self.columns.index("time"), self.columns.index(by), self.columns.index(value)
        for r in self.rows:
            times, values = out.setdefault(str(r[mi]), ([], []))
            times.append(r[ti])
            values.append(r[vi])
        return out


@dataclass(frozen=True)
class ReportData:
    """Everything the four views show, fetched once: range, bucket width, the variables chosen, the frames."""

    start: datetime
    end: datetime
    interval_s: int
    asset: str | None
    sku: str | None
    characteristic: str | None
    role: str | None
    frames: dict[str, Frame] = field(default_factory=dict)

    def frame(self, key: str) -> Frame:
        return self.frames[key]


class _Runner:
    """Runs registry queries on one connection, each read-only and rolled back, as the reader role if it may."""

    def __init__(self, conn: Any, start: datetime, end: datetime, interval_s: int) -> None:
        self.conn, self.start, self.end, self.interval_s = conn, start, end, interval_s
        self.role = READER_ROLE if self._may_set_role(READER_ROLE) else None

    def _may_set_role(self, role: str) -> bool:
        import psycopg
        from psycopg import sql as pgsql

        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(role)))
            return True
        except psycopg.Error:
            return False

    def run(self, key: str, variables: Mapping[str, str]) -> Frame:
        query = QUERIES[key]
        text = expand_macros(query.sql, start=self.start, end=self.end, interval_s=self.interval_s,
                             variables=variables)
        desc, rows = run_read_only(self.conn, text, self.role)
        names = tuple(d.name for d in desc)
        if names and names[0] == "time" and "$__timeGroup" in query.sql:
            # plain PostgreSQL's $__timeGroupAlias gives epoch seconds; Grafana reads them as time, so do we
            rows = [(datetime.fromtimestamp(float(r[0]), UTC), *r[1:]) for r in rows]
        return Frame(key, names, [tuple(_plain(v) for v in r) for r in rows])


def _first(frame: Frame) -> str | None:
    return str(frame.rows[0][0]) if frame.rows else None


def _busiest_asset(incidents: Frame) -> str | None:
    """The asset with the most routed alerts among the range's incidents (the overview's incidents table)."""
    counts = Counter(r["asset"] for r in incidents.records() if not r["shadow"])
    return min(counts, key=lambda a: (-counts[a], a)) if counts else None


def fetch_report(conn: Any, *, start: datetime, end: datetime, asset: str | None = None,
                 characteristic: str | None = None, views: Sequence[str] = tuple(VIEW_QUERIES)) -> ReportData:
    """Run every view's registry queries for ``[start, end]`` on ``conn`` (an autocommit psycopg connection).

    ``asset`` defaults to the asset with the most routed alerts in the range (else the first asset with
    scores, else the first with SPC data); the SKU and ``characteristic`` default to that asset's first ones
    in the range (the SPC dashboard's own variable queries). A view whose data is missing gets empty frames,
    never an error.
    """
    if end <= start:
        raise ValueError(f"the report's range is empty: {start.isoformat()} is not before {end.isoformat()}")
    runner = _Runner(conn, start, end, bucket_seconds(start, end))
    frames: dict[str, Frame] = {}
    none = {"asset": "", "sku": "", "characteristic": ""}
    frames["overview.incidents-table"] = runner.run("overview.incidents-table", none)
    if asset is None:
        asset = (_busiest_asset(frames["overview.incidents-table"]) or _first(runner.run("asset.var.asset", none))
                 or _first(runner.run("spc.var.asset", none)))
    sku = None
    if asset is not None:
        skus = runner.run("spc.var.sku", {**none, "asset": asset}).column("sku")
        for candidate in skus:
            chars = runner.run("spc.var.characteristic",
                               {**none, "asset": asset, "sku": candidate}).column("characteristic")
            if characteristic is None and chars:
                sku, characteristic = candidate, chars[0]
                break
            if characteristic in chars:
                sku = candidate
                break
    variables = {"asset": asset or "", "sku": sku or "", "characteristic": characteristic or ""}
    for view in views:
        for key in VIEW_QUERIES[view]:
            if key not in frames:
                frames[key] = runner.run(key, variables)
    return ReportData(start, end, runner.interval_s, asset, sku, characteristic, runner.role, frames)
