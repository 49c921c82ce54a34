"""The ``linewatch`` command line.

Every command reads the settings once (environment, ``--config`` file, defaults) and passes
them down. Commands that need a broker or a database start embedded ones when no URL is
configured, and stop them on exit, Ctrl-C or error.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from linewatch.config import Settings, load_settings
from linewatch.errors import ConfigError, InfrastructureError, LinewatchError

app = typer.Typer(
    name="linewatch",
    help="Streaming multimodal process monitoring for manufacturing lines.\n\n"
    "Start with `linewatch demo`: it runs the whole system on this machine with a simulated plant.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema: migrations for PostgreSQL and TimescaleDB.", no_args_is_help=True)
simulate_app = typer.Typer(help="Simulated plants with labelled faults.", no_args_is_help=True)
train_app = typer.Typer(help="Fit models on known-good data and register them as versions.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures (throughput, latency, limits).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(simulate_app, name="simulate")
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file (see `linewatch config`).")]


def _settings(config: Path | None, **overrides: object) -> Settings:
    return load_settings(config, **overrides)


@app.command("config")
def config_cmd(config: ConfigOption = None) -> None:
    """Print the effective configuration (secrets masked) and where each part runs."""
    s = _settings(config)
    table = Table(title="linewatch configuration", show_header=True)
    table.add_column("setting")
    table.add_column("value")
    for key, value in s.masked().items():
        table.add_row(key, "(embedded)" if value is None else str(value))
    Console().print(table)


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Apply pending SQL migrations (idempotent; records what ran in schema_migrations)."""
    from linewatch.embedded.stack import Stack
    from linewatch.storage.migrations import migrate

    s = _settings(config)
    with Stack(s, need_broker=False) as stack:
        result = migrate(stack.database_url)
    console.print(f"applied: {', '.join(result.applied) or 'nothing new'}")
    console.print(f"already applied: {len(result.already)}; database: "
                  f"{'TimescaleDB' if result.timescale else 'plain PostgreSQL (Timescale features off)'}")
    if result.changed:
        console.print(f"[yellow]changed after they ran (not re-applied): {', '.join(result.changed)}; "
                      "write a new migration instead of editing an applied one")


@app.command("worker")
def worker_cmd(
    config: ConfigOption = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warn, error or crit")] = None,
) -> None:
    """Run the Faust worker: consume input topics, score, persist and publish.

    Needs LINEWATCH_BROKER_URL and LINEWATCH_DATABASE_URL (or `linewatch up` running elsewhere);
    start several with the same app id to share partitions.
    """
    from linewatch.streams.worker import run_worker

    s = _settings(config)
    if s.embedded_broker or s.embedded_database:
        raise ConfigError(
            "the worker needs an existing broker and database: set LINEWATCH_BROKER_URL and "
            "LINEWATCH_DATABASE_URL (for a local pair, run `linewatch up` and copy what it prints)"
        )
    run_worker(s, bootstrap=s.broker_url.removeprefix("kafka://"),  # type: ignore[union-attr]
               database_url=s.database_url.get_secret_value(), loglevel=log_level)  # type: ignore[union-attr]


@app.command("up")
def up_cmd(config: ConfigOption = None) -> None:
    """Start the embedded broker and PostgreSQL, migrate, print their URLs and wait for Ctrl-C."""
    from linewatch.embedded.stack import Stack
    from linewatch.storage.migrations import migrate
    from linewatch.streams.kafka import ensure_topics

    s = _settings(config)
    with Stack(s) as stack:
        ensure_topics(stack.bootstrap, partitions=s.topic_partitions)
        migrate(stack.database_url)
        print(f"export LINEWATCH_BROKER_URL={stack.bootstrap}")
        print(f"export LINEWATCH_DATABASE_URL={stack.database_url}", flush=True)
        console.print("embedded services are up; Ctrl-C stops them")
        _wait_for_signal()


