"""End-to-end signals benchmark: broker -> Faust worker -> features + detector -> COPY + publish.

Measured in one run, on the same pre-filled messages, on this machine:

1. ``bare_kafka_per_s``: confluent-kafka consuming the ``signals`` topic and decoding every
   envelope (header validation + float32 view), the floor of any Python consumer of windows;
2. ``bare_faust_per_s``: a Faust worker with the production settings doing nothing per batch
   (``python -m linewatch.benchmarks.bare_faust --topic signals``), same batch size as the agent;
3. ``windows_per_s`` / ``samples_per_s``: the real worker, from the first committed batch to the
   last ``signal_features`` row of the backlog (steady state, after the group join), with a
   trained ``dynamic_pca`` model scoring every snapshot's frame;
4. ``peak_rss_mb``: the worker's peak resident memory, sampled every 100 ms.

The backlog is what a condition-monitoring system sends: per machine and snapshot, a 1 s
vibration window at 10 kHz, a 1 s motor-current window at 2 kHz and a one-sample
temperature window at 1 Hz (so a third of the windows carry 83 % of the samples). A few
dozen snapshots per machine are simulated and replayed with shifted timestamps, so their event
ids are distinct and pre-filling stays cheap. Ratios against (1) and (2) are what to compare
across machines; absolute numbers are noisy. The model is trained on another simulated machine:
this measures throughput, not detection quality (``bench/bench_signal_quality.py`` does that).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console

from linewatch.config import Settings
from linewatch.embedded.process import spawn, stop, tail
from linewatch.embedded.stack import Stack
from linewatch.errors import InfrastructureError
from linewatch.schemas.codec import decode_signal
from linewatch.schemas.messages import SignalMeta
from linewatch.schemas.topics import SIGNALS
from linewatch.signals.training import as_signal_messages, train_signals_model
from linewatch.simulation.signals import simulate_signals
from linewatch.storage.migrations import migrate
from linewatch.streams.kafka import ensure_topics
from linewatch.streams.signals_agent import MAX_BATCH_WINDOWS
from linewatch.streams.signals_producer import produce_signals

MACHINES = 8
SNAPSHOT_S = 10.0
#: Distinct simulated snapshots per machine; the backlog replays them with shifted timestamps.
BASE_SNAPSHOTS = 32
#: Healthy history the benchmark's model is trained on (one machine, production rates).
TRAIN_HOURS = 1.0
TIMEOUT_S = 600.0
#: Rough single-worker rate used to turn a time budget into a window count before anything is measured.
PLANNING_RATE_PER_S = 1000
#: Fewer windows than this measure the group join more than the steady state.
MIN_WINDOWS = 3000


def planned_windows(seconds: float) -> int:
    """How many windows to pre-fill for a run of roughly ``seconds`` through the worker."""
    return max(MIN_WINDOWS, int(seconds * PLANNING_RATE_PER_S))


def run_signals_bench(settings: Settings, *, windows: int, console: Console,
                      worker_argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Pre-fill ``signals`` with ``windows`` windows and measure the three consumers (module docstring).

    ``worker_argv`` replaces ``python -m linewatch worker`` (e.g. a build of the worker under test).
    """
    snapshots = max(1, math.ceil(windows / (3 * MACHINES)))
    n = snapshots * MACHINES * 3
    batch = min(settings.batch_size, MAX_BATCH_WINDOWS)
    with tempfile.TemporaryDirectory(prefix="linewatch-bench-signals-") as tmp:
        bench_settings = settings.model_copy(update={"data_dir": Path(tmp)}) if settings.embedded_broker \
            else settings
        with Stack(bench_settings, fsync=True) as stack:
            ensure_topics(stack.bootstrap, partitions=settings.topic_partitions)
            migrate(stack.database_url)
            console.print(f"training dynamic_pca on {TRAIN_HOURS:g} h of healthy snapshots ...")
            healthy = simulate_signals(n_machines=1, duration_s=TRAIN_HOURS * 3600.0, snapshot_interval_s=SNAPSHOT_S,
                                       faults=[], seed=1)
            train_signals_model(healthy, database_url=stack.database_url, model_dir=Path(tmp) / "models",
                                detector="dynamic_pca", target_far=settings.target_far)
            run_id = uuid.uuid4().hex[:6]
            assets = tuple(f"bench-{run_id}-{i}" for i in range(MACHINES))
            console.print(f"pre-filling {n} windows ({snapshots} snapshots x {MACHINES} machines x 3 sensors) "
                          f"on {SIGNALS.name} ...")
            samples = produce_backlog(stack.bootstrap, assets, snapshots)

            console.print("bare confluent-kafka consume + decode ...")
            bare_kafka = _bare_kafka(stack.bootstrap, n)
            console.print("bare Faust consume (take_events, no work) ...")
            bare_faust = _bare_faust(stack.bootstrap, n, Path(tmp), batch)
            console.print("linewatch worker end to end ...")
            e2e = _end_to_end(bench_settings, stack, n, assets, Path(tmp), console, worker_argv)
    per_window = samples / n
    return {
        "modality": "signals",
        "windows": n,
        "samples": samples,
        "samples_per_window": round(per_window, 1),
        "windows_per_s": round(e2e["windows_per_s"], 1),
        "samples_per_s": round(e2e["windows_per_s"] * per_window, 1),
        "frames_scored": e2e["scores"],
        "bare_faust_per_s": round(bare_faust, 1),
        "bare_kafka_per_s": round(bare_kafka, 1),
        "ratio_vs_bare_faust": round(e2e["windows_per_s"] / bare_faust, 3),
        "ratio_vs_bare_kafka": round(e2e["windows_per_s"] / bare_kafka, 3),
        "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
        "batch_size": batch,
        "cpu_count": os.cpu_count(),
    }


