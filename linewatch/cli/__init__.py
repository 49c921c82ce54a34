"""The ``linewatch`` command line, and the only place where commands are defined and wired.

One module per command group: :mod:`~linewatch.cli.demo`, :mod:`~linewatch.cli.worker`
(``worker``, ``up``), :mod:`~linewatch.cli.status`, :mod:`~linewatch.cli.db`, :mod:`~linewatch.cli.train`,
:mod:`~linewatch.cli.simulate`, :mod:`~linewatch.cli.backtest`, :mod:`~linewatch.cli.replay`,
:mod:`~linewatch.cli.report`, :mod:`~linewatch.cli.serve` (the inspection API), :mod:`~linewatch.cli.dashboards`,
:mod:`~linewatch.cli.bench`,
:mod:`~linewatch.cli.chaos`, :mod:`~linewatch.cli.drift`, :mod:`~linewatch.cli.config`, and the operators' commands
:mod:`~linewatch.cli.alerts`, :mod:`~linewatch.cli.dispositions` (``disposition``, ``dispositions``),
:mod:`~linewatch.cli.thresholds`, :mod:`~linewatch.cli.maintenance` and :mod:`~linewatch.cli.labels` (the
Day-30 labelled set); what they share (console, ``--config``,
settings, exit codes) is :mod:`~linewatch.cli.common`. Every command reads the settings once (environment,
``--config`` file, defaults) and passes them down. Commands that need a broker or a database
start embedded ones when no URL is configured, and stop them on exit, Ctrl-C or error.

Command modules import only Typer, rich and the settings at the top; everything heavy (numpy,
the detectors, Faust, the embedded services) is imported inside the command that needs it, so
``linewatch --help`` stays fast.
"""

from __future__ import annotations

import typer

from linewatch.cli import (
    alerts,
    backtest,
    bench,
    chaos,
    config,
    dashboards,
    db,
    demo,
    dispositions,
    drift,
    labels,
    maintenance,
    models,
    replay,
    report,
    serve,
    simulate,
    status,
    thresholds,
    train,
    worker,
)
from linewatch.cli.common import run

app = typer.Typer(
    name="linewatch",
    help="Streaming multimodal process monitoring for manufacturing lines.\n\n"
    "Start with `linewatch demo`: it runs the whole system on this machine with a simulated plant.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.command("config")(config.config_cmd)
app.command("worker")(worker.worker_cmd)
app.command("up")(worker.up_cmd)
app.command("status")(status.status_cmd)
app.command("demo")(demo.demo_cmd)
app.command("chaos")(chaos.chaos_cmd)
app.command("replay")(replay.replay_cmd)
app.command("report")(report.report_cmd)
app.command("serve")(serve.serve_cmd)
app.add_typer(db.db_app, name="db")
app.add_typer(simulate.simulate_app, name="simulate")
app.add_typer(train.train_app, name="train")
app.add_typer(models.models_app, name="models")  # linewatch/cli/models.py: versions, promotion
app.add_typer(bench.bench_app, name="bench")
app.add_typer(backtest.backtest_app, name="backtest")
app.command("disposition")(dispositions.disposition_cmd)
app.add_typer(dispositions.dispositions_app, name="dispositions")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(thresholds.thresholds_app, name="thresholds")
app.add_typer(maintenance.maintenance_app, name="maintenance")
app.add_typer(drift.drift_app, name="drift")
app.add_typer(labels.labels_app, name="labels")
app.add_typer(dashboards.dashboards_app, name="dashboards")


def main() -> None:
    """The ``linewatch`` console script (and ``python -m linewatch``)."""
    run(app)