def _wait_for_signal() -> None:
    stopping = {"flag": False}

    def handler(*_: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, handler)
    try:
        while not stopping["flag"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


@simulate_app.command("spc")
def simulate_spc_cmd(
    config: ConfigOption = None,
    parts: Annotated[int, typer.Option(help="how many parts to produce")] = 10_000,
    fault_fraction: Annotated[float, typer.Option(help="share of parts inside fault episodes")] = 0.15,
    rate: Annotated[float | None, typer.Option(help="parts per second; default as fast as possible")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    csv: Annotated[Path | None, typer.Option(help="write parts with ground truth to this CSV instead")] = None,
) -> None:
    """Simulate a machining line (correlated characteristics, labelled faults) onto the `spc` topic.

    With --csv, write the parts and their ground-truth `fault` column to a file instead, e.g. to try
    `linewatch backtest csv`.
    """
    from linewatch.simulation.spc import simulate_spc

    sim = simulate_spc(n_parts=parts, seed=seed, fault_fraction=fault_fraction)
    if csv is not None:
        _write_sim_csv(sim, csv)
        console.print(f"wrote {len(sim)} parts to {csv} (label column: fault; 'none' = normal)")
        return
    from linewatch.embedded.stack import Stack
    from linewatch.streams.kafka import ensure_topics
    from linewatch.streams.producer import produce_spc

    s = _settings(config)
    if s.embedded_broker:
        raise ConfigError("set LINEWATCH_BROKER_URL to the broker to produce to (or use --csv)")
    with Stack(s, need_database=False) as stack:
        ensure_topics(stack.bootstrap, partitions=s.topic_partitions)
        from rich.progress import Progress

        with Progress(console=console) as progress:
            task = progress.add_task("producing parts", total=parts)
            n = produce_spc(stack.bootstrap, sim.records(), rate_per_s=rate,
                            progress=lambda k: progress.update(task, completed=k))
    console.print(f"produced {n} parts to {stack.bootstrap}")


def _write_sim_csv(sim, path: Path) -> None:
    import csv as csvlib

    with path.open("w", newline="") as f:
        w = csvlib.writer(f)
        w.writerow(["ts", "asset_id", "part_id", *sim.feature_names, "fault"])
        for i in range(len(sim)):
            w.writerow([str(sim.ts[i]) + "Z", sim.asset_id[i], sim.part_id[i],
                        *(f"{v:.6f}" for v in sim.X[i]), sim.fault[i]])


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
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Fit an SPC model on known-good parts, save it as a new version and make workers use it.

    Workers pick the new version up within LINEWATCH_MODEL_REFRESH_S seconds, without a restart;
    every score row records the version that produced it.
    """
    import numpy as np

    from linewatch.embedded.stack import Stack
    from linewatch.storage.migrations import migrate
    from linewatch.training import train_and_register

    s = _settings(config)
    wanted = columns.split(",") if columns else None
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        if source == "simulated":
            from linewatch.simulation.spc import simulate_spc

            sim = simulate_spc(n_parts=20_000, seed=seed, fault_fraction=0.0)
            X, names, times = sim.X, list(sim.feature_names), sim.ts
        elif source.startswith("sql:"):
            X, names, times = _read_query(stack.database_url, source[4:], wanted, time_column)
        else:
            X, names, times = _read_file(Path(source), wanted, sep, time_column, label_column)
        window = _training_window(times)
        bundle, ref = train_and_register(
            np.asarray(X), feature_names=names, database_url=stack.database_url, model_dir=s.model_dir,
            detector=detector, calibration=calibration, target_far=target_far or s.target_far, seed=seed,
            scope_asset=asset, scope_sku=sku, train_start=window[0], train_end=window[1],
        )
    console.print(f"model {ref.model_id}@{ref.version}: {bundle.detector_name} on {len(X)} rows x "
                  f"{len(names)} characteristics, threshold {bundle.threshold:.2f} (-log10 p), "
                  f"saved to {ref.artifact_path}")


def _read_file(path: Path, columns: list[str] | None, sep: str, time_column: str | None,
               label_column: str | None):
    """A CSV through the backtest's loader (one set of parsing rules), or a Parquet file."""
    if path.suffix.lower() == ".parquet":
        try:
            import pandas as pd
        except ImportError as e:
            raise ConfigError("reading Parquet needs pandas and pyarrow: pip install pandas pyarrow") from e
        if not path.exists():
            raise ConfigError(f"{path} does not exist")
        frame = pd.read_parquet(path)
        names = columns or [c for c in frame.columns if frame[c].dtype.kind in "fi" and c != label_column]
        times = frame[time_column].to_numpy(dtype="datetime64[us]") if time_column else None
        return frame[names].to_numpy(dtype=float), names, times
    from linewatch.backtest.tabular import load_csv

    data = load_csv(path, sep=sep, columns=columns, label_column=label_column, time_column=time_column,
                    label_optional=True)
    return data.X, data.feature_names, data.timestamps


def _read_query(url: str, query: str, columns: list[str] | None, time_column: str | None):
    import numpy as np
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            cur = conn.execute(query)  # the user's own query, run with their database credentials
            header = [d.name for d in cur.description or []]
            rows = cur.fetchall()
    except psycopg.Error as e:
        raise ConfigError(f"the training query failed: {e}") from e
    if not rows:
        raise ConfigError("the training query returned no rows; widen its time range or check its filters")
    numeric = [i for i, name in enumerate(header)
               if name != time_column and all(isinstance(r[i], int | float) for r in rows[:100])]
    names = columns or [header[i] for i in numeric]
    missing = [c for c in names if c not in header]
    if missing:
        raise ConfigError(f"columns {missing} are not in the query's result {header}")
    idx = [header.index(c) for c in names]
    X = np.array([[float(r[i]) for i in idx] for r in rows])
    times = None
    if time_column:
        if time_column not in header:
            raise ConfigError(f"time column {time_column!r} is not in the query's result {header}")
        t = header.index(time_column)
        times = np.array([r[t].replace(tzinfo=None) for r in rows], dtype="datetime64[us]")
    return X, names, times


def _training_window(times):
    """(start, end) of the training data as aware UTC datetimes, or (None, None) without times."""
    if times is None or len(times) == 0 or not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        return None, None
    from datetime import UTC

    lo, hi = (np.asarray(t).astype("datetime64[us]").item().replace(tzinfo=UTC) for t in (np.min(times), np.max(times)))
    return lo, hi


@train_app.command("signals")
def train_signals_cmd(
    config: ConfigOption = None,
    from_topic: Annotated[bool, typer.Option(
        "--from-topic", help="train on the windows now in the `signals` topic (known-good period)")] = False,
    simulated: Annotated[bool, typer.Option(help="train on simulated healthy machines instead")] = False,
    machines: Annotated[int, typer.Option(help="simulated machines (with --simulated)")] = 3,
    duration_s: Annotated[float, typer.Option(help="simulated seconds per machine (with --simulated)")] = 21600.0,
    detector: Annotated[str, typer.Option(help="dynamic_pca, autoencoder, online_residual, ...")] = "dynamic_pca",
    asset: Annotated[str, typer.Option(help="asset this model is for ('*' = any)")] = "*",
    target_far: Annotated[float | None, typer.Option(help="false alarms per normal frame, e.g. 0.001")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Fit a multi-sensor signals model on known-good windows and register it as a version.

    Frames are built exactly as the live agent builds them (same features, same time slots).
    """
    from linewatch.embedded.stack import Stack
    from linewatch.signals.training import train_signals_model
    from linewatch.storage.migrations import migrate

    if from_topic == simulated:
        raise ConfigError("choose exactly one source: --from-topic or --simulated")
    s = _settings(config)
    with Stack(s, need_broker=from_topic) as stack:
        migrate(stack.database_url)
        if simulated:
            from linewatch.simulation.signals import simulate_signals

            source = simulate_signals(n_machines=machines, duration_s=duration_s, faults=(), seed=seed)
        else:
            source = _read_signal_topic(stack.bootstrap)
        bundle, ref, frames = train_signals_model(
            source, database_url=stack.database_url, model_dir=s.model_dir, detector=detector,
            target_far=target_far or s.target_far, seed=seed, scope_asset=asset,
        )
    console.print(f"model {ref.model_id}@{ref.version}: {bundle.detector_name} on {len(frames.X)} frames x "
                  f"{len(bundle.feature_names)} features, saved to {ref.artifact_path}")


def _read_signal_topic(bootstrap: str) -> list:
    """Every decodable window in the `signals` topic up to its current end (bad ones are skipped)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from linewatch.errors import DataError
    from linewatch.schemas.codec import decode_signal
    from linewatch.schemas.topics import SIGNALS

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "linewatch-train", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(SIGNALS.name, timeout=10).topics[SIGNALS.name].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(SIGNALS.name, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(SIGNALS.name, p, OFFSET_BEGINNING) for p in parts])
        windows, skipped = [], 0
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            for msg in consumer.consume(1000, 5.0) or []:
                if msg.error() is not None:
                    continue
                if msg.offset() >= ends[msg.partition()] - 1:
                    pending.discard(msg.partition())
                try:
                    windows.append(decode_signal(msg.value()))
                except DataError:
                    skipped += 1
    finally:
        consumer.close()
    if not windows:
        raise ConfigError("the `signals` topic holds no decodable windows to train on")
    if skipped:
        console.print(f"[yellow]skipped {skipped} undecodable window(s)")
    return windows


@app.command("demo")
def demo_cmd(
    config: ConfigOption = None,
    seconds: Annotated[float, typer.Option(help="approximate run time, setup included")] = 60.0,
    rate: Annotated[float, typer.Option(help="simulated parts per second")] = 200.0,
    seed: Annotated[int, typer.Option()] = 7,
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary as JSON here")] = None,
) -> None:
    """Run everything on this machine: broker, PostgreSQL, worker and a simulated plant with faults.

    Ends with a table of what was detected per injected fault type, the false alarms on normal
    parts and the dead letters; leaves no process behind.
    """
    from linewatch.demo import run_demo, write_summary

    s = _settings(config)
    result = run_demo(s, seconds=seconds, rate=rate, seed=seed, console=console)
    if summary_json is not None:
        write_summary(result.summary, summary_json)
        console.print(f"summary written to {summary_json}")
    if not result.ok:
        console.print("[red]the demo did not complete as expected; see the table above and .linewatch/logs/")
        raise typer.Exit(1)


@bench_app.command("e2e")
def bench_e2e_cmd(
    config: ConfigOption = None,
    modality: Annotated[str, typer.Option(help="which input path to measure")] = "spc",
    seconds: Annotated[float, typer.Option(help="rough budget; sets how many records are pre-filled")] = 30.0,
    records: Annotated[int | None, typer.Option(help="exact number of records (overrides --seconds)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here as JSON")] = None,
) -> None:
    """End-to-end throughput and latency through broker, worker and database, next to the limits
    of bare confluent-kafka and bare Faust measured in the same run on the same messages."""
    from linewatch.benchmarks.e2e import run_bench_e2e

    s = _settings(config)
    if modality == "spc":
        figures = run_bench_e2e(s, seconds=seconds, records=records, console=console)
    elif modality == "signals":
        from linewatch.benchmarks.signals_e2e import planned_windows, run_signals_bench

        figures = run_signals_bench(s, windows=records or planned_windows(seconds), console=console)
    elif modality == "frames":
        from linewatch.benchmarks.frames_e2e import planned_frames, run_frames_bench

        figures = run_frames_bench(s, frames=records or planned_frames(seconds), size=256, console=console)
    else:
        raise ConfigError(f"unknown modality {modality!r}; use spc, signals or frames")
    print(json.dumps(figures, indent=2))
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2) + "\n")


from linewatch.backtest.cli import backtest_app  # noqa: E402 - mounted after the core commands
from linewatch.images.cli import backtest_images_cmd, simulate_frames_cmd, train_frames_cmd  # noqa: E402
from linewatch.streams.signals_cli import simulate_signals_cmd  # noqa: E402

app.add_typer(backtest_app, name="backtest")
simulate_app.command("signals")(simulate_signals_cmd)
simulate_app.command("frames")(simulate_frames_cmd)
train_app.command("frames")(train_frames_cmd)
backtest_app.command("images")(backtest_images_cmd)


def main() -> None:
    try:
        app()
    except (ConfigError, InfrastructureError) as e:
        console.print(f"[red]error:[/] {e}")
        sys.exit(2 if isinstance(e, ConfigError) else 3)
    except LinewatchError as e:
        console.print(f"[red]error:[/] {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted; embedded services stopped")
        sys.exit(130)
