"""The one Grafana datasource every panel, variable and annotation queries, and a raw-SQL query type for it.

The Foundation SDK ships query builders for Prometheus, Loki, Tempo, Elasticsearch, CloudWatch and others
but none for Grafana's core PostgreSQL datasource, so :class:`SqlTarget` is a small
``cog`` builder that produces the exact JSON Grafana's SQL editor saves in code mode. Panels take it
through the SDK's ordinary ``with_target``, annotations through ``AnnotationQuery.target``.
"""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

#: The datasource every panel and alert query uses; provisioned with this uid so the JSON
#: needs no ``${DS_...}`` import inputs.
DATASOURCE_UID = "linewatch-pg"
#: Grafana's core PostgreSQL plugin id since 10.x (``postgres`` is the old alias).
DATASOURCE_TYPE = "grafana-postgresql-datasource"
#: Grafana folder (title and uid) holding the dashboards and the alert rules.
FOLDER = "linewatch"


def datasource_ref() -> dm.DataSourceRef:
    """A fresh reference to the linewatch datasource (the SDK mutates what it is given)."""
    return dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


def clean_sql(sql: str) -> str:
    """Strip the indentation of triple-quoted SQL so the JSON stays readable in Grafana's editor."""
    lines = [line.rstrip() for line in sql.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x), default=0)
    return "\n".join(x[indent:] for x in lines)


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL query against the linewatch datasource, serialised like Grafana's SQL editor in code mode."""

    def __init__(self, sql: str, fmt: Literal["table", "time_series"], ref_id: str = "A") -> None:
        if fmt not in ("table", "time_series"):
            raise ValueError(f"format must be 'table' or 'time_series', not {fmt!r}")
        self.sql, self.fmt, self.ref_id = clean_sql(sql), fmt, ref_id

    def to_json(self) -> dict[str, object]:
        return {"refId": self.ref_id, "datasource": datasource_ref(), "editorMode": "code",
                "format": self.fmt, "rawQuery": True, "rawSql": self.sql}


class SqlTarget(cogbuilder.Builder[SqlQuery]):
    """Builder for :class:`SqlQuery`, so a raw SQL target plugs into any SDK panel's ``with_target``."""

    def __init__(self, sql: str, fmt: Literal["table", "time_series"] = "table", ref_id: str = "A") -> None:
        self._internal = SqlQuery(sql, fmt, ref_id)

    def build(self) -> SqlQuery:
        return self._internal


class SqlAnnotationTarget(dm.AnnotationTarget):
    """The SQL an annotation runs; the SDK's ``AnnotationTarget`` only knows the built-in Grafana source's
    tag filter, while Grafana's SQL datasources keep their query in ``target`` like a panel target."""

    def __init__(self, sql: str) -> None:
        super().__init__()
        self.query = SqlQuery(sql, "table", "Anno")

    def to_json(self) -> dict[str, object]:
        return self.query.to_json()


class SqlAnnotationTargetBuilder(cogbuilder.Builder[dm.AnnotationTarget]):
    """Builder for :class:`SqlAnnotationTarget` (``AnnotationQuery.target`` wants a builder)."""

    def __init__(self, sql: str) -> None:
        self._internal = SqlAnnotationTarget(sql)

    def build(self) -> dm.AnnotationTarget:
        return self._internal
