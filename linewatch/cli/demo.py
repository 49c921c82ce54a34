"""``linewatch demo``: the whole system on this machine against a simulated plant (see :mod:`linewatch.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import EXIT_ERROR, ConfigOption, console, settings


def demo_cmd(
    config: ConfigOption = None,
    seconds: Annotated[float, typer.Option(help="approximate run time, setup included")] = 60.0,
    speed: Annotated[float, typer.Option(help="plant seconds per wall second while streaming (120: a 30 s "
                                         "stream is an hour of plant time)")] = 120.0,
    seed: Annotated[int, typer.Option()] = 7,
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary as JSON here")] = None,
    day30: Annotated[bool, typer.Option(
        "--day30", help="instead: the Day-1 -> Day-30 path on a camera line (anomaly model, confirmed defects, "
                        "a defect classifier trained and registered, alerts that name the class)")] = False,
) -> None:
    """Run everything on this machine: broker, PostgreSQL, worker and a simulated multimodal plant with faults.

    Three cells make parts (measured and photographed under one part id) while their spindles send
    vibration, current and temperature; a bearing fault, a tool wear and a camera-only cosmetic defect
    are injected. Ends with the fused alerts per fault (delay, the contributors they named), the false
    alerts per asset-day, shadow and suppressed alerts and the dead letters; leaves no process behind.
    """
    from linewatch.demo import run_demo, write_summary

    s = settings(config)
    if day30:
        from linewatch.demo_day30 import run_day30

        result = run_day30(s, seed=seed, console=console)
    else:
        result = run_demo(s, seconds=seconds, speed=speed, seed=seed, console=console)
    if summary_json is not None:
        write_summary(result.summary, summary_json)
        console.print(f"summary written to {summary_json}")
    if not result.ok:
        console.print("[red]the demo did not complete as expected; see the table above and .linewatch/logs/")
        raise typer.Exit(EXIT_ERROR)