def backlog(assets: Sequence[str], snapshots: int, *, seed: int = 2) -> Iterator[tuple[SignalMeta, np.ndarray]]:
    """Every machine's snapshots in time order; simulated ones replayed with shifted times beyond BASE_SNAPSHOTS."""
    base = min(snapshots, BASE_SNAPSHOTS)
    sim = simulate_signals(n_machines=len(assets), duration_s=base * SNAPSHOT_S, snapshot_interval_s=SNAPSHOT_S,
                           faults=[], seed=seed)
    names = dict(zip(sim.machines, assets, strict=True))
    messages = [(m.model_copy(update={"asset_id": names[m.asset_id]}), x) for m, x in as_signal_messages(sim)]
    for j in range(math.ceil(snapshots / base)):
        shift = timedelta(seconds=j * base * SNAPSHOT_S)
        for i, (meta, samples) in enumerate(messages):
            if j * base + i // (3 * len(assets)) >= snapshots:
                return
            yield (meta.model_copy(update={"start": meta.start + shift}) if j else meta), samples


def produce_backlog(bootstrap: str, assets: Sequence[str], snapshots: int) -> int:
    """Produce :func:`backlog`; returns the number of samples sent."""
    total = {"samples": 0}

    def counted() -> Iterator[tuple[SignalMeta, np.ndarray]]:
        for meta, samples in backlog(assets, snapshots):
            total["samples"] += meta.n_samples
            yield meta, samples

    produce_signals(bootstrap, counted())
    return total["samples"]


def _bare_kafka(bootstrap: str, n: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800})
    parts = consumer.list_topics(SIGNALS.name, timeout=10).topics[SIGNALS.name].partitions
    consumer.assign([TopicPartition(SIGNALS.name, p, OFFSET_BEGINNING) for p in parts])
    got, first, first_batch = 0, None, 0
    deadline = time.monotonic() + TIMEOUT_S
    while got < n and time.monotonic() < deadline:
        msgs = consumer.consume(MAX_BATCH_WINDOWS, 0.2)
        if not msgs:
            continue
        decoded = [decode_signal(m.value()) for m in msgs if m.error() is None]
        if first is None:
            first, first_batch = time.monotonic(), len(decoded)
        got += len(decoded)
    consumer.close()
    if got < n or first is None:
        raise InfrastructureError(f"bare consumer read only {got} of {n} messages")
    return (got - first_batch) / max(time.monotonic() - first, 1e-9)


