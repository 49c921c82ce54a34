"""``linewatch simulate``: simulated plants with labelled faults, onto their topics or into files.

Each command either streams to the broker as the plant's gateways would (through
:mod:`linewatch.producers`; needs LINEWATCH_BROKER_URL) or, with ``--csv`` / ``--out``, writes
the same simulation with its ground truth for the backtest and training commands::

    linewatch simulate spc --parts 20000 --fault-fraction 0 --csv train.csv
    linewatch simulate signals --machines 1 --healthy --duration-s 21600 --interval-s 60 --csv train.csv
    linewatch simulate signals --machines 1 --seed 1 --duration-s 21600 --interval-s 60 --csv test.csv
    linewatch backtest csv --train train.csv --test test.csv --label-column fault \\
        --time-column ts --modality signals --window 1 --stride 1   # a row is already a window's features
    linewatch simulate frames --sku bracket-a --out bracket-data
    linewatch simulate frames --sku bracket-a --camera cam-1 --frames 500 --rate 20   # onto the topic
    linewatch simulate plant --duration-s 3600 --speed 60   # every input topic: parts, frames, signals, states
    linewatch simulate plant --csv-dir plant-run            # the same plant as files with its ground truth
"""

from __future__ import annotations

import csv as csvlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from linewatch.cli.common import ConfigOption, console, counting_progress, settings
from linewatch.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from linewatch.embedded.stack import Stack

if TYPE_CHECKING:
    from linewatch.simulation.plant import PlantSimulation
    from linewatch.simulation.signals import SignalSimulation
    from linewatch.simulation.spc import SpcSimulation

simulate_app = typer.Typer(help="Simulated plants with labelled faults.", no_args_is_help=True)



@contextmanager
def _broker(config: ConfigOption, otherwise: str) -> Iterator[Stack]:
    """The configured broker with linewatch's topics, for a simulation to stream to (``otherwise``: the file option)."""
    from linewatch.embedded.stack import Stack
    from linewatch.kafka import ensure_topics

    s = settings(config)
    if s.embedded_broker:
        raise ConfigError(f"set LINEWATCH_BROKER_URL to the broker to produce to (or {otherwise})")
    with Stack(s, need_database=False) as stack:
        ensure_topics(stack.bootstrap, partitions=s.topic_partitions, security=stack.kafka_security)
        yield stack

