"""What every ``linewatch`` command shares: the console, ``--config``, settings, signals, errors, output.

Commands report progress and results on :data:`console` (stderr) and print tables and
machine-readable output on stdout, so ``linewatch ... > out.txt`` keeps only the figures.
Errors become exit codes in :func:`run`, the one place they are mapped: commands raise
linewatch's own exceptions and never call ``sys.exit`` themselves.

Nothing here imports numpy, the detectors or Faust: ``linewatch --help`` loads this module
and every command module, and must stay fast.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from linewatch.config import Settings, load_settings
from linewatch.errors import ConfigError, InfrastructureError, LinewatchError

#: Progress, messages and errors; stdout stays for tables and figures.
console = Console(stderr=True)
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file (see `linewatch config`).")]

#: ``train spc|signals|frames --shadow``: register the new version as a challenger.
ShadowOption = Annotated[bool, typer.Option(
    "--shadow", help="register the new version as a shadow (challenger): workers score its scope's events beside "
    "the current model into shadow_scores and shadow alerts, never routed, until `linewatch models promote` makes "
    "it the champion")]

# Image-model options shared by `train frames` and `backtest images`, so the two read alike.
PresetOption = Annotated[str, typer.Option(help="PatchCore settings: fast (>= 50 frames/s) or accurate")]
CalibrationOption = Annotated[str, typer.Option(help="auto, empirical or pot")]
CalibrationFractionOption = Annotated[float | None, typer.Option(
    help="hold out this latest share of the good images to calibrate on (default: cross-fit, every good "
    "image is scored out of fold)")]
FoldOrderOption = Annotated[str, typer.Option(
    help="cross-fitting folds in file order ('time': files named in capture order) or 'shuffled' (file names "
    "that group similar parts, e.g. a dataset sorted by panel)")]
ImageSizeOption = Annotated[
    int | None, typer.Option(help="nominal model input side, a multiple of 16 (default: the preset's)")]
CoresetRatioOption = Annotated[
    float | None, typer.Option(help="share of training patches kept in the memory bank (default: the preset's)")]
MaxBankSizeOption = Annotated[
    int | None, typer.Option(help="upper bound on the memory bank, 0 for none (default: the preset's)")]

#: A linewatch error that is neither of the two below (bad data, a failed model, ...).
EXIT_ERROR = 1
#: The settings, the command line or an input file is wrong: fix it and run again.
EXIT_CONFIG = 2
#: The broker or the database could not be reached (or gave up): retrying later may work.
EXIT_UNAVAILABLE = 3
#: Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

#: What each progress stage of fitting and backtesting an image model is called on screen.
IMAGE_STAGE_LABELS = {"features": "patch features", "coreset": "memory bank (coreset)",
                      "scoring": "scoring test frames"}


def settings(config: Path | None, **overrides: object) -> Settings:
    """The settings a command runs with: ``overrides``, then the environment, ``--config``, defaults.

    Read once, at the command's start, and passed down: nothing below the CLI reads the
    environment on its own.
    """
    return load_settings(config, **overrides)


def wait_for_signal() -> None:
    """Block until SIGTERM or Ctrl-C, then return so the caller's ``with`` blocks stop their services."""
    stopping = {"flag": False}

    def handler(*_: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, handler)
    try:
        while not stopping["flag"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def run(app: typer.Typer) -> None:
    """Run ``app`` and turn linewatch's exceptions into a one-line message and an exit code.

    Embedded services are stopped by the commands' own ``with`` blocks before the exception
    gets here, so the message can say so.
    """
    try:
        app()
    except (ConfigError, InfrastructureError) as e:
        console.print(f"[red]error:[/] {e}")
        sys.exit(EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_UNAVAILABLE)
    except LinewatchError as e:
        console.print(f"[red]error:[/] {e}")
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        console.print("interrupted; embedded services stopped")
        sys.exit(EXIT_INTERRUPTED)


def fmt(value: Any) -> str:
    """A figure as a table cell: 4 significant digits for floats, ``n/a`` for missing."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays turned into Python ones and every key a string, for ``json``."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


@contextmanager
def migrated_database(s: Settings) -> Iterator[Any]:
    """A connection to the configured database (an embedded one when none is), its migrations applied.

    What every operator command that reads or edits the database opens; the embedded services it
    started stop when the block ends, whatever happens inside it.
    """
    from linewatch.embedded.stack import Stack
    from linewatch.storage.connection import connect
    from linewatch.storage.migrations import migrate

    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        with connect(stack.database_url) as conn:
            yield conn


@contextmanager
def counting_progress(description: str, total: int | None = None) -> Iterator[Any]:
    """A progress bar on :data:`console`, as the ``progress(done)`` callback the producers take.

    ``total`` may come later, as the callback's second argument (a replay knows it once history is read).
    """
    from rich.progress import Progress

    with Progress(console=console) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total: int | None = None) -> None:
            progress.update(task, completed=done, **({"total": total} if total is not None else {}))

        yield update


@contextmanager
def stage_progress(labels: Mapping[str, str] = IMAGE_STAGE_LABELS) -> Iterator[Any]:
    """A rich progress display with one bar per stage, as a ``(stage, done, total)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(labels.get(stage, stage), total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update


def print_calibration_report(report: Mapping[str, Any]) -> None:
    """One line on how sure a new model's threshold is, and its warnings in full.

    Printed by every ``train`` command, so an engineer sees at training time, not after a week
    of false alarms, whether the data could support the false-alarm target.
    """
    if not report:
        return
    lo, hi = report["far_interval_90"]
    status = "[yellow]provisional[/]" if report.get("provisional") else "[green]ok[/]"
    console.print(
        f"calibration {status}: {report['method']} ({report['folds']} fold(s)), {report['n_scores']} normal "
        f"scores worth {report['effective_sample_size']:.0f} independent ones; target false-alarm rate "
        f"{report['target_far']:g}, 90 % interval [{lo:.2g}, {hi:.2g}]"
    )
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")


def add_calibration_rows(table: Any, report: Mapping[str, Any] | None) -> None:
    """The calibration report's rows in a backtest's metric table (every backtest shows the same)."""
    from rich.markup import escape

    if not report:
        return
    lo, hi = report["far_interval_90"]
    table.add_row("calibration", f"{report['method']}: {report['n_scores']} normal scores worth "
                                 f"{report['effective_sample_size']:.0f} independent; far 90 % interval "
                                 f"[{lo:.2g}, {hi:.2g}]")
    if report.get("provisional"):
        table.add_row("[yellow]calibration[/]", "provisional: too little known-good data for the target FAR")
    for warning in report.get("warnings", []):
        table.add_row("[yellow]calibration[/]", escape(str(warning)))


def print_backtest(tables: list[Any], result: Mapping[str, Any], json_out: Path | None) -> None:
    """A backtest's tables on stdout and, with ``--json``, every figure as JSON (the same for every backtest)."""
    import json

    from rich.markup import escape

    out = Console()
    for table in tables:
        out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(jsonable(result), indent=2, sort_keys=True) + "\n")
        console.print(f"figures written to {escape(str(json_out))}")