def _bare_faust(bootstrap: str, n: int, tmp: Path, batch: int) -> float:
    out = tmp / "bare-faust.json"
    log = tmp / "bare-faust.log"
    proc = spawn([sys.executable, "-m", "linewatch.benchmarks.bare_faust", "--bootstrap", bootstrap,
                  "--topic", SIGNALS.name, "--n", str(n), "--batch", str(batch), "--out", str(out)], log_path=log)
    try:
        proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
    if not out.exists():
        raise InfrastructureError(f"the bare Faust consumer did not finish:\n{tail(log)}")
    return float(json.loads(out.read_text())["per_s"])


def _end_to_end(settings: Settings, stack: Stack, n: int, assets: tuple[str, ...], tmp: Path, console: Console,
                worker_argv: Sequence[str] | None) -> dict[str, float]:
    env = dict(os.environ)
    env.update({"LINEWATCH_BROKER_URL": stack.bootstrap, "LINEWATCH_DATABASE_URL": stack.database_url,
                "LINEWATCH_DATA_DIR": str(tmp), "LINEWATCH_APP_ID": f"bench-{uuid.uuid4().hex[:8]}",
                "LINEWATCH_BATCH_SIZE": str(settings.batch_size)})
    log = tmp / "worker.log"
    argv = list(worker_argv or [sys.executable, "-m", "linewatch", "worker", "--log-level", "warn"])
    worker = spawn(argv, log_path=log, env=env)
    peak = {"rss": 0.0}
    stop_sampling = threading.Event()

    def sample() -> None:
        p = psutil.Process(worker.pid)
        while not stop_sampling.is_set():
            try:
                peak["rss"] = max(peak["rss"], p.memory_info().rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            while True:
                done = conn.execute("SELECT count(*) FROM signal_features WHERE asset_id = ANY(%s)",
                                    (list(assets),)).fetchone()[0]
                if done >= n:
                    break
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise InfrastructureError(f"the worker stopped after {done}/{n} windows:\n{tail(log)}")
                time.sleep(0.2)
            # Steady state: from the commit of the first batch (rows of one transaction share xmin)
            # to the last row, so the group join and the first fetch are not counted.
            first_end, last_tx, in_first = conn.execute(
                """WITH s AS (SELECT written_at, xmin::text AS tx FROM signal_features WHERE asset_id = ANY(%s)),
                        f AS (SELECT tx FROM s ORDER BY written_at LIMIT 1)
                   SELECT max(written_at) FILTER (WHERE tx = (SELECT tx FROM f)), max(written_at),
                          count(*) FILTER (WHERE tx = (SELECT tx FROM f)) FROM s""",
                (list(assets),)).fetchone()
            scores = conn.execute("SELECT count(*) FROM scores WHERE asset_id = ANY(%s)", (list(assets),)
                                  ).fetchone()[0]
    finally:
        stop_sampling.set()
        stop(worker, timeout=30)
    if scores == 0:
        raise InfrastructureError(f"the worker stored windows but scored no frame; is the signals agent "
                                  f"registered in build_app?\n{tail(log)}")
    rate = (n - in_first) / max((last_tx - first_end).total_seconds(), 1e-9)
    stats_lines = [ln for ln in log.read_text(errors="replace").splitlines() if "signals: " in ln and "busy" in ln]
    if stats_lines:
        console.print("worker: " + stats_lines[-1].split("signals: ", 1)[1])
    return {"windows_per_s": rate, "peak_rss_mb": peak["rss"], "scores": scores}
