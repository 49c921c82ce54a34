"""``linewatch labels``: the confirmed defect classes per SKU, whether each is ready to train, and the class list.

Operators name a defect in their own words (``linewatch disposition ... --class "Scratch "``); the
class list folds case and spaces and maps the synonyms an engineer adds here to one class, with
the route a recognised defect takes (rework, scrap, maintenance).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, jsonable, migrated_database, settings

labels_app = typer.Typer(
    help="Confirmed defect classes (the Day-30 labelled set) and the class list with synonyms and routes.",
    invoke_without_command=True)


@labels_app.callback()
def labels_cmd(
    ctx: typer.Context,
    sku: Annotated[str | None, typer.Option(help="only this SKU")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the counts to this JSON file")] = None,
    config: ConfigOption = None,
) -> None:
    """Per SKU, modality and class: confirmed examples, how many have stored features, and whether it is ready."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from linewatch.defects.classifier import MIN_EXAMPLES
    from linewatch.defects.label_store import class_counts

    s = settings(config)
    with migrated_database(s) as conn:
        rows = class_counts(conn, sku=sku)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"min_examples": MIN_EXAMPLES, "classes": jsonable(rows)}, indent=2,
                                       default=str))
    if not rows:
        console.print("no confirmed defects with a class yet: confirm alerts with "
                      "`linewatch disposition ALERT_ID --label true_defect --class NAME`")
        return
    table = Table(title=f"confirmed examples per class (ready = {MIN_EXAMPLES} with stored features)")
    for col in ("sku", "modality", "class", "examples", "with features", "ready", "last confirmed"):
        table.add_column(col, justify="right" if col in ("examples", "with features") else "left")
    for r in rows:
        ready = ("[green]yes[/green]" if r["ready"] else f"no ({MIN_EXAMPLES - r['with_features']} to go)"
                 if r["class"] != "good" else "(ordinary parts are added)")
        table.add_row(r["sku"], r["modality"], r["class"], str(r["examples"]), str(r["with_features"]), ready,
                      r["last_confirmed"].isoformat(timespec="seconds"))
    Console(width=160).print(table)
    ready_skus = sorted({(r["sku"], r["modality"]) for r in rows if r["ready"] and r["class"] != "good"})
    for s_, m in ready_skus:
        console.print(f"ready: `linewatch train defects --from-labels --sku {s_} --modality {m}`")


@labels_app.command("class")
def class_cmd(
    name: Annotated[str, typer.Argument(help="the class (letters, digits, underscores; case and spaces fold)")],
    synonym: Annotated[list[str] | None, typer.Option(
        "--synonym", help="another name operators use for it (repeat the option for more)")] = None,
    route: Annotated[str | None, typer.Option(help="where a recognised one goes: rework, scrap or maintenance")] = None,
    sku: Annotated[str, typer.Option(help="the SKU it applies to ('*' = every SKU)")] = "*",
    config: ConfigOption = None,
) -> None:
    """Add a class or change one: synonyms are added to those it has, the route replaces its route."""
    from linewatch.defects.catalogue import set_class

    s = settings(config)
    with migrated_database(s) as conn:
        c = set_class(conn, name, sku=sku, route=route, synonyms=synonym or ())
    console.print(f"class {c.name} (SKU {c.sku}): route {c.route}; synonyms {', '.join(c.synonyms) or 'none'}")


@labels_app.command("classes")
def classes_cmd(
    sku: Annotated[str | None, typer.Option(help="only this SKU's classes (and those for every SKU)")] = None,
    config: ConfigOption = None,
) -> None:
    """List the class list: SKU, class, route and synonyms."""
    from rich.console import Console
    from rich.table import Table

    from linewatch.defects.catalogue import list_classes

    s = settings(config)
    with migrated_database(s) as conn:
        classes = list_classes(conn, sku)
    table = Table(title=f"{len(classes)} defect class(es)")
    for col in ("sku", "class", "route", "synonyms"):
        table.add_column(col)
    for c in classes:
        table.add_row(c.sku, c.name, c.route, ", ".join(c.synonyms))
    Console(width=160).print(table)
