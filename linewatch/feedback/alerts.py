"""Alerts as operators see them: the latest state of one, the incident list, and hand-made transitions.

The fusion agent writes an alert's ``open``/``update``/``close`` rows; people acknowledge and
close alerts by hand. A hand-made transition copies the alert's latest fields into a new
``acknowledge`` or ``close`` row (``ts`` = now, ``actor`` = who), so the table stays one row per
lifecycle event whoever made it, and the same :class:`~linewatch.schemas.messages.Alert` goes on
the ``alerts`` topic for downstream consumers.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from linewatch.errors import ConfigError
from linewatch.schemas.messages import Alert, AlertState, Contribution, ScoreRef
from linewatch.schemas.rows import AlertRow, columns

#: Contributors shown per alert in lists and printouts (the full list is in the table).
TOP_CONTRIBUTORS = 3
#: Where an operator looks up alert ids.
LIST_HINT = "`linewatch alerts list`"
#: Same-ts rows of one alert sort by how far along the lifecycle they are.
STATE_ORDER = "CASE state WHEN 'close' THEN 4 WHEN 'acknowledge' THEN 3 WHEN 'update' THEN 2 ELSE 1 END"


def parse_alert_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not an alert id (a UUID); find one with {LIST_HINT}") from None


def latest_alert(conn: psycopg.Connection, alert_id: uuid.UUID) -> AlertRow | None:
    """The alert's newest lifecycle row, or None when no alert has that id."""
    cols = columns(AlertRow)
    row = conn.execute(
        f"SELECT {', '.join(cols)} FROM alerts WHERE alert_id = %s ORDER BY ts DESC, {STATE_ORDER} DESC LIMIT 1",
        (alert_id,),
    ).fetchone()
    if row is None:
        return None
    values = dict(zip(cols, row, strict=True))
    values["contributors"] = json.dumps(values["contributors"])
    values["scores"] = json.dumps(values["scores"])
    return AlertRow(**values)


def require_alert(conn: psycopg.Connection, alert_id: uuid.UUID) -> AlertRow:
    """:func:`latest_alert`, or a :class:`ConfigError` that says where alert ids come from."""
    alert = latest_alert(conn, alert_id)
    if alert is None:
        raise ConfigError(f"no alert {alert_id} in the database; list the alerts with {LIST_HINT}")
    return alert


def to_message(row: AlertRow) -> Alert:
    """The ``alerts`` topic message for one lifecycle row."""
    return Alert(
        alert_id=row.alert_id, state=AlertState(row.state), kind=row.kind, asset_id=row.asset_id,
        severity=row.severity, route=row.route, ts=row.ts, opened_at=row.opened_at, score=row.score,
        p_value=row.p_value, modalities=row.modalities,
        contributors=[Contribution(**c) for c in json.loads(row.contributors)],
        event_ids=row.event_ids, scores=[ScoreRef(**r) for r in json.loads(row.scores)],
        model_versions=row.model_versions, shadow=row.shadow, actor=row.actor, note=row.note,
        defect_class=row.defect_class, defect_route=row.defect_route,
    )


def transition(current: AlertRow, state: AlertState, *, actor: str, note: str = "",
               now: datetime | None = None) -> AlertRow:
    """A new ``acknowledge`` or ``close`` row copying ``current``'s fields, stamped now and by ``actor``.

    Closing a closed alert or acknowledging one that is closed is refused: the operator is
    probably looking at a stale list.
    """
    if state not in (AlertState.ACKNOWLEDGE, AlertState.CLOSE):
        raise ConfigError(f"alerts are acknowledged or closed by hand, not {state.value!r}")
    if current.state == AlertState.CLOSE:
        raise ConfigError(f"alert {current.alert_id} is already closed (at {current.ts.isoformat()}); "
                          f"see {LIST_HINT}")
    if state == AlertState.ACKNOWLEDGE and current.state == AlertState.ACKNOWLEDGE:
        raise ConfigError(f"alert {current.alert_id} is already acknowledged (by {current.actor}); "
                          "close it with `linewatch alerts close`")
    ts = now or datetime.now(UTC)
    ts = max(ts, current.ts)  # never before the state it follows, whatever the clocks say
    return current.model_copy(update={"ts": ts, "state": state.value, "actor": actor, "note": note})


def as_tuple(row: AlertRow) -> tuple:
    return tuple(getattr(row, c) for c in columns(AlertRow))


def contributor_names(contributors: Any, n: int = TOP_CONTRIBUTORS) -> list[str]:
    """The first ``n`` contributors as ``modality:name`` (largest share first, as fusion orders them)."""
    items = json.loads(contributors) if isinstance(contributors, str) else (contributors or [])
    return [f"{c['modality']}:{c['name']}" if c.get("modality") else str(c["name"]) for c in items[:n]]


def list_incidents(conn: psycopg.Connection, *, open_only: bool = False, asset: str | None = None,
                   since: datetime | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Rows of ``alert_incidents`` (or ``open_alerts``), newest first, as dicts."""
    view = "open_alerts" if open_only else "alert_incidents"
    cur = conn.execute(
        f"""SELECT alert_id, kind, asset_id, route, shadow, last_state, max_severity, max_score, opened_at,
                   acknowledged_at, acknowledged_by, closed_at, duration, last_contributors, modalities,
                   model_versions, verdict, defect_class, recognised_class, recognised_route
            FROM {view}
            WHERE (%(asset)s::text IS NULL OR asset_id = %(asset)s)
              AND (%(since)s::timestamptz IS NULL OR last_ts >= %(since)s)
            ORDER BY opened_at DESC LIMIT %(limit)s""",
        {"asset": asset, "since": since, "limit": limit},
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def hand_made_transitions(conn: psycopg.Connection, *, since: datetime) -> list[tuple[uuid.UUID, str, datetime, str]]:
    """``(alert_id, state, ts, actor)`` of acknowledgements and closes people made since ``since``, oldest first.

    For the fusion runtime: an alert someone acknowledged updates on severity only, and one
    someone closed must not be updated again under the same id (the ``alerts`` topic carries the
    same events for consumers that do not read the table).
    """
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        """SELECT alert_id, state, ts, actor FROM alerts
           WHERE state IN ('acknowledge', 'close') AND actor IS NOT NULL AND written_at >= %s
           ORDER BY ts""", (since,)).fetchall()]
