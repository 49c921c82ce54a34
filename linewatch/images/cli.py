"""Command functions for images: ``simulate frames``, ``train frames`` and ``backtest images``.

Plain Typer command functions, so the main CLI mounts them next to their SPC siblings::

    simulate_app.command("frames")(simulate_frames_cmd)
    train_app.command("frames")(train_frames_cmd)
    backtest_app.command("images")(backtest_images_cmd)

A quality engineer's first session, on simulated parts or their own images::

    linewatch simulate frames --sku bracket-a --out bracket-data
    linewatch backtest images --data bracket-data --json result.json
    linewatch train frames --data bracket-data --sku bracket-a --camera cam-1
    linewatch simulate frames --sku bracket-a --camera cam-1 --frames 500 --rate 20   # onto the topic

Each command reads the settings once (environment, ``--config``, defaults), like every other
linewatch command; the database and broker are embedded ones when no URL is configured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from linewatch.config import load_settings
from linewatch.errors import ConfigError, DataError

console = Console(stderr=True)
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file (see `linewatch config`).")]

#: What each progress stage of fitting and backtesting is called on screen.
STAGE_LABELS = {"features": "patch features", "coreset": "memory bank (coreset)", "scoring": "scoring test frames"}
#: Rows of the backtest table, in reading order; every figure is in the JSON.
TABLE_KEYS = (
    "image_auroc", "pixel_auroc", "f1", "precision", "recall", "far", "target_far", "threshold", "calibrator",
    "fps", "n_train", "n_calibration", "n_test", "n_test_good", "n_test_defect", "bank_size", "fit_seconds",
)  # fmt: skip


@contextmanager
def _stage_progress() -> Iterator[Any]:
    """A rich progress display with one bar per stage, as a ``(stage, done, total)`` callback."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(STAGE_LABELS.get(stage, stage), total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def simulate_frames_cmd(
    config: ConfigOption = None,
    sku: Annotated[str, typer.Option(help="bracket-a, washer-b, fabric-c, grain-d or any name")] = "bracket-a",
    out: Annotated[Path | None, typer.Option(help="write an MVTec-layout dataset here, don't stream")] = None,
    size: Annotated[int, typer.Option(help="frame side in pixels")] = 256,
    seed: Annotated[int, typer.Option()] = 0,
    n_train: Annotated[int, typer.Option(help="--out: known-good training frames")] = 200,
    n_test_good: Annotated[int, typer.Option(help="--out: good test frames")] = 40,
    n_test_per_defect: Annotated[int, typer.Option(help="--out: test frames per defect type")] = 20,
    frames: Annotated[int, typer.Option(help="streaming: how many frames to produce")] = 1000,
    asset: Annotated[str, typer.Option(help="streaming: asset id the camera belongs to")] = "line-1",
    camera: Annotated[str, typer.Option(help="streaming: camera id")] = "cam-1",
    defect_rate: Annotated[float, typer.Option(help="streaming: share of defective parts")] = 0.05,
    rate: Annotated[float | None, typer.Option(help="streaming: frames per second (default: flat out)")] = None,
    encoding: Annotated[str, typer.Option(help="streaming: png, jpeg or raw")] = "png",
) -> None:
    """Simulate camera frames of parts with labelled defects: a dataset folder, or a camera on the `frames` topic.

    With --out, write train/good, test/good, test/<defect> and ground_truth/<defect> masks (the MVTec AD
    layout that `linewatch backtest images` and `linewatch train frames` read). Without it, stream frames
    as a camera would (needs LINEWATCH_BROKER_URL).
    """
    if out is not None:
        from linewatch.simulation.frames import write_dataset

        summary = write_dataset(out, sku=sku, n_train=n_train, n_test_good=n_test_good,
                                n_test_per_defect=n_test_per_defect, size=size, seed=seed)
        counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
        console.print(f"wrote {escape(str(out))}: {counts}")
        return
    from linewatch.embedded.stack import Stack
    from linewatch.streams.frames_producer import produce_frames, simulated_camera
    from linewatch.streams.kafka import ensure_topics

    s = load_settings(config)
    if s.embedded_broker:
        raise ConfigError("set LINEWATCH_BROKER_URL to the broker to produce to (or write a dataset with --out DIR)")
    labels: list[str] = []
    stream = simulated_camera(sku, asset_id=asset, camera=camera, n=frames, size=size, seed=seed,
                              defect_rate=defect_rate, labels=labels)
    with Stack(s, need_database=False) as stack:
        ensure_topics(stack.bootstrap, partitions=s.topic_partitions)
        with Progress(console=console) as progress:
            task = progress.add_task("producing frames", total=frames)
            n = produce_frames(stack.bootstrap, stream, encoding=encoding, rate_per_s=rate,
                               progress=lambda k: progress.update(task, completed=k))
    defective = sum(label != "good" for label in labels)
    console.print(f"produced {n} {encoding} frames of {sku} ({defective} defective) from {asset}/{camera} "
                  f"to {stack.bootstrap}")


