"""``linewatch simulate signals``: simulated rotating machines onto the ``signals`` topic, or into CSV files.

The lead mounts :func:`simulate_signals_cmd` on the ``simulate`` group of the main CLI. It
lives here, not in ``linewatch/cli.py``, so the signals path can grow its commands without
touching the core CLI; it reads the settings itself (once, at the entry point), exactly like
the core commands do.

Examples::

    linewatch simulate signals --machines 3 --duration-s 3600 --rate 30        # to the broker, paced
    linewatch simulate signals --machines 1 --healthy --duration-s 21600 --interval-s 60 --csv train.csv
    linewatch simulate signals --machines 1 --seed 1 --duration-s 21600 --interval-s 60 --csv test.csv
    linewatch backtest csv --train train.csv --test test.csv --label-column fault \\
        --time-column ts --modality signals --window 1 --stride 1   # a row is already a window's features
"""

from __future__ import annotations

import csv as csvlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from linewatch.config import load_settings
from linewatch.errors import ConfigError

if TYPE_CHECKING:
    from linewatch.simulation.signals import SignalSimulation

console = Console(stderr=True)


def simulate_signals_cmd(
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file (see `linewatch config`).")]
    = None,
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
    from linewatch.embedded.stack import Stack
    from linewatch.streams.kafka import ensure_topics
    from linewatch.streams.signals_producer import produce_signals

    s = load_settings(config)
    if s.embedded_broker:
        raise ConfigError("set LINEWATCH_BROKER_URL to the broker to produce to (or use --csv)")
    total = sim.starts.size * machines * 3
    with Stack(s, need_database=False) as stack:
        ensure_topics(stack.bootstrap, partitions=s.topic_partitions)
        from rich.progress import Progress

        with Progress(console=console) as progress:
            task = progress.add_task("producing windows", total=total)
            n = produce_signals(stack.bootstrap, sim.sensor_windows(), rate_per_s=rate,
                                progress=lambda k: progress.update(task, completed=k))
    faults = ", ".join(f"{sim.machines[f.machine]}: {f.kind} from {f.onset_s:.0f} s" for f in sim.faults) or "none"
    console.print(f"produced {n} windows of {machines} machine(s) to {stack.bootstrap}; faults: {faults}")


def write_signals_csv(sim: SignalSimulation, path: Path) -> list[tuple[Path, int]]:
    """One CSV per machine: ``ts``, ``asset_id``, the default model features, ``fault``; returns (path, rows).

    The rows are the frames the live pipeline would score (:func:`~linewatch.signals.training.training_frames`
    with every frame kept and no column dropped, so a healthy train file and a faulty test file have the
    same columns). One file per machine because the signals backtest replays one series per file.
    """
    import numpy as np

    from linewatch.signals.training import as_signal_messages, training_frames

    messages = as_signal_messages(sim)
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
