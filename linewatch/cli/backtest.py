"""``linewatch backtest``: replay labelled history through a detector and print the metrics.

``csv`` reads two CSVs (known-good training rows, labelled test rows) through
:func:`linewatch.loaders.load_csv` - or one, split at ``--train-until`` - takes labels from a
column or from windows (``--labels``, :mod:`linewatch.backtest.labels`), fits and calibrates on
the known-good rows, replays the test rows, prints the metrics and a per-event table and
optionally writes the figures as JSON; ``--modality signals`` hands the
same arrays to the windowed signals backtest
(:func:`linewatch.backtest.signals.run_signals_backtest`). ``images`` runs the folder backtest
of :mod:`linewatch.backtest.images` on an MVTec AD-layout dataset.

Examples::

    linewatch simulate spc --parts 20000 --fault-fraction 0 --csv train.csv
    linewatch simulate spc --parts 5000 --seed 1 --csv test.csv
    linewatch backtest csv --train train.csv --test test.csv --label-column fault \\
        --time-column ts --detector hotelling --target-far 0.001 --json result.json
    linewatch backtest csv --test machine_temperature_system_failure.csv \\
        --labels combined_windows.json --time-column timestamp --train-until 2013-12-10
    linewatch simulate frames --sku bracket-a --out bracket-data
    linewatch backtest images --data bracket-data --json result.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from linewatch.cli.common import (
    CalibrationFractionOption,
    CalibrationOption,
    CoresetRatioOption,
    FoldOrderOption,
    ImageSizeOption,
    MaxBankSizeOption,
    PresetOption,
    add_calibration_rows,
    fmt,
    jsonable,
    print_backtest,
    stage_progress,
)
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
#: Unseen-context lines the table shows (all are in the JSON).
MAX_COVERAGE_LINES = 8
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
    if "events" in result:
        table.add_row("events detected", f"{result.get('n_detected')} of {result.get('n_events')}")
        table.add_row("false-alarm episodes", fmt(result.get("false_alarm_episodes")))
        if result.get("false_alarms_per_hour") is not None:
            table.add_row("false alarms per hour", fmt(result["false_alarms_per_hour"]))
    for file, n in result.get("skipped_rows", {}).items():
        role = "test" if file == result.get("test_file") else "train"
        table.add_row(f"rows skipped ({role} file)", fmt(n))
    if result.get("train_rows_labelled_anomalous"):
        n_bad = result["train_rows_labelled_anomalous"]
        table.add_row("[yellow]warning[/]", f"{n_bad} training rows are labelled anomalous")
    if result.get("train_rows_left_out_labelled"):
        table.add_row("train rows left out", f"{result['train_rows_left_out_labelled']} inside label windows")
    add_calibration_rows(table, result.get("calibration_report"))
    for message in (result.get("coverage") or {}).get("messages", [])[:MAX_COVERAGE_LINES]:
        table.add_row("[yellow]coverage[/]", escape(message))
    if "blamed_features" in result:
        top = ", ".join(f"{k} ({v})" for k, v in list(result["blamed_features"].items())[:3])
        table.add_row("most blamed", escape(top))
    if "auto_reason" in result:
        table.add_row("auto choice", escape(result["auto_reason"]))
    return table


def _coverage(tr: Any, te: Any) -> dict[str, Any]:
    """Which test rows come from a context (shift, lot, SKU, asset, machine state, hour) training never had.

    The same check the live agent makes on every record (:mod:`linewatch.coverage`), so a backtest
    shows up front how much of its figures rest on conditions the model was never trained on.
    """
    from linewatch.context_loader import context_from_columns, training_context
    from linewatch.coverage import coverage_report

    return coverage_report(training_context(context_from_columns(tr.text), tr.timestamps),
                           training_context(context_from_columns(te.text), te.timestamps))


def _duration(value: float | None, unit: str) -> str:
    """A delay as people read it: ``1h35m`` for seconds, the number and unit otherwise."""
    if value is None:
        return "-"
    if unit != "s":
        return f"{value:g} {unit}"
    minutes = round(value / 60.0)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n) or f"{value:g}s"


def _when(value: Any) -> str:
    """An event time for the table: ``2013-12-10 06:25`` (zero seconds dropped), a number, or ``-``."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = value.replace("T", " ")
        return value[:-3] if len(value) == 19 and value.endswith(":00") else value
    return fmt(value)


