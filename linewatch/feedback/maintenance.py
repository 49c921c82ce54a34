"""Declared maintenance windows: alerts of an asset (or of every asset, ``*``) are suppressed inside them.

A window's id is a UUIDv5 of its asset, start and end, so declaring the same window twice (a
retried command, a script run again) stores it once; a different reason does not make it a new one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg

from linewatch.errors import ConfigError
from linewatch.schemas.ids import event_id

#: The asset a window for every asset names.
EVERY_ASSET = "*"


@dataclass(frozen=True)
class MaintenanceWindow:
    asset_id: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str

    @property
    def window_id(self) -> uuid.UUID:
        return event_id("maintenance", self.asset_id, self.starts_at.isoformat(), self.ends_at.isoformat())


def add_window(conn: psycopg.Connection, window: MaintenanceWindow) -> bool:
    """Store ``window``; False when the same window (same asset, start and end) was already declared."""
    for t in (window.starts_at, window.ends_at):
        if t.tzinfo is None:
            raise ConfigError(f"{t.isoformat()} has no time zone; give one, e.g. 2026-01-01T06:00:00Z")
    if window.ends_at <= window.starts_at:
        raise ConfigError(f"the window ends ({window.ends_at.isoformat()}) before it starts "
                          f"({window.starts_at.isoformat()}); swap --from and --to")
    cur = conn.execute(
        """INSERT INTO maintenance_windows (window_id, asset_id, starts_at, ends_at, reason, created_by)
           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (window_id) DO NOTHING""",
        (window.window_id, window.asset_id, window.starts_at, window.ends_at, window.reason, window.created_by),
    )
    conn.commit()
    return cur.rowcount == 1


def list_windows(conn: psycopg.Connection, *, asset: str | None = None, current_only: bool = False) -> list[tuple]:
    """``(window_id, asset_id, starts_at, ends_at, reason, created_by)``, latest start first.

    ``asset`` also matches the windows for every asset; ``current_only`` keeps the windows not yet over.
    """
    return conn.execute(
        """SELECT window_id, asset_id, starts_at, ends_at, reason, created_by FROM maintenance_windows
           WHERE (%(asset)s::text IS NULL OR asset_id IN (%(asset)s, '*'))
             AND (NOT %(current)s OR ends_at > now())
           ORDER BY starts_at DESC""",
        {"asset": asset, "current": current_only},
    ).fetchall()


def suppression_windows(conn: psycopg.Connection, *, since: datetime) -> list[tuple[str, datetime, datetime, str]]:
    """Windows that end after ``since`` as ``(asset or '*', start, end, reason)``, oldest start first.

    The shape the fusion engine's ``set_maintenance`` takes: a fusion runtime reloads these every
    few seconds, so a window declared with ``linewatch maintenance add`` suppresses without a restart.
    """
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT asset_id, starts_at, ends_at, reason FROM maintenance_windows WHERE ends_at > %s ORDER BY starts_at",
        (since,)).fetchall()]
