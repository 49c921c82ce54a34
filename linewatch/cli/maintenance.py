"""``linewatch maintenance``: declare maintenance windows, inside which an asset's alerts are suppressed."""

from __future__ import annotations

from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, migrated_database, settings
from linewatch.cli.feedback_options import ActorOption, operator_name, parse_time

maintenance_app = typer.Typer(help="Declared maintenance windows (alerts are suppressed inside them).",
                              no_args_is_help=True)


@maintenance_app.command("add")
def add_cmd(
    asset: Annotated[str, typer.Option(help="the asset, or '*' for every asset")],
    start: Annotated[str, typer.Option("--from", help="start, ISO 8601 with a zone (2026-01-01T06:00:00Z)")],
    end: Annotated[str, typer.Option("--to", help="end, ISO 8601 with a zone")],
    reason: Annotated[str, typer.Option(help="what is being done (shown next to suppressed alerts)")] = "",
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Declare a maintenance window; declaring the same asset, start and end again changes nothing."""
    from linewatch.feedback.maintenance import MaintenanceWindow, add_window

    s = settings(config)
    window = MaintenanceWindow(asset_id=asset, starts_at=parse_time(start, "--from"),  # type: ignore[arg-type]
                               ends_at=parse_time(end, "--to"), reason=reason,  # type: ignore[arg-type]
                               created_by=operator_name(actor))
    with migrated_database(s) as conn:
        added = add_window(conn, window)
    console.print(f"maintenance window {window.window_id} for {asset}: {window.starts_at.isoformat()} to "
                  f"{window.ends_at.isoformat()}" + ("" if added else " (already declared)"))


@maintenance_app.command("list")
def list_cmd(
    asset: Annotated[str | None, typer.Option(help="only this asset's windows (and those for every asset)")] = None,
    current: Annotated[bool, typer.Option(help="only windows that are not over yet")] = False,
    config: ConfigOption = None,
) -> None:
    """List declared maintenance windows, latest start first."""
    from rich.console import Console
    from rich.table import Table

    from linewatch.feedback.maintenance import list_windows

    s = settings(config)
    with migrated_database(s) as conn:
        rows = list_windows(conn, asset=asset, current_only=current)
    table = Table(title=f"{len(rows)} maintenance window(s)")
    for col in ("window", "asset", "from", "to", "reason", "by"):
        table.add_column(col)
    for wid, a, t0, t1, why, by in rows:
        table.add_row(str(wid), a, t0.isoformat(), t1.isoformat(), why, by)
    Console(width=200).print(table)