def _events_table(result: dict[str, Any]) -> Table:
    """One row per labelled event: when, whether and how fast it was caught, and who was blamed.

    Cells fold rather than being cut short, so a narrow terminal still shows every time in full.
    """
    unit = result.get("delay_unit", "rows")
    table = Table(title=f"events: {result.get('n_detected')} of {result.get('n_events')} detected, "
                        f"{result.get('false_alarm_episodes')} false-alarm episodes", box=box.SIMPLE_HEAD)
    for col in ("#", "start", "end", "detected", "delay", "first alarm", "blamed"):
        table.add_column(col, justify="right" if col in {"#", "delay"} else "left", overflow="fold")
    for i, ev in enumerate(result.get("events", []), start=1):
        # Events from metrics.event_report (every backtest); a missing figure shows as "-".
        timed = ev.get("start") is not None
        delay = first = "-"
        if ev["detected"]:
            parts = [f"{ev['delay_rows']} rows"] if ev.get("delay_rows") is not None else []
            if unit != "rows" or not parts:
                parts.append(_duration(ev.get("delay"), unit))
            delay = ", ".join(parts)
            if ev.get("alarm_on_before_rows"):
                delay += f" (alarm on {ev['alarm_on_before_rows']} rows before)"
            if ev.get("first_alarm") is not None:
                first = _when(ev["first_alarm"])
            elif ev.get("first_alarm_row") is not None:
                first = f"row {ev['first_alarm_row']}"
        table.add_row(
            str(i),
            escape(_when(ev["start"]) if timed else f"row {ev['start_row']}"),
            escape(_when(ev["end"]) if timed else f"row {ev['end_row']}"),
            "[green]yes[/]" if ev["detected"] else "[red]no[/]",
            delay,
            escape(first),
            escape(ev.get("blamed_feature") or "-"),
        )
    return table


