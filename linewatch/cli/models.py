"""``linewatch models``: the registry's versions (champion, shadow, provisional, active) and promotion.

``list`` shows what each model id holds and what the workers serve now; ``promote`` turns a shadow
(challenger, registered with ``linewatch train ... --shadow``) into the champion in one transaction
and records who did it (:mod:`linewatch.storage.promotion`). Compare the two first in SQL: the
``champion_challenger`` view (docs/sql.md) counts the alerts each raised per asset and day, their
agreement, estimated false alarms and detection delays on dispositioned events.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from linewatch.cli.common import ConfigOption, console, fmt, migrated_database, settings

if TYPE_CHECKING:
    from linewatch.storage.promotion import VersionInfo

models_app = typer.Typer(
    help="Model versions: list champions and shadows (challengers), promote a shadow to champion.",
    no_args_is_help=True,
)

#: Colour of each role in the table.
ROLE_STYLE = {"champion": "green", "shadow": "cyan", "superseded": "dim", "inactive": "dim red"}


@models_app.command("list")
def models_list_cmd(
    config: ConfigOption = None,
    modality: Annotated[str | None, typer.Option(help="only this modality: spc, signals or frames")] = None,
    asset: Annotated[str | None, typer.Option(
        help="only models scoped to this asset ('*' = the models for any asset)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (one object per version) instead of a table")
                       ] = False,
) -> None:
    """Every registered version, newest first per model id, with its role.

    Roles: champion (served, its scores route alerts), shadow (served beside the champion into
    shadow_scores, never routed), superseded (active but a newer version serves), inactive.
    Provisional versions were trained on less data than a full calibration needs (a defect
    classifier: some class has fewer confirmed examples than a class needs to be ready).
    A defect classifier's threshold column is the confidence below which it answers "unknown".
    """
    from linewatch.errors import ConfigError
    from linewatch.storage.promotion import list_versions

    if modality is not None and modality not in ("spc", "signals", "frames"):
        raise ConfigError(f"--modality {modality!r}: use spc, signals or frames")
    s = settings(config)
    with migrated_database(s) as conn:
        versions = list_versions(conn, modality=modality, asset=asset)
    if as_json:
        print(json.dumps([v.as_json() for v in versions], indent=2))
        return
    if not versions:
        console.print("no model versions registered yet; train one with `linewatch train spc|signals|frames`")
        return
    table = Table(title="model versions")
    for column in ("model id", "version", "role", "provisional", "created at", "threshold"):
        table.add_column(column)
    for v in versions:
        style = ROLE_STYLE[v.role]
        table.add_row(escape(v.model_id), escape(v.version), f"[{style}]{v.role}[/]", "yes" if v.provisional else "",
                      v.created_at.isoformat(timespec="seconds"), _threshold_cell(v))
    print_table(table)


@models_app.command("promote")
def models_promote_cmd(
    model_id: Annotated[str, typer.Argument(help="the model id, e.g. spc:press-1:*:hotelling (see `models list`)")],
    version: Annotated[str, typer.Argument(help="the shadow version to make the champion")],
    actor: Annotated[str, typer.Option(help="who promotes it (recorded in model_promotions)")],
    note: Annotated[str, typer.Option(help="why (recorded with the promotion)")] = "",
    config: ConfigOption = None,
) -> None:
    """Make a shadow version the champion: its scores route alerts from the workers' next model refresh.

    In one transaction the version stops being a shadow, the champion of the same model id is
    deactivated, and model_promotions records the previous version, the actor and the note.
    Refused (nothing changes) when the version is not a shadow or not active.
    """
    from linewatch.storage.promotion import promote

    s = settings(config)
    with migrated_database(s) as conn:
        done = promote(conn, model_id, version, actor=actor, note=note)
    replaced = f"replacing {done.previous} (deactivated)" if done.previous else "no champion of this model id before"
    console.print(f"promoted {escape(done.model_id)}@{escape(done.version)} to champion, {replaced}; "
                  f"recorded by {escape(done.actor)} at {done.promoted_at.isoformat(timespec='seconds')}. "
                  f"Workers serve it within LINEWATCH_MODEL_REFRESH_S = {s.model_refresh_s:g} s.")


def _threshold_cell(v: VersionInfo) -> str:
    """An anomaly model's alarm threshold; a defect classifier's confidence below which it says "unknown"."""
    if v.unknown_below is not None:
        return f"unknown < {v.unknown_below:.3g}"
    return fmt(v.threshold)


def print_table(table: Table) -> None:
    """Tables go to stdout (figures), messages to stderr (:data:`console`)."""
    from rich.console import Console

    Console().print(table)