def _training_files(data: Path) -> list[Path]:
    from linewatch.backtest.images import IMAGE_SUFFIXES

    folder = data / "train" / "good" if (data / "train" / "good").is_dir() else data
    if not folder.is_dir():
        raise ConfigError(f"{data} is not a folder; give a folder of good images or an MVTec-layout dataset")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def train_frames_cmd(
    data: Annotated[Path, typer.Option("--data", help="folder of known-good images, or a dataset with train/good/")],
    sku: Annotated[str, typer.Option("--sku", help="the SKU this model inspects")],
    camera: Annotated[str | None, typer.Option("--camera", help="the camera it is for (default: any)")] = None,
    config: ConfigOption = None,
    target_far: Annotated[float, typer.Option(help="false alarms per good part, e.g. 0.01")] = 0.01,
    calibration: Annotated[str, typer.Option(help="auto, empirical or pot")] = "auto",
    calibration_fraction: Annotated[float, typer.Option(help="share of good images held out to calibrate")] = 0.25,
    image_size: Annotated[int, typer.Option(help="model input side, a multiple of 16 (224 native)")] = 224,
    coreset_ratio: Annotated[float, typer.Option(help="share of training patches kept in the memory bank")] = 0.01,
    max_bank_size: Annotated[int, typer.Option(help="upper bound on the memory bank")] = 4096,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Fit an image model on known-good frames of one SKU (and camera), register it, and make workers use it.

    A seeded share of the images is held out to calibrate the threshold at --target-far; workers pick the
    new version up within `model_refresh_s` for frames whose SKU (and camera) match.
    """
    from linewatch.backtest.images import load_frame
    from linewatch.embedded.stack import Stack
    from linewatch.images.registry import train_image_model
    from linewatch.storage.migrations import migrate

    s = load_settings(config)
    files = _training_files(data)
    frames = [load_frame(p, (image_size, image_size)) for p in files]
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        with _stage_progress() as progress:
            model, ref = train_image_model(
                frames, sku=sku, camera=camera, database_url=stack.database_url, model_dir=s.model_dir,
                target_far=target_far, calibration=calibration, calibration_fraction=calibration_fraction,
                image_size=image_size, coreset_ratio=coreset_ratio, max_bank_size=max_bank_size, seed=seed,
                progress=progress,
            )
    meta = model.meta
    console.print(
        f"model {escape(ref.model_id)}@{ref.version}: patchcore on {meta['n_fit']} good frames, calibrated on "
        f"{meta['n_calibration']} held out ({model.calibrator.kind}), bank {meta['bank_size']}, "
        f"raw threshold {model.raw_threshold:.3g} at target_far {target_far:g}; saved to {escape(ref.artifact_path)}"
    )


def _backtest_tables(result: dict[str, Any]) -> list[Table]:
    table = Table(title=f"image backtest: {escape(str(result.get('data_dir')))}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in TABLE_KEYS:
        table.add_row(key, _fmt(result.get(key)))
    per = Table(title="per defect type")
    for col in ("defect", "n", "image AUROC", "pixel AUROC", "recall"):
        per.add_column(col, justify="left" if col == "defect" else "right")
    for defect, entry in result.get("per_defect", {}).items():
        per.add_row(escape(defect), _fmt(entry["n"]), _fmt(entry["image_auroc"]), _fmt(entry["pixel_auroc"]),
                    _fmt(entry["recall"]))
    return [table, per]


def backtest_images_cmd(
    data: Annotated[Path, typer.Option("--data", help="dataset folder in the MVTec AD layout")],
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every figure as JSON here")] = None,
    target_far: Annotated[float, typer.Option(help="false alarms per good part the threshold is set for")] = 0.05,
    calibration_fraction: Annotated[float, typer.Option(help="share of train/good held out to calibrate")] = 0.2,
    image_size: Annotated[int, typer.Option(help="model input side, a multiple of 16")] = 224,
    coreset_ratio: Annotated[float, typer.Option(help="share of training patches kept in the memory bank")] = 0.01,
    max_bank_size: Annotated[int, typer.Option(help="upper bound on the memory bank")] = 4096,
    seed: Annotated[int, typer.Option()] = 0,
    model_out: Annotated[Path | None, typer.Option(help="also save the fitted, calibrated model here")] = None,
) -> None:
    """Train on train/good, calibrate on a held-out part of it, score test/: image and pixel AUROC, F1, frames/s."""
    from linewatch.backtest.images import run_images_backtest

    with _stage_progress() as progress:
        result = run_images_backtest(
            data, target_far=target_far, calibration_fraction=calibration_fraction, image_size=image_size,
            coreset_ratio=coreset_ratio, max_bank_size=max_bank_size, seed=seed, progress=progress,
            model_out=model_out,
        )
    out = Console()
    for table in _backtest_tables(result):
        out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(_jsonable(result), indent=2, sort_keys=True) + "\n")
        console.print(f"figures written to {escape(str(json_out))}")