def _split(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


@backtest_app.command("csv")
def csv_cmd(
    test: Annotated[Path, typer.Option("--test", help="CSV of rows to replay, with labels (a column or --labels)")],
    train: Annotated[Path | None, typer.Option(
        "--train", help="CSV of known-good rows to fit and calibrate on (or --train-until)")] = None,
    train_until: Annotated[str | None, typer.Option(
        "--train-until", help="instead of --train: fit on the --test file's rows before this time (ISO 8601 or a "
        "number, needs --time-column) that are outside every label window; only later rows are scored")] = None,
    label_column: Annotated[str | None, typer.Option(
        "--label-column", help="ground truth column in --test (1/0, yes/no, or fault names); metrics only")] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="instead of --label-column: anomaly windows, a NAB-style JSON {\"file\": \\[\\[start, end], "
        "...]} or a CSV with start,end columns; rows whose --time-column lies in a window (inclusive) are "
        "anomalous. NAB windows are tolerance windows around each anomaly, so judge by the events table")] = None,
    labels_key: Annotated[str | None, typer.Option(
        "--labels-key", help="which entry of the --labels JSON (default: the key matching the --test file name)")
    ] = None,
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="sort rows by this column (ISO 8601 or numbers)")
    ] = None,
    group_column: Annotated[
        str | None, typer.Option("--group-column", help="replay each value (e.g. asset id) as its own series")
    ] = None,
    sep: Annotated[str, typer.Option("--sep", help="field separator, e.g. ';'")] = ",",
    columns: Annotated[
        str | None, typer.Option("--columns", help="comma-separated feature columns (default: every numeric one)")
    ] = None,
    on_bad_rows: Annotated[str, typer.Option(
        "--on-bad-rows", help="a non-numeric or empty cell in a feature column: 'error' (default) or 'skip' "
        "(drop the row; the report counts skipped rows per file)")] = "error",
    detector: Annotated[str, typer.Option("--detector", help="registered detector name, or 'auto'")] = "auto",
    target_far: Annotated[float, typer.Option("--target-far", help="false alarms per normal row")] = 1e-3,
    modality: Annotated[str, typer.Option("--modality", help="tabular or signals")] = "tabular",
    window: Annotated[int, typer.Option("--window", help="signals: rows per window")] = 50,
    stride: Annotated[int, typer.Option("--stride", help="signals: rows between window starts")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="seeds the detector and the fit/calibration split")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the figures as JSON")] = None,
) -> None:
    """Fit on --train (or the test file up to --train-until), replay --test, print the metrics and every event.

    Prints precision / recall / f1 / far / mar / auroc, then one row per labelled event (a run
    of anomalous rows, or a --labels window): start, end, detected, delay in rows and time,
    first alarm and the feature blamed for it, and the number of false-alarm episodes.

    One-file benchmark (NAB), fitting on the first week minus its label windows:

        linewatch backtest csv --test machine_temperature_system_failure.csv --labels combined_windows.json \\
            --time-column timestamp --train-until 2013-12-10
    """
    result = run_csv_backtest(
        train=train,
        test=test,
        label_column=label_column,
        labels=labels,
        labels_key=labels_key,
        train_until=train_until,
        time_column=time_column,
        group_column=group_column,
        sep=sep,
        columns=_split(columns),
        on_bad_rows=on_bad_rows,
        detector=detector,
        target_far=target_far,
        modality=modality,
        window=window,
        stride=stride,
        seed=seed,
    )
    print_backtest([_table(result), *([_events_table(result)] if result.get("events") else [])], result, json_out)


def _check_sources(train: Path | None, train_until: str | None, label_column: str | None,
                   labels: Path | None, labels_key: str | None, time_column: str | None) -> None:
    """Exactly one training source and one label source, each with what it needs."""
    if (train is None) == (train_until is None):
        raise ConfigError("give exactly one of --train FILE (known-good rows) or --train-until TIME "
                          "(fit on the --test file's earlier rows)")
    if (label_column is None) == (labels is None):
        raise ConfigError("give exactly one of --label-column NAME (a column of --test) or --labels FILE "
                          "(anomaly windows matched against --time-column)")
    if labels_key is not None and labels is None:
        raise ConfigError("--labels-key chooses an entry of a --labels JSON; give --labels too")
    for option, given in (("--labels", labels), ("--train-until", train_until)):
        if given is not None and time_column is None:
            raise ConfigError(f"{option} needs --time-column: it is matched against each row's time")


