"""``linewatch backtest``: replay labelled history through a detector and print the metrics.

``csv`` reads two CSVs (known-good training rows, labelled test rows) through
:func:`linewatch.loaders.load_csv`, fits and calibrates on the first, replays the second,
prints a table and optionally writes the figures as JSON; ``--modality signals`` hands the
same arrays to the windowed signals backtest
(:func:`linewatch.backtest.signals.run_signals_backtest`). ``images`` runs the folder backtest
of :mod:`linewatch.backtest.images` on an MVTec AD-layout dataset.

Examples::

    linewatch simulate spc --parts 20000 --fault-fraction 0 --csv train.csv
    linewatch simulate spc --parts 5000 --seed 1 --csv test.csv
    linewatch backtest csv --train train.csv --test test.csv --label-column fault \\
        --time-column ts --detector hotelling --target-far 0.001 --json result.json
    linewatch simulate frames --sku bracket-a --out bracket-data
    linewatch backtest images --data bracket-data --json result.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from linewatch.cli.common import console, fmt, jsonable, stage_progress
from linewatch.errors import ConfigError, DataError

backtest_app = typer.Typer(
    help="Replay labelled history through a detector: precision, recall, false-alarm rate, AUROC.",
    no_args_is_help=True,
)

#: The order the csv table shows; every other key is still in the JSON.
TABLE_KEYS = (
    "detector", "n_train", "n_test", "precision", "recall", "f1", "far", "mar", "auroc",
    "tp", "fp", "tn", "fn",
)  # fmt: skip
MODALITIES = ("tabular", "signals")
#: Rows of the image backtest table, in reading order; every figure is in the JSON.
IMAGE_TABLE_KEYS = (
    "preset", "image_auroc", "pixel_auroc", "f1", "precision", "recall", "far", "target_far", "threshold", "calibrator",
    "fps", "n_train", "n_calibration", "n_test", "n_test_good", "n_test_defect", "bank_size", "fit_seconds",
)  # fmt: skip


def _table(result: dict[str, Any]) -> Table:
    table = Table(title=f"backtest: {result.get('detector')} ({result.get('modality', 'tabular')})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in TABLE_KEYS:
        table.add_row(key, fmt(result.get(key)))
    for kind, r in result.get("recall_by_label", {}).items():
        table.add_row(escape(f"recall ({kind})"), fmt(r))
    if result.get("train_rows_labelled_anomalous"):
        n_bad = result["train_rows_labelled_anomalous"]
        table.add_row("[yellow]warning[/]", f"{n_bad} training rows are labelled anomalous")
    if "blamed_features" in result:
        top = ", ".join(f"{k} ({v})" for k, v in list(result["blamed_features"].items())[:3])
        table.add_row("most blamed", escape(top))
    if "auto_reason" in result:
        table.add_row("auto choice", escape(result["auto_reason"]))
    return table


@backtest_app.command("csv")
def csv_cmd(
    train: Annotated[Path, typer.Option("--train", help="CSV of known-good rows to fit and calibrate on")],
    test: Annotated[Path, typer.Option("--test", help="CSV of rows to replay, with a label column")],
    label_column: Annotated[str, typer.Option("--label-column", help="ground truth; used for metrics only")],
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="sort rows by this column (ISO 8601 or numbers)")
    ] = None,
    group_column: Annotated[
        str | None, typer.Option("--group-column", help="replay each value (e.g. asset id) as its own series")
    ] = None,
    sep: Annotated[str, typer.Option("--sep", help="field separator, e.g. ';'")] = ",",
    columns: Annotated[
        str | None, typer.Option("--columns", help="comma-separated feature columns (default: all numeric)")
    ] = None,
    detector: Annotated[str, typer.Option("--detector", help="registered detector name, or 'auto'")] = "auto",
    target_far: Annotated[float, typer.Option("--target-far", help="false alarms per normal row")] = 1e-3,
    modality: Annotated[str, typer.Option("--modality", help="tabular or signals")] = "tabular",
    window: Annotated[int, typer.Option("--window", help="signals: rows per window")] = 50,
    stride: Annotated[int, typer.Option("--stride", help="signals: rows between window starts")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="seeds the detector and the fit/calibration split")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the figures as JSON")] = None,
) -> None:
    """Fit on --train, replay --test, print precision / recall / f1 / far / mar / auroc."""
    result = run_csv_backtest(
        train=train,
        test=test,
        label_column=label_column,
        time_column=time_column,
        group_column=group_column,
        sep=sep,
        columns=[c.strip() for c in columns.split(",") if c.strip()] if columns else None,
        detector=detector,
        target_far=target_far,
        modality=modality,
        window=window,
        stride=stride,
        seed=seed,
    )
    Console().print(_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(jsonable(result), indent=2, sort_keys=True) + "\n")


def run_csv_backtest(
    *,
    train: Path,
    test: Path,
    label_column: str,
    time_column: str | None = None,
    group_column: str | None = None,
    sep: str = ",",
    columns: list[str] | None = None,
    detector: str = "auto",
    target_far: float = 1e-3,
    modality: str = "tabular",
    window: int = 50,
    stride: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """The command without the printing: load both CSVs, dispatch by modality, return the figures."""
    from linewatch.loaders import load_csv

    if modality not in MODALITIES:
        raise ConfigError(f"--modality {modality!r}; use one of {', '.join(MODALITIES)}")
    tr = load_csv(
        train,
        sep=sep,
        columns=columns,
        label_column=label_column,
        time_column=time_column,
        label_optional=True,
        group_column=group_column,
    )
    # The test file is read with the training file's feature columns, in the same order.
    te = load_csv(
        test,
        sep=sep,
        columns=tr.feature_names,
        label_column=label_column,
        time_column=time_column,
        group_column=group_column,
    )
    if te.labels is None:
        raise DataError(f"no labels read from {label_column!r} in {test}")
    if modality == "signals":
        from linewatch.backtest.signals import run_signals_backtest

        if group_column is not None:
            raise ConfigError(
                "--group-column applies to --modality tabular; give the signals backtest one series per file"
            )
        result = run_signals_backtest(
            tr.X,
            te.X,
            te.labels,
            tr.feature_names,
            window=window,
            stride=stride,
            detector=detector,
            target_far=target_far,
            timestamps=te.timestamps,
        )
    else:
        from linewatch.backtest.tabular import run_tabular_backtest

        result = run_tabular_backtest(
            tr.X,
            te.X,
            te.labels,
            tr.feature_names,
            detector=detector,
            target_far=target_far,
            seed=seed,
            label_values=te.label_values if len(set(te.label_values.tolist())) > 2 else None,
            groups=te.groups,
        )
    result = dict(result)
    result.setdefault("modality", modality)
    result["train_file"], result["test_file"] = str(train), str(test)
    if tr.ignored_columns:
        result["ignored_columns"] = tr.ignored_columns
    if tr.labels is not None and tr.labels.any():
        # Labels never select training rows (that would leak ground truth into the model), but a
        # "known-good" file with labelled anomalies deserves a loud note next to the figures.
        result["train_rows_labelled_anomalous"] = int(tr.labels.sum())
    return jsonable(result)


def _image_tables(result: dict[str, Any]) -> list[Table]:
    table = Table(title=f"image backtest: {escape(str(result.get('data_dir')))}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in IMAGE_TABLE_KEYS:
        table.add_row(key, fmt(result.get(key)))
    per = Table(title="per defect type")
    for col in ("defect", "n", "image AUROC", "pixel AUROC", "recall"):
        per.add_column(col, justify="left" if col == "defect" else "right")
    for defect, entry in result.get("per_defect", {}).items():
        per.add_row(escape(defect), fmt(entry["n"]), fmt(entry["image_auroc"]), fmt(entry["pixel_auroc"]),
                    fmt(entry["recall"]))
    return [table, per]


@backtest_app.command("images")
def backtest_images_cmd(
    data: Annotated[Path, typer.Option("--data", help="dataset folder in the MVTec AD layout")],
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every figure as JSON here")] = None,
    preset: Annotated[str, typer.Option(help="PatchCore settings: fast (>= 50 frames/s) or accurate")] = "fast",
    target_far: Annotated[float, typer.Option(help="false alarms per good part the threshold is set for")] = 0.05,
    calibration_fraction: Annotated[
        float | None, typer.Option(help="share of train/good held out to calibrate (default 0.25)")
    ] = None,
    calibration: Annotated[str, typer.Option(help="auto, empirical or pot")] = "auto",
    image_size: Annotated[
        int | None, typer.Option(help="nominal model input side, a multiple of 16 (default: the preset's)")
    ] = None,
    coreset_ratio: Annotated[
        float | None, typer.Option(help="share of training patches kept in the memory bank (default: the preset's)")
    ] = None,
    max_bank_size: Annotated[
        int | None, typer.Option(help="upper bound on the memory bank, 0 for none (default: the preset's)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    model_out: Annotated[Path | None, typer.Option(help="also save the fitted, calibrated model here")] = None,
) -> None:
    """Train on train/good, calibrate on a held-out part of it, score test/: image and pixel AUROC, F1, frames/s."""
    from linewatch.backtest.images import DEFAULT_CALIBRATION_FRACTION, run_images_backtest

    fraction = DEFAULT_CALIBRATION_FRACTION if calibration_fraction is None else calibration_fraction
    with stage_progress() as progress:
        result = run_images_backtest(
            data, preset=preset, target_far=target_far, calibration_fraction=fraction, calibration=calibration,
            image_size=image_size, coreset_ratio=coreset_ratio, max_bank_size=max_bank_size, seed=seed,
            progress=progress, model_out=model_out,
        )
    out = Console()
    for table in _image_tables(result):
        out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(jsonable(result), indent=2, sort_keys=True) + "\n")
        console.print(f"figures written to {escape(str(json_out))}")
