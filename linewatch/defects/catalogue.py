"""The class list per SKU that engineers edit: canonical names, the synonyms operators type, and routes.

Normalising free text lives in SQL (``defect_class_of()`` in ``sql/190_defects.sql``) so the label
views, the CLI and an engineer's own query agree; this module reads and edits the table and
answers "where does a recognised class go" for the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from linewatch.errors import ConfigError
from linewatch.schemas.messages import DefectRoute

ANY_SKU = "*"
#: Where a recognised class goes when the catalogue does not say: signals name machine faults.
DEFAULT_ROUTE = {"signals": DefectRoute.MAINTENANCE.value}
FALLBACK_ROUTE = DefectRoute.REWORK.value


@dataclass(frozen=True)
class DefectClass:
    sku: str
    name: str
    route: str
    synonyms: tuple[str, ...]


def canonical(conn: psycopg.Connection, text: str, sku: str = ANY_SKU) -> str:
    """The class ``text`` names for ``sku`` (the same rule the label views apply)."""
    row = conn.execute("SELECT defect_class_of(%s, %s)", (sku, text)).fetchone()
    if row is None or row[0] is None:
        raise ConfigError(f"{text!r} names no defect class: use letters or digits (e.g. 'scratch')")
    return str(row[0])


def set_class(conn: psycopg.Connection, name: str, *, sku: str = ANY_SKU, route: str | None = None,
              synonyms: Sequence[str] = ()) -> DefectClass:
    """Add or change a class: its route, and synonyms added to those it has (case and spaces folded)."""
    if route is not None and route not in {r.value for r in DefectRoute}:
        raise ConfigError(f"route {route!r}; use one of {', '.join(r.value for r in DefectRoute)}")
    key = conn.execute("SELECT defect_class_key(%s)", (name,)).fetchone()
    if key is None or key[0] is None:
        raise ConfigError(f"{name!r} is not a class name: use letters, digits and underscores (e.g. 'scratch')")
    folded = [r[0] for r in conn.execute("SELECT defect_class_key(s) FROM unnest(%s::text[]) AS s",
                                         (list(synonyms),)) if r[0] and r[0] != key[0]]
    row = conn.execute(
        """INSERT INTO defect_classes (sku, class, route, synonyms)
           VALUES (%(sku)s, %(class)s, coalesce(%(route)s, 'rework'), %(syn)s)
           ON CONFLICT (sku, class) DO UPDATE
           SET route = coalesce(%(route)s, defect_classes.route),
               synonyms = ARRAY(SELECT DISTINCT unnest(defect_classes.synonyms || %(syn)s) ORDER BY 1),
               updated_at = now()
           RETURNING sku, class, route, synonyms""",
        {"sku": sku, "class": key[0], "route": route, "syn": sorted(set(folded))}).fetchone()
    assert row is not None
    return DefectClass(row[0], row[1], row[2], tuple(row[3]))


def list_classes(conn: psycopg.Connection, sku: str | None = None) -> list[DefectClass]:
    rows = conn.execute("SELECT sku, class, route, synonyms FROM defect_classes "
                        "WHERE %(sku)s::text IS NULL OR sku IN (%(sku)s, '*') ORDER BY sku, class", {"sku": sku})
    return [DefectClass(r[0], r[1], r[2], tuple(r[3])) for r in rows]


class Routes:
    """``(sku, class) -> route`` from the catalogue, with the SKU's own entry before the ``'*'`` one."""

    def __init__(self, classes: Sequence[DefectClass] = ()) -> None:
        self._by_key = {(c.sku, c.name): c.route for c in classes}

    @classmethod
    def load(cls, conn: psycopg.Connection) -> Routes:
        return cls(list_classes(conn))

    def route_for(self, sku: str, name: str, modality: str) -> str:
        return (self._by_key.get((sku, name)) or self._by_key.get((ANY_SKU, name))
                or DEFAULT_ROUTE.get(modality, FALLBACK_ROUTE))
