"""``linewatch demo``: the whole system on this machine against a simulated plant (see :mod:`linewatch.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import EXIT_ERROR, ConfigOption, console, settings


def demo_cmd(
    config: ConfigOption = None,
    seconds: Annotated[float, typer.Option(help="approximate run time, setup included")] = 60.0,
    rate: Annotated[float, typer.Option(help="simulated parts per second")] = 200.0,
    seed: Annotated[int, typer.Option()] = 7,
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary as JSON here")] = None,
) -> None:
    """Run everything on this machine: broker, PostgreSQL, worker and a simulated plant with faults.

    Ends with a table of what was detected per injected fault type, the false alarms on normal
    parts and the dead letters; leaves no process behind.
    """
    from linewatch.demo import run_demo, write_summary

    s = settings(config)
    result = run_demo(s, seconds=seconds, rate=rate, seed=seed, console=console)
    if summary_json is not None:
        write_summary(result.summary, summary_json)
        console.print(f"summary written to {summary_json}")
    if not result.ok:
        console.print("[red]the demo did not complete as expected; see the table above and .linewatch/logs/")
        raise typer.Exit(EXIT_ERROR)
