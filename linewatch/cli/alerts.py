"""``linewatch alerts``: list incidents, acknowledge and close alerts by hand.

An acknowledgement or a close is a new lifecycle row (the alert's latest fields, ``ts`` = now,
``actor`` = who) in the ``alerts`` table and the same Alert message on the ``alerts`` topic, keyed
by the alert's asset, so consumers of the topic see hand-made transitions like fused ones.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from linewatch.cli.common import ConfigOption, console, migrated_database, settings
from linewatch.cli.feedback_options import ActorOption, SinceOption, operator_name, parse_time

alerts_app = typer.Typer(help="List incidents; acknowledge or close an alert by hand.", no_args_is_help=True)


@alerts_app.command("list")
def list_cmd(
    open_only: Annotated[bool, typer.Option("--open", help="only alerts that are not closed")] = False,
    asset: Annotated[str | None, typer.Option(help="only this asset's alerts")] = None,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per alert on stdout instead of a table")
                       ] = False,
    config: ConfigOption = None,
) -> None:
    """One line per alert: latest state, worst severity, route, opened/closed, top contributors, disposition."""
    from rich.console import Console
    from rich.table import Table

    from linewatch.feedback.alerts import contributor_names, list_incidents

    s = settings(config)
    since_t = parse_time(since, "--since")
    with migrated_database(s) as conn:
        rows = list_incidents(conn, open_only=open_only, asset=asset, since=since_t)
    if as_json:
        for r in rows:
            print(json.dumps(_jsonable(r), default=str))
        return
    table = Table(title=f"{len(rows)} {'open ' if open_only else ''}alert(s)")
    for col in ("alert", "asset", "state", "severity", "route", "score", "opened", "closed", "top contributors",
                "defect", "disposition"):
        table.add_column(col)
    for r in rows:
        verdict = r["verdict"] + (f" ({r['defect_class']})" if r["defect_class"] else "") if r["verdict"] else ""
        defect = (f"{r['recognised_class']} -> {r['recognised_route']}" if r["recognised_route"]
                  else r["recognised_class"] or "")
        table.add_row(str(r["alert_id"]), r["asset_id"], r["last_state"] + (" [shadow]" if r["shadow"] else ""),
                      r["max_severity"], r["route"], f"{r['max_score']:.2f}", f"{r['opened_at']:%Y-%m-%d %H:%M:%S}",
                      f"{r['closed_at']:%Y-%m-%d %H:%M:%S}" if r["closed_at"] else "",
                      ", ".join(contributor_names(r["last_contributors"])), defect, verdict)
    Console(width=200).print(table)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["alert_id"] = str(out["alert_id"])
    out["duration_s"] = out.pop("duration").total_seconds()
    return out


def _transition(alert_id: str, state: str, actor: str | None, note: str, config: Any) -> None:
    from linewatch.embedded.stack import Stack
    from linewatch.feedback.alerts import as_tuple, parse_alert_id, require_alert, to_message, transition
    from linewatch.kafka import Publisher
    from linewatch.schemas.codec import encode
    from linewatch.schemas.messages import AlertState
    from linewatch.schemas.rows import AlertRow
    from linewatch.schemas.topics import ALERTS
    from linewatch.storage.connection import connect
    from linewatch.storage.migrations import migrate
    from linewatch.storage.writer import BatchWriter

    s = settings(config)
    who = operator_name(actor)
    aid = parse_alert_id(alert_id)
    with Stack(s) as stack:
        migrate(stack.database_url)
        with connect(stack.database_url) as conn:
            row = transition(require_alert(conn, aid), AlertState(state), actor=who, note=note)
        writer = BatchWriter(stack.database_url)
        try:
            writer.write({AlertRow: [as_tuple(row)]})
        finally:
            writer.close()
        publisher = Publisher(stack.bootstrap, security=stack.kafka_security)
        publisher.publish(ALERTS.name, [(row.asset_id.encode(), encode(to_message(row)))])
        publisher.flush()
    console.print(f"alert {aid} on {row.asset_id}: {state} by {who} at {row.ts.isoformat()}"
                  + (f" ({note})" if note else ""))


@alerts_app.command("ack")
def ack_cmd(
    alert_id: Annotated[str, typer.Argument(help="the alert's id (see `linewatch alerts list`)")],
    actor: ActorOption = None,
    note: Annotated[str, typer.Option(help="why, or what is being done")] = "",
    config: ConfigOption = None,
) -> None:
    """Acknowledge an alert: someone is on it (an `acknowledge` row and message; it stays open)."""
    _transition(alert_id, "acknowledge", actor, note, config)


@alerts_app.command("close")
def close_cmd(
    alert_id: Annotated[str, typer.Argument(help="the alert's id (see `linewatch alerts list`)")],
    actor: ActorOption = None,
    note: Annotated[str, typer.Option(help="why it is closed (e.g. 'bearing replaced')")] = "",
    config: ConfigOption = None,
) -> None:
    """Close an alert by hand (a `close` row and message); record what it was with `linewatch disposition`."""
    _transition(alert_id, "close", actor, note, config)
