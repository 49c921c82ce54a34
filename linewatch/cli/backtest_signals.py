"""``linewatch backtest signals``: a signals model on waveform recordings (WAV, NPY, CSV) in the images' layout.

The folder and the figures are :mod:`linewatch.backtest.recordings`'; recordings are framed and
featurized by the live agent's own code, the model is fitted and calibrated by
:func:`linewatch.training.fit_model`. Mounted on ``backtest_app`` at the end of
:mod:`linewatch.cli.backtest`.

Example::

    linewatch backtest signals --data pump-recordings --sample-rate 25600 --window-s 0.5 \\
        --speed-hz 24.75 --json result.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from linewatch.cli.common import add_calibration_rows, fmt, print_backtest, stage_progress

#: Rows of the summary table, in reading order; every figure is in the JSON.
SIGNALS_TABLE_KEYS = (
    "detector", "auroc_level", "auroc", "far", "target_far", "recall", "precision", "f1", "recording_auroc",
    "recording_far", "recording_recall", "threshold", "n_train", "n_test", "n_train_recordings",
    "n_test_recordings", "n_features", "envelope_features", "n_quality_flagged",
)  # fmt: skip
#: Progress bars of the recordings backtest.
STAGE_LABELS = {"read train": "reading train/good", "read test": "reading test/", "fit": "fitting and calibrating",
                "scoring": "featurizing and scoring test recordings"}


def signals_tables(result: dict[str, Any]) -> list[Table]:
    """The summary table and the per-condition table of a recordings backtest."""
    table = Table(title=f"signals backtest: {escape(str(result.get('data_dir')))}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in SIGNALS_TABLE_KEYS:
        table.add_row(key, fmt(result.get(key)))
    for warning in result.get("warnings", []):
        table.add_row("[yellow]warning[/]", escape(str(warning)))
    add_calibration_rows(table, result.get("calibration_report"))
    per = Table(title="per condition (windows; recordings)")
    for col in ("condition", "recs", "windows", "AUROC", "alarm rate", "rec. alarm rate", "flagged"):
        per.add_column(col, justify="left" if col == "condition" else "right")
    for cond, e in result.get("per_condition", {}).items():
        per.add_row(escape(cond), fmt(e["n_recordings"]), fmt(e["n_windows"]), fmt(e.get("auroc")),
                    fmt(e["alarm_rate"]), fmt(e["recording_alarm_rate"]), fmt(e["n_quality_flagged"]))
    return [table, per]


def backtest_signals_cmd(
    data: Annotated[Path, typer.Option(
        "--data", help="folder with train/good/, test/good/ and test/<condition>/ recordings (.wav, .npy, .csv)")],
    sample_rate: Annotated[float, typer.Option(
        "--sample-rate", help="samples per second of every recording (a WAV file must say the same)")],
    window_s: Annotated[float, typer.Option("--window-s", help="seconds per window (one model row)")] = 1.0,
    detector: Annotated[str, typer.Option(
        "--detector", help="registered detector name, or 'auto' (the signals training default)")] = "auto",
    target_far: Annotated[float, typer.Option("--target-far", help="false alarms per good window")] = 0.01,
    kind: Annotated[str, typer.Option(
        "--kind", help="sensor kind of channels not named after one (vibration, current, ...)")] = "vibration",
    speed_hz: Annotated[float | None, typer.Option(
        "--speed-hz", help="shaft speed (Hz) of the recordings: adds bearing envelope features")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seeds the detector and the calibration")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every figure as JSON here")] = None,
) -> None:
    """Fit on train/good recordings, score test/: window AUROC, recall per condition, false-alarm rate on good."""
    from linewatch.backtest.recordings import run_recordings_backtest

    with stage_progress(STAGE_LABELS) as progress:
        result = run_recordings_backtest(
            data, sample_rate=sample_rate, window_s=window_s, detector=detector, target_far=target_far,
            kind=kind, speed_hz=speed_hz, seed=seed, progress=progress,
        )
    print_backtest(signals_tables(result), result, json_out)