@simulate_app.command("spc")
def simulate_spc_cmd(
    config: ConfigOption = None,
    parts: Annotated[int, typer.Option(help="how many parts to produce")] = 10_000,
    fault_fraction: Annotated[float, typer.Option(help="share of parts inside fault episodes")] = 0.15,
    rate: Annotated[float | None, typer.Option(help="parts per second; default as fast as possible")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    autocorrelation: Annotated[float, typer.Option(
        help="lag-1 correlation of consecutive parts of an asset, e.g. 0.6 (0 = independent parts)")] = 0.0,
    regime_shift: Annotated[float, typer.Option(
        help="normal lots this many sigmas apart that assets switch between, e.g. 1.0 (0 = one regime)")] = 0.0,
    csv: Annotated[Path | None, typer.Option(help="write parts with ground truth to this CSV instead")] = None,
    records_per_message: Annotated[int, typer.Option(
        min=1, help="parts per spc message: above 1, each asset's parts go out as JSON arrays of up to this many, "
                    "as a batching gateway sends them (1 = one record per message)")] = 1,
) -> None:
    """Simulate a machining line (correlated characteristics, labelled faults) onto the `spc` topic.

    --autocorrelation and --regime-shift make normal behaviour plant-like (carry-over between parts,
    lots), which is what a false-alarm rate must survive. --records-per-message 100 sends batched
    messages (docs/message-formats.md); the worker scores their records as if each came alone. With
    --csv, write the parts, their `lot` and the ground-truth `fault` column to a file instead, e.g. to
    try `linewatch backtest csv`.
    """
    from linewatch.simulation.spc import simulate_spc

    sim = simulate_spc(n_parts=parts, seed=seed, fault_fraction=fault_fraction, autocorrelation=autocorrelation,
                       regime_shift_sigma=regime_shift)
    if csv is not None:
        write_spc_csv(sim, csv)
        console.print(f"wrote {len(sim)} parts to {csv} (label column: fault; 'none' = normal)")
        return
    from linewatch.producers.spc import produce_spc

    with _broker(config, "use --csv") as stack, counting_progress("producing parts", parts) as progress:
        n = produce_spc(stack.bootstrap, sim.records(), rate_per_s=rate, progress=progress,
                        security=stack.kafka_security, records_per_message=records_per_message)
    console.print(f"produced {n} parts to {stack.bootstrap}")


def write_spc_csv(sim: SpcSimulation, path: Path) -> None:
    """``ts``, ``asset_id``, ``part_id``, ``lot``, one column per characteristic and the ground-truth ``fault``.

    ``lot`` is text (``L0``, ``L1``, ...) so a backtest reads it as context, never as a feature.
    """
    import numpy as np

    lots = np.zeros(len(sim), dtype=np.int64) if sim.lot is None else sim.lot
    with path.open("w", newline="") as f:
        w = csvlib.writer(f)
        w.writerow(["ts", "asset_id", "part_id", "lot", *sim.feature_names, "fault"])
        for i in range(len(sim)):
            w.writerow([str(sim.ts[i]) + "Z", sim.asset_id[i], sim.part_id[i], f"L{lots[i]}",
                        *(f"{v:.6f}" for v in sim.X[i]), sim.fault[i]])


@simulate_app.command("signals")
def simulate_signals_cmd(
    config: ConfigOption = None,
    machines: Annotated[int, typer.Option(help="how many machines (assets) to simulate")] = 3,
    duration_s: Annotated[float, typer.Option(help="simulated time span, seconds")] = 3600.0,
    interval_s: Annotated[float, typer.Option(help="seconds between two snapshots of a machine")] = 10.0,
    rate: Annotated[float | None, typer.Option(help="windows per second; default as fast as possible")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    healthy: Annotated[bool, typer.Option(help="no faults: known-good data to train on")] = False,
    csv: Annotated[
        Path | None, typer.Option(help="write one feature row per snapshot with a `fault` label column to this CSV "
                                       "(one file per machine when --machines > 1) instead of producing")
    ] = None,
) -> None:
    """Simulate rotating machines (vibration 10 kHz, motor current 2 kHz, temperature 1 Hz) with growing,
    labelled faults (bearing races, imbalance, looseness, overheating) onto the `signals` topic.

    Each machine gets one fault starting mid-run unless --healthy. With --csv, write the snapshots as an
    ordered multivariate CSV instead (the features the live signals models use, plus `fault`: the fault
    kind or `none`) for `linewatch backtest csv --modality signals`.
    """
    from linewatch.simulation.signals import simulate_signals

    if machines < 1 or duration_s <= 0 or interval_s <= 0:
        raise ConfigError("--machines, --duration-s and --interval-s must be positive")
    sim = simulate_signals(n_machines=machines, duration_s=duration_s, snapshot_interval_s=interval_s,
                           faults=[] if healthy else None, seed=seed)
    if csv is not None:
        for path, n_rows in write_signals_csv(sim, csv):
            console.print(f"wrote {n_rows} snapshots to {path} (label column: fault; 'none' = normal)")
        return
    from linewatch.producers.signals import produce_signals

    total = sim.starts.size * machines * 3
    with _broker(config, "use --csv") as stack, counting_progress("producing windows", total) as progress:
        n = produce_signals(stack.bootstrap, sim.sensor_windows(), rate_per_s=rate, progress=progress,
                            security=stack.kafka_security)
    faults = ", ".join(f"{sim.machines[f.machine]}: {f.kind} from {f.onset_s:.0f} s" for f in sim.faults) or "none"
    console.print(f"produced {n} windows of {machines} machine(s) to {stack.bootstrap}; faults: {faults}")


def write_signals_csv(sim: SignalSimulation, path: Path) -> list[tuple[Path, int]]:
    """One CSV per machine: ``ts``, ``asset_id``, the default model features, ``fault``; returns (path, rows).

    The rows are the frames the live pipeline would score (:func:`~linewatch.signals.framing.training_frames`
    with every frame kept and no column dropped, so a healthy train file and a faulty test file have the
    same columns). One file per machine because the signals backtest replays one series per file.
    """
    import numpy as np

    from linewatch.signals.framing import training_frames

    messages = sim.signal_messages()
    frames = training_frames(messages, drop_constant=False, include_flagged=True)
    starts = np.round(sim.starts).astype(np.int64)
    written = []
    for m, machine in enumerate(sim.machines):
        target = path if len(sim.machines) == 1 else path.with_name(f"{path.stem}-{machine}{path.suffix}")
        rows = [i for i, a in enumerate(frames.assets) if a == machine]
        with target.open("w", newline="") as f:
            w = csvlib.writer(f)
            w.writerow(["ts", "asset_id", *frames.feature_names, "fault"])
            for i in rows:
                ts = frames.ts[i]
                snap = int(np.searchsorted(starts, round(ts.timestamp())))
                kind = str(sim.fault_kind[m, snap]) if sim.labels[m, snap] else "none"
                w.writerow([ts.isoformat().replace("+00:00", "Z"), machine,
                            *(f"{v:.6g}" for v in frames.X[i]), kind])
        written.append((target, len(rows)))
    return written


@simulate_app.command("frames")
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
    from linewatch.producers.frames import produce_frames, simulated_camera

    labels: list[str] = []
    stream = simulated_camera(sku, asset_id=asset, camera=camera, n=frames, size=size, seed=seed,
                              defect_rate=defect_rate, labels=labels)
    with (_broker(config, "write a dataset with --out DIR") as stack,
          counting_progress("producing frames", frames) as progress):
        n = produce_frames(stack.bootstrap, stream, encoding=encoding, rate_per_s=rate, progress=progress,
                           security=stack.kafka_security)
    defective = sum(label != "good" for label in labels)
    console.print(f"produced {n} {encoding} frames of {sku} ({defective} defective) from {asset}/{camera} "
                  f"to {stack.bootstrap}")


@simulate_app.command("recordings")
def simulate_recordings_cmd(
    out: Annotated[Path, typer.Option(help="write the recordings folder (train/good, test/<condition>) here")],
    fmt: Annotated[str, typer.Option("--format", help="npy, wav or csv")] = "npy",
    conditions: Annotated[str, typer.Option(help="comma-separated faults: outer_race, inner_race, imbalance, "
                                            "looseness")] = "outer_race,inner_race",
    n_train: Annotated[int, typer.Option(help="good training recordings")] = 60,
    n_test_good: Annotated[int, typer.Option(help="good test recordings")] = 30,
    n_test_per_condition: Annotated[int, typer.Option(help="test recordings per fault")] = 10,
    seconds: Annotated[float, typer.Option(help="seconds per recording")] = 8.0,
    rate: Annotated[float, typer.Option(help="samples per second")] = 10_000.0,
    severity: Annotated[float, typer.Option(help="fault severity (0-10; 1 = full grown)")] = 0.3,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write waveform recordings of a simulated machine (vibration + current) for `linewatch backtest signals`.

    Then: linewatch backtest signals --data OUT --sample-rate RATE [--speed-hz 24.75].
    """
    from linewatch.simulation.signals import write_recording_dataset

    summary = write_recording_dataset(
        out, n_train=n_train, n_test_good=n_test_good, conditions=[c.strip() for c in conditions.split(",") if c],
        n_test_per_condition=n_test_per_condition, seconds=seconds, rate=rate, severity=severity, fmt=fmt,
        seed=seed,
    )
    console.print(f"wrote {sum(summary['counts'].values())} recordings to {escape(str(out))} "
                  f"({summary['counts']}); shaft speed {summary['shaft_hz']} Hz")


@simulate_app.command("plant")
def simulate_plant_cmd(
    config: ConfigOption = None,
    duration_s: Annotated[float, typer.Option(help="plant seconds to simulate")] = 3600.0,
    speed: Annotated[float, typer.Option(help="plant seconds per wall second when producing (60 = an hour a minute)"
                                         )] = 60.0,
    frame_size: Annotated[int, typer.Option(help="camera frame side in pixels")] = 128,
    seed: Annotated[int, typer.Option()] = 0,
    healthy: Annotated[bool, typer.Option(help="no faults and no idle period: known-good data")] = False,
    csv_dir: Annotated[Path | None, typer.Option(
        "--csv-dir", help="write spc.csv (with a `fault` column), frames/*.png, machine_states.csv and "
        "episodes.json to this folder instead of producing")] = None,
    records_per_message: Annotated[int, typer.Option(
        min=1, help="parts per spc message: above 1, each asset's parts go out as JSON arrays of up to this many "
                    "(sent when full, at the last part's time)")] = 1,
) -> None:
    """Simulate the multimodal plant (3 cells: parts measured and photographed under one part id, spindle
    vibration/current/temperature, machine states) with the demo's faults, onto every input topic.

    The default schedule has one bearing fault (vibration, then the parts' runout), one tool wear
    (dimensions and scratched surfaces) and one camera-only cosmetic defect, plus an idle period.
    Messages go out in event-time order at --speed, stamped so the run ends now.
    """
    from datetime import UTC, datetime, timedelta

    from linewatch.simulation.plant import PlantConfig, simulate_plant

    if duration_s <= 0 or speed <= 0:
        raise ConfigError("--duration-s and --speed must be positive")
    cfg = PlantConfig(duration_s=duration_s, frame_size=frame_size, seed=seed)
    start = datetime.now(UTC) - timedelta(seconds=duration_s)
    sim = simulate_plant(cfg, faults=[] if healthy else None, idle=[] if healthy else None,
                         start=start if csv_dir is None else datetime(2026, 1, 5, 6, tzinfo=UTC))
    if csv_dir is not None:
        write_plant_dir(sim, csv_dir)
        console.print(f"wrote {len(sim.parts.t)} parts and {len(sim.episodes)} fault episode(s) to {csv_dir}")
        return
    from linewatch.producers.plant import produce_plant

    with _broker(config, "use --csv-dir") as stack:
        console.print(f"streaming {duration_s:g} plant seconds at {speed:g}x ({duration_s / speed:.0f} s) ...")
        counts = produce_plant(stack.bootstrap, sim, speed=speed, security=stack.kafka_security,
                               spc_records_per_message=records_per_message)
    console.print("produced " + ", ".join(f"{n} to {t}" for t, n in sorted(counts.items())))


def write_plant_dir(sim: PlantSimulation, root: Path) -> None:
    """The plant's parts, images, machine states and episodes as plain files (see ``simulate plant --help``)."""
    import json

    from PIL import Image

    from linewatch.simulation.plant import FEATURES

    (root / "frames").mkdir(parents=True, exist_ok=True)
    kind_of = {k: ep.kind for k, ep in enumerate(sim.episodes)}
    with (root / "spc.csv").open("w", newline="") as f:
        w = csvlib.writer(f)
        w.writerow(["ts", "asset_id", "part_id", *FEATURES, "fault"])
        for rec in sim.spc_records():
            w.writerow([rec.ts.isoformat(), rec.asset_id, rec.part_id, *(f"{rec.values[c]:.6f}" for c in FEATURES),
                        kind_of.get(sim.truth.get(rec.event_id, -1), "none")])
    for frame in sim.camera_frames():
        Image.fromarray(frame.image).save(root / "frames" / f"{frame.part_id}.png", compress_level=1)
    with (root / "machine_states.csv").open("w", newline="") as f:
        w = csvlib.writer(f)
        w.writerow(["ts", "asset_id", "state", "reason"])
        for m in sim.machine_states():
            w.writerow([m.ts.isoformat(), m.asset_id, m.state, m.reason])
    episodes = [{"asset_id": ep.asset_id, "kind": ep.kind, "start": ep.start.isoformat(), "end": ep.end.isoformat(),
                 "modalities": list(ep.modalities), "culprits": {k: list(v) for k, v in ep.culprits.items()},
                 "onsets": {k: v.isoformat() for k, v in ep.onsets.items()}} for ep in sim.episodes]
    (root / "episodes.json").write_text(json.dumps(episodes, indent=2) + "\n")
