"""``linewatch chaos``: inject failures into a real broker, worker and database; report losses and doubles.

The scenarios, the supervisor and the verification are :mod:`linewatch.chaos`; this module is the
command: options, live progress on stderr, the summary table on stdout, the JSON report, and
exit code 1 when any scenario lost, doubled or mis-filed an event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from linewatch.cli.common import EXIT_ERROR, ConfigOption, console, settings

if TYPE_CHECKING:
    from linewatch.chaos import ChaosReport, ScenarioResult


class RichReporter:
    """One progress bar per scenario (events stored of events produced) and a line per step."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _label(self, scenario: str, text: str) -> str:
        return f"[bold]{scenario:<12}[/] {text[:44]:<44}"

    def scenario_started(self, scenario: str, description: str) -> None:
        self._tasks[scenario] = self.progress.add_task(self._label(scenario, "starting"), total=None)
        self.progress.console.print(f"[bold]{scenario}[/]: {description}")

    def step(self, scenario: str, text: str) -> None:
        task = self._tasks.get(scenario)
        if task is None:
            self.progress.console.print(f"[dim]{scenario}:[/] {text}")
        else:
            self.progress.update(task, description=self._label(scenario, text))

    def counts(self, scenario: str, produced: int, stored: int | None) -> None:
        task = self._tasks.get(scenario)
        if task is not None:
            self.progress.update(task, total=max(produced, 1), **({} if stored is None else {"completed": stored}))

    def scenario_finished(self, result: ScenarioResult) -> None:
        task = self._tasks.get(result.scenario)
        verdict = "[green]ok[/]" if result.ok else "[red]NOT OK[/]"
        if task is not None:
            self.progress.update(task, total=max(result.produced, 1), completed=result.stored,
                                 description=self._label(result.scenario, f"done in {result.elapsed_s:.0f} s"))
        self.progress.console.print(f"[bold]{result.scenario}[/]: {verdict} ({result.stored}/{result.produced} "
                                    f"stored, {result.worker_exits} worker exit(s))")


def print_report(report: ChaosReport) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"linewatch chaos {report.run_id}{' (quick)' if report.quick else ''}",
                  box=box.SIMPLE_HEAD)
    for name, justify in (("scenario", "left"), ("produced", "right"), ("stored", "right"), ("lost", "right"),
                          ("duplicate\nrows", "right"), ("dead letters\n(expected)", "right"),
                          ("duplicate\nmessages", "right"), ("recovery\ns", "right"), ("worker\nexits", "right"),
                          ("ok", "center")):
        table.add_column(name, justify=justify, no_wrap=name == "scenario")  # type: ignore[arg-type]
    for r in report.scenarios:
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        table.add_row(r.scenario, str(r.produced), str(r.stored), _flag(r.lost), _flag(r.duplicate_rows),
                      f"{r.deadletters} ({r.expected_deadletters})", str(r.duplicate_messages), recovery,
                      str(r.worker_exits), "[green]yes[/]" if r.ok else "[red]NO[/]")
    out = Console()
    if not out.is_terminal:  # a file or a pipe: the table's natural width, not 80 columns
        out = Console(width=160)
    out.print(table)
    for r in report.scenarios:
        failed = [name for name, passed in r.checks.items() if not passed]
        lines = ([f"error: {r.error}"] if r.error else []) + [f"check failed: {c}" for c in failed] + r.notes
        for line in lines:
            out.print(f"  [bold]{r.scenario}[/]: {line}", highlight=False)
    out.print(f"logs: {report.log_dir}   elapsed: {report.elapsed_s:.0f} s", highlight=False)


def _flag(n: int) -> str:
    return str(n) if n == 0 else f"[red]{n}[/]"


def chaos_cmd(
    config: ConfigOption = None,
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", "-s",
        help="worker-kill, child-kill, db-restart, db-hang, two-workers, poison or all (repeat for several)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON here")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="fewer events and shorter outages (a bounded run)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the simulated events and the poison bytes")] = 0,
) -> None:
    """Break a real broker, worker and database on purpose and check that no event is lost or doubled.

    Starts its own embedded broker and PostgreSQL (in a temporary directory), trains the models
    the scenarios need, then per scenario runs fresh `linewatch worker` processes under a
    supervisor that restarts them, streams known events, injects the fault and counts what
    landed. Exits 1 if any scenario lost an event, stored one twice or got the dead letters wrong.
    """
    from linewatch.chaos import resolve_scenarios, run_chaos

    names = resolve_scenarios(scenario or ["all"])
    s = settings(config)
    with RichReporter() as reporter:
        report = run_chaos(s, names, quick=quick, reporter=reporter, seed=seed)
    print_report(report)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        console.print(f"report written to {json_out}")
    if not report.ok:
        console.print("[red]at least one scenario lost, doubled or mis-filed events; see the notes and logs above")
        raise typer.Exit(EXIT_ERROR)
