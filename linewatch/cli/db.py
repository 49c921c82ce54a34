"""``linewatch db``: the database schema (ordered SQL migrations, plain PostgreSQL or TimescaleDB)."""

from __future__ import annotations

import typer

from linewatch.cli.common import ConfigOption, console, settings

db_app = typer.Typer(help="Database schema: migrations for PostgreSQL and TimescaleDB.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Apply pending SQL migrations (idempotent; records what ran in schema_migrations)."""
    from linewatch.embedded.stack import Stack
    from linewatch.storage.migrations import migrate

    s = settings(config)
    with Stack(s, need_broker=False) as stack:
        result = migrate(stack.database_url)
    console.print(f"applied: {', '.join(result.applied) or 'nothing new'}")
    console.print(f"already applied: {len(result.already)}; database: "
                  f"{'TimescaleDB' if result.timescale else 'plain PostgreSQL (Timescale features off)'}")
    if result.changed:
        console.print(f"[yellow]changed after they ran (not re-applied): {', '.join(result.changed)}; "
                      "write a new migration instead of editing an applied one")
