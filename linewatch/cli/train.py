"""``linewatch train``: fit a model on known-good data, register it as a new version, make workers use it.

Data come in through :mod:`linewatch.loaders` (files, a SQL query, the ``signals`` topic) or
from the simulators; fitting and registering are :mod:`linewatch.training` for every modality (signal windows are
framed first by :mod:`linewatch.signals.framing`, exactly as the live agent frames them). Workers
pick a new version up within LINEWATCH_MODEL_REFRESH_S seconds, without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from linewatch.cli.common import (
    CalibrationFractionOption,
    CalibrationOption,
    ConfigOption,
    CoresetRatioOption,
    FoldOrderOption,
    ImageSizeOption,
    MaxBankSizeOption,
    PresetOption,
    ShadowOption,
    console,
    print_calibration_report,
    settings,
    stage_progress,
)
from linewatch.cli.train_defects import train_defects_cmd
from linewatch.config import Settings
from linewatch.errors import ConfigError, DataError

train_app = typer.Typer(help="Fit models on known-good data and register them as versions.", no_args_is_help=True)

#: Known-good parts ``train spc --from simulated`` fits on.
SIMULATED_TRAIN_PARTS = 20_000


@train_app.command("spc")
def train_spc_cmd(
    source: Annotated[str, typer.Option(
        "--from", help="known-good parts: a CSV or Parquet file, 'sql:SELECT ...' (one row per part, "
        "numeric columns = characteristics) run on the configured database, or 'simulated'")],
    config: ConfigOption = None,
    columns: Annotated[str | None, typer.Option(help="comma-separated characteristics (default: numeric)")] = None,
    time_column: Annotated[str | None, typer.Option(help="timestamp column: records the training window")] = None,
    label_column: Annotated[str | None, typer.Option(help="a label column to keep out of the features")] = None,
    detector: Annotated[str, typer.Option(help="registered detector name (see docs/detectors-tabular.md)")] = (
        "robust_mahalanobis"),
    target_far: Annotated[float | None, typer.Option(help="false alarms per normal part, e.g. 0.001")] = None,
    calibration: Annotated[str, typer.Option(help="empirical, pot or auto")] = "auto",
    asset: Annotated[str, typer.Option(help="asset this model is for ('*' = any)")] = "*",
    sku: Annotated[str, typer.Option(help="SKU this model is for ('*' = any)")] = "*",
    sep: Annotated[str, typer.Option(help="CSV field separator")] = ",",
    on_bad_rows: Annotated[str, typer.Option(
        help="a non-numeric or empty cell in a CSV feature column: 'error' (default) or 'skip' (drop the row, "
        "counted on screen)")] = "error",
    run_rules: Annotated[str, typer.Option(
        help="run rules the workers apply live to each characteristic: western_electric, nelson or none")] = (
        "western_electric"),
    seed: Annotated[int, typer.Option()] = 0,
    shadow: ShadowOption = False,
) -> None:
    """Fit an SPC model on known-good parts, save it as a new version and make workers use it.

    Workers pick the new version up within LINEWATCH_MODEL_REFRESH_S seconds, without a restart;
    every score row records the version that produced it. The training data's context columns
    (shift, lot, sku, asset or asset_id, machine_state, and the hour of day from --time-column)
    are counted and stored with the version; live parts from a context never seen are flagged on
    their scores.
    """
    import numpy as np

    from linewatch.context_loader import (
        context_from_columns,
        context_from_query,
        training_context,
    )
    from linewatch.coverage import Coverage
    from linewatch.detectors.bundle import Scope
    from linewatch.embedded.stack import Stack
    from linewatch.loaders import load_query, load_table, time_span
    from linewatch.storage.migrations import migrate
    from linewatch.training import train_and_register

    if run_rules not in ("western_electric", "nelson", "none"):
        raise ConfigError(f"--run-rules {run_rules!r}: use western_electric, nelson or none")
    s = settings(config)
    wanted = columns.split(",") if columns else None
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        if source == "simulated":
            from linewatch.simulation.spc import simulate_spc

            sim = simulate_spc(n_parts=SIMULATED_TRAIN_PARTS, seed=seed, fault_fraction=0.0)
            X, names, times = sim.X, list(sim.feature_names), sim.ts
            # The simulator's clock is synthetic: its hours of day say nothing about the plant's.
            context: dict[str, object] = {"asset": sim.asset_id}
            streams = sim.asset_id
        else:
            streams = None
            if source.startswith("sql:"):
                data = load_query(stack.database_url, source[4:], columns=wanted, time_column=time_column)
                found = context_from_query(stack.database_url, source[4:])
            else:
                data = load_table(Path(source), sep=sep, columns=wanted, label_column=label_column,
                                  time_column=time_column, on_bad_rows=on_bad_rows)
                if data.skipped_rows:
                    console.print(f"[yellow]skipped {data.skipped_rows} row(s) of {escape(source)} with a bad cell")
                # The file's text columns come row-aligned with the features (skipped rows and time
                # order included). Charts keep memory per asset live, so they are calibrated on each
                # asset's own stream.
                found = context_from_columns(data.text)
                streams = found.get("asset")
            X, names, times = data.X, data.feature_names, data.timestamps
            context = training_context(found, times)
        window = time_span(times)
        bundle, ref = train_and_register(
            np.asarray(X), feature_names=names, database_url=stack.database_url, model_dir=s.model_dir,
            detector=detector, calibration=calibration, target_far=target_far or s.target_far, seed=seed,
            scope=Scope(asset=asset, sku=sku), train_start=window[0], train_end=window[1], context=context,
            run_rules=None if run_rules == "none" else run_rules, groups=streams, shadow=shadow,
        )
    console.print(f"model {ref.model_id}@{ref.version}{_role(ref.shadow)}: {bundle.detector_name} on {len(X)} rows x "
                  f"{len(names)} characteristics, threshold {bundle.threshold:.2f} (-log10 p), "
                  f"saved to {ref.artifact_path}")
    print_calibration_report(bundle.calibration_report)
    console.print(Coverage.from_dict(bundle.meta["coverage"]))


@train_app.command("signals")
def train_signals_cmd(
    config: ConfigOption = None,
    from_topic: Annotated[bool, typer.Option(
        "--from-topic", help="train on the windows now in the `signals` topic (known-good period)")] = False,
    simulated: Annotated[bool, typer.Option(help="train on simulated healthy machines instead")] = False,
    data: Annotated[Path | None, typer.Option(
        "--data", help="train on waveform recordings: DIR/train/good/*.wav|npy|csv (the images' layout)")] = None,
    sample_rate: Annotated[float | None, typer.Option(
        "--sample-rate", help="with --data: samples per second of the recordings")] = None,
    window_s: Annotated[float, typer.Option(
        "--window-s", help="with --data: seconds per window; live windows must have this length")] = 1.0,
    kind: Annotated[str, typer.Option(
        "--kind", help="with --data: kind of channels not named after one (vibration, current, ...)")] = "vibration",
    speed_hz: Annotated[float | None, typer.Option(
        "--speed-hz", help="with --data: shaft speed (Hz) of the recordings; adds bearing envelope features, "
        "which live windows then need (speed_hz or the asset_speed_hz setting)")] = None,
    machines: Annotated[int, typer.Option(help="simulated machines (with --simulated)")] = 3,
    duration_s: Annotated[float, typer.Option(help="simulated seconds per machine (with --simulated)")] = 21600.0,
    detector: Annotated[str, typer.Option(help="dynamic_pca, autoencoder, online_residual, ...")] = "dynamic_pca",
    asset: Annotated[str, typer.Option(help="asset this model is for ('*' = any)")] = "*",
    target_far: Annotated[float | None, typer.Option(help="false alarms per normal frame, e.g. 0.001")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    shadow: ShadowOption = False,
) -> None:
    """Fit a multi-sensor signals model on known-good windows and register it as a version.

    Frames are built exactly as the live agent builds them (same features, same time slots). With
    --data, each recording in train/good/ is cut into --window-s windows named after its channels
    (CSV header, else ch1, ch2, ...): the live windows of --asset must come with those sensor names,
    that rate and that length.
    """
    from linewatch.coverage import Coverage
    from linewatch.detectors.bundle import ANY, Scope
    from linewatch.embedded.stack import Stack
    from linewatch.signals.framing import BearingEnvelope, training_frames
    from linewatch.storage.migrations import migrate
    from linewatch.training import train_and_register

    if sum((from_topic, simulated, data is not None)) != 1:
        raise ConfigError("choose exactly one source: --from-topic, --simulated or --data")
    if data is not None and sample_rate is None:
        raise ConfigError("--data needs --sample-rate (samples per second of the recordings)")
    s = settings(config)
    envelope = BearingEnvelope.from_settings(s.asset_speed_hz, s.bearing_geometry)
    if data is not None:
        assert sample_rate is not None
        _train_signals_on_recordings(data, sample_rate=sample_rate, window_s=window_s, kind=kind, speed_hz=speed_hz,
                                     detector=detector, asset=asset, target_far=target_far or s.target_far,
                                     seed=seed, s=s)
        return
    with Stack(s, need_broker=from_topic) as stack:
        migrate(stack.database_url)
        if simulated:
            from linewatch.simulation.signals import simulate_signals

            sim = simulate_signals(n_machines=machines, duration_s=duration_s, faults=(), seed=seed)
            messages = sim.signal_messages(known_good_only=True)
        else:
            from linewatch.loaders import read_signal_topic

            messages, skipped = read_signal_topic(stack.bootstrap, security=stack.kafka_security)
            if skipped:
                console.print(f"[yellow]skipped {skipped} undecodable window(s)")
        if asset != ANY:
            messages = [m for m in messages if m[0].asset_id == asset]
        frames = training_frames(messages, envelope=envelope)
        bundle, ref = train_and_register(
            frames.X, modality="signals", **frames.provenance(), database_url=stack.database_url,
            model_dir=s.model_dir, detector=detector, target_far=target_far or s.target_far, seed=seed,
            scope=Scope(asset=asset), shadow=shadow,
        )
    console.print(f"model {ref.model_id}@{ref.version}{_role(ref.shadow)}: {bundle.detector_name} on "
                  f"{len(frames.X)} frames x "
                  f"{len(bundle.feature_names)} features, saved to {ref.artifact_path}")
    print_calibration_report(bundle.calibration_report)
    console.print(Coverage.from_dict(bundle.meta["coverage"]))


def _train_signals_on_recordings(data: Path, *, sample_rate: float, window_s: float, kind: str,
                                 speed_hz: float | None, detector: str, asset: str, target_far: float, seed: int,
                                 s: Settings) -> None:
    """``train signals --data``: fit on train/good recordings, then register (files first, services after)."""
    from linewatch.backtest.recordings import fit_recordings_model
    from linewatch.detectors.bundle import Scope
    from linewatch.embedded.stack import Stack
    from linewatch.signals.recordings import GOOD, load_recordings, scan_recordings
    from linewatch.storage.migrations import migrate
    from linewatch.training import register

    files, _ = scan_recordings(data)
    with stage_progress({"read": "reading train/good", "fit": "fitting and calibrating"}) as progress:
        recs = load_recordings([(p, GOOD) for p in files], sample_rate=sample_rate, progress=progress)
        progress("fit", 0, 1)
        bundle, frames = fit_recordings_model(recs, window_s=window_s, detector=detector, target_far=target_far,
                                              kind=kind, speed_hz=speed_hz, seed=seed, scope=Scope(asset=asset),
                                              meta={"data": str(data)})
        progress("fit", 1, 1)
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        ref = register(bundle, database_url=stack.database_url, model_dir=s.model_dir)
    console.print(f"model {escape(ref.model_id)}@{ref.version}: {bundle.detector_name} on {len(frames.X)} windows of "
                  f"{len(recs)} recordings x {len(bundle.feature_names)} features, saved to "
                  f"{escape(str(ref.artifact_path))}")
    print_calibration_report(bundle.calibration_report)


def _training_files(data: Path) -> list[Path]:
    """The good images to fit on: ``data/train/good/`` of an MVTec-layout dataset, or ``data`` itself."""
    from linewatch.backtest.images import IMAGE_SUFFIXES

    folder = data / "train" / "good" if (data / "train" / "good").is_dir() else data
    if not folder.is_dir():
        raise ConfigError(f"{data} is not a folder; give a folder of good images or an MVTec-layout dataset")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


@train_app.command("frames")
def train_frames_cmd(
    data: Annotated[Path, typer.Option("--data", help="folder of known-good images, or a dataset with train/good/")],
    sku: Annotated[str, typer.Option("--sku", help="the SKU this model inspects")],
    camera: Annotated[str | None, typer.Option("--camera", help="the camera it is for (default: any)")] = None,
    config: ConfigOption = None,
    target_far: Annotated[float, typer.Option(help="false alarms per good part, e.g. 0.01")] = 0.01,
    calibration: CalibrationOption = "auto",
    calibration_fraction: CalibrationFractionOption = None,
    fold_order: FoldOrderOption = "time",
    preset: PresetOption = "fast",
    image_size: ImageSizeOption = None,
    coreset_ratio: CoresetRatioOption = None,
    max_bank_size: MaxBankSizeOption = None,
    seed: Annotated[int, typer.Option()] = 0,
    shadow: ShadowOption = False,
) -> None:
    """Fit an image model on known-good frames of one SKU (and camera), register it, and make workers use it.

    The threshold at --target-far is calibrated on out-of-fold scores of every good image (cross-fitting;
    --calibration-fraction holds out the latest share instead); workers pick the new version up within
    `model_refresh_s` for frames whose SKU (and camera) match.
    """
    from linewatch.backtest.images import check_calibration_budget, load_frame
    from linewatch.detectors.bundle import ANY, Scope
    from linewatch.detectors.patchcore import PatchCore
    from linewatch.embedded.stack import Stack
    from linewatch.storage.migrations import migrate
    from linewatch.training import train_and_register

    s = settings(config)
    files = _training_files(data)
    params = {"preset": preset, "image_size": image_size, "coreset_ratio": coreset_ratio,
              "max_bank_size": max_bank_size}
    reader = PatchCore(**params)
    reader._validate_params()
    check_calibration_budget(len(files), calibration_fraction, target_far, calibration)  # before reading frames
    frames = [load_frame(p, reader.model_size) for p in files]
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        with stage_progress() as progress:
            model, ref = train_and_register(
                frames, modality="frames", scope=Scope(sku=sku, camera=camera or ANY),
                database_url=stack.database_url, model_dir=s.model_dir, target_far=target_far,
                calibration=calibration, calibration_fraction=calibration_fraction, fold_order=fold_order, seed=seed,
                progress=progress,
                detector_params=params, shadow=shadow,
            )
    meta = model.meta
    console.print(
        f"model {escape(ref.model_id)}@{ref.version}{_role(ref.shadow)}: patchcore on {meta['n_fit']} good frames, "
        "calibrated on "
        f"{meta['n_calibration']} out-of-sample scores ({model.calibrator.kind}), "
        f"bank {model.detector.memory_bank_.shape[0]}, "
        f"raw threshold {model.raw_threshold:.3g} at target_far {target_far:g}; saved to {escape(ref.artifact_path)}"
    )
    print_calibration_report(model.calibration_report)


def _role(shadow: bool) -> str:
    """What a freshly registered version is, after its id: nothing for a champion."""
    if not shadow:
        return ""
    return " (shadow: scores into shadow_scores, never routed; promote with `linewatch models promote`)"


# `train defects` lives in its own module (a classifier from labelled examples, not a model of normal).
train_app.command("defects")(train_defects_cmd)