def run_csv_backtest(
    *,
    test: Path,
    train: Path | None = None,
    label_column: str | None = None,
    labels: Path | None = None,
    labels_key: str | None = None,
    train_until: str | None = None,
    time_column: str | None = None,
    group_column: str | None = None,
    sep: str = ",",
    columns: list[str] | None = None,
    on_bad_rows: str = "error",
    detector: str = "auto",
    target_far: float = 1e-3,
    modality: str = "tabular",
    window: int = 50,
    stride: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """The command without the printing: load, label, split, dispatch by modality, return the figures."""
    from linewatch.backtest.labels import load_windows, split_until
    from linewatch.loaders import load_csv

    if modality not in MODALITIES:
        raise ConfigError(f"--modality {modality!r}; use one of {', '.join(MODALITIES)}")
    _check_sources(train, train_until, label_column, labels, labels_key, time_column)
    common = {"sep": sep, "label_column": label_column, "time_column": time_column, "group_column": group_column,
              "on_bad_rows": on_bad_rows}
    windows = None if labels is None else load_windows(labels, test_file=test, key=labels_key, sep=sep)
    skipped: dict[str, int] = {}
    left_out = 0
    if train is not None:
        tr = load_csv(train, columns=columns, label_optional=True, **common)
        # The test file is read with the training file's feature columns, in the same order.
        te = load_csv(test, columns=tr.feature_names, **common)
        skipped[str(train)] = tr.skipped_rows
    else:
        whole = load_csv(test, columns=columns, **common)
        anomalous = windows.mask(whole.timestamps) if windows is not None else whole.labels
        tr, te, left_out = split_until(whole, str(train_until), anomalous)
    skipped[str(test)] = te.skipped_rows if train is not None else whole.skipped_rows
    episodes = None
    if windows is not None:
        episodes = windows.episodes(te.timestamps)
        y = windows.mask(te.timestamps)
    elif te.labels is None:
        raise DataError(f"no labels read from {label_column!r} in {test}")
    else:
        y = te.labels
    if modality == "signals":
        from linewatch.backtest.signals import run_signals_backtest

        if group_column is not None:
            raise ConfigError(
                "--group-column applies to --modality tabular; give the signals backtest one series per file"
            )
        result = run_signals_backtest(
            tr.X,
            te.X,
            y,
            tr.feature_names,
            window=window,
            stride=stride,
            detector=detector,
            target_far=target_far,
            timestamps=te.timestamps,
        )
    else:
        from linewatch.backtest.tabular import run_tabular_backtest

        multi_kind = te.label_values is not None and len(set(te.label_values.tolist())) > 2
        result = run_tabular_backtest(
            tr.X,
            te.X,
            y,
            tr.feature_names,
            detector=detector,
            target_far=target_far,
            seed=seed,
            label_values=te.label_values if multi_kind else None,
            groups=te.groups,
            train_groups=tr.groups,
            timestamps=te.timestamps,
            episodes=episodes,
        )
    result = dict(result)
    result.setdefault("modality", modality)
    result["train_file"] = str(train) if train is not None else f"{test} before {train_until}"
    result["test_file"] = str(test)
    result["skipped_rows"] = skipped
    if windows is not None:
        result["labels_file"] = windows.source
        result["label_windows"] = len(windows.starts)
        result["label_windows_in_test"] = len(episodes or [])
    if train_until is not None:
        result["train_until"] = train_until
        result["train_rows_left_out_labelled"] = left_out
    if tr.ignored_columns:
        result["ignored_columns"] = tr.ignored_columns
    result["coverage"] = _coverage(tr, te)
    if tr.labels is not None and tr.labels.any() and train is not None:
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
    add_calibration_rows(table, result.get("calibration_report"))
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
    preset: PresetOption = "fast",
    target_far: Annotated[float, typer.Option(help="false alarms per good part the threshold is set for")] = 0.05,
    calibration_fraction: CalibrationFractionOption = None,
    fold_order: FoldOrderOption = "time",
    calibration: CalibrationOption = "auto",
    image_size: ImageSizeOption = None,
    coreset_ratio: CoresetRatioOption = None,
    max_bank_size: MaxBankSizeOption = None,
    seed: Annotated[int, typer.Option()] = 0,
    model_out: Annotated[Path | None, typer.Option(help="also save the fitted, calibrated model here")] = None,
) -> None:
    """Train on train/good (calibrated by cross-fitting), score test/: image and pixel AUROC, F1, frames/s."""
    from linewatch.backtest.images import run_images_backtest

    with stage_progress() as progress:
        result = run_images_backtest(
            data, preset=preset, target_far=target_far, calibration_fraction=calibration_fraction,
            fold_order=fold_order, calibration=calibration, image_size=image_size, coreset_ratio=coreset_ratio,
            max_bank_size=max_bank_size, seed=seed, progress=progress, model_out=model_out,
        )
    print_backtest(_image_tables(result), result, json_out)

from linewatch.cli.backtest_signals import backtest_signals_cmd  # noqa: E402  (its own module, mounted here)

backtest_app.command("signals")(backtest_signals_cmd)
