"""End-to-end signals benchmark: broker -> Faust worker -> features + detector -> COPY + publish.

Measured in one run, on the same pre-filled messages, on this machine:

1. ``bare_kafka_per_s``: confluent-kafka consuming the ``signals`` topic and decoding every
   envelope (header validation + float32 view), the floor of any Python consumer of windows;
2. ``bare_faust_per_s``: a Faust worker with the production settings doing nothing per batch
   (``python -m linewatch.benchmarks.bare_faust --topic signals``), same batch size as the agent;
3. ``windows_per_s`` / ``samples_per_s``: the real worker, from the first committed batch to the
   last ``signal_features`` row of the backlog (steady state, after the group join), with a
   trained ``dynamic_pca`` model scoring every snapshot's frame (in the signals agent's scoring
   child process unless ``LINEWATCH_ISOLATE_SCORING=false``);
4. latency p50/p99: a second phase streams windows of other machines paced at half the measured
   window rate, each stamped as just completed when produced (start = now - its duration), and
   measures window end -> its ``signal_features`` row written;
5. ``peak_rss_mb``: the worker's peak resident memory, sampled every 100 ms; ``rss_drain_growth_mb``:
   its growth while the backlog (``backlog_s`` seconds of throughput) drained (flat: near zero).

The backlog is what a condition-monitoring system sends: per machine and snapshot, a 1 s
vibration window at 10 kHz, a 1 s motor-current window at 2 kHz and a one-sample
temperature window at 1 Hz (so a third of the windows carry 83 % of the samples). A few
dozen snapshots per machine are simulated and replayed with shifted timestamps, so their event
ids are distinct and pre-filling stays cheap. Ratios against (1) and (2) are what to compare
across machines; absolute numbers are noisy. The model is trained on another simulated machine:
this measures throughput, not detection quality (``linewatch bench signal-quality`` does that).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Message
from rich.console import Console

from linewatch.benchmarks import common
from linewatch.benchmarks.common import TIMEOUT_S, bench_stack, print_worker_stats, running_worker, wait_for_rows
from linewatch.config import Settings
from linewatch.embedded.process import tail
from linewatch.embedded.stack import Stack
from linewatch.errors import InfrastructureError
from linewatch.producers.signals import produce_signals
from linewatch.schemas.codec import decode_signal
from linewatch.schemas.messages import SignalMeta
from linewatch.schemas.topics import SIGNALS
from linewatch.signals.framing import training_frames
from linewatch.simulation.signals import simulate_signals
from linewatch.streams.signals_agent import MAX_BATCH_WINDOWS
from linewatch.training import train_and_register

MACHINES = 8
SNAPSHOT_S = 10.0
#: Distinct simulated snapshots per machine; the backlog replays them with shifted timestamps.
BASE_SNAPSHOTS = 32
#: Healthy history the benchmark's model is trained on (one machine, production rates).
TRAIN_HOURS = 1.0
#: Rough single-worker rate used to turn a time budget into a window count before anything is measured.
PLANNING_RATE_PER_S = 1000
#: Fewer windows than this measure the group join more than the steady state.
MIN_WINDOWS = 3000
LATENCY_PHASE_S = 10.0
#: Windows handed to the producer between pacing checks in the latency phase: one snapshot of 8 machines.
LATENCY_CHUNK = 3 * MACHINES


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
    with bench_stack(settings, "linewatch-bench-signals-") as (bench_settings, stack, tmp):
        console.print(f"training dynamic_pca on {TRAIN_HOURS:g} h of healthy snapshots ...")
        healthy = simulate_signals(n_machines=1, duration_s=TRAIN_HOURS * 3600.0, snapshot_interval_s=SNAPSHOT_S,
                                   faults=[], seed=1)
        frames = training_frames(healthy.signal_messages(known_good_only=True))
        train_and_register(frames.X, modality="signals", **frames.provenance(), database_url=stack.database_url,
                           model_dir=tmp / "models", detector="dynamic_pca", target_far=settings.target_far)
        run_id = uuid.uuid4().hex[:6]
        assets = tuple(f"bench-{run_id}-{i}" for i in range(MACHINES))
        console.print(f"pre-filling {n} windows ({snapshots} snapshots x {MACHINES} machines x 3 sensors) "
                      f"on {SIGNALS.name} ...")
        samples = produce_backlog(stack.bootstrap, assets, snapshots, security=stack.kafka_security)

        console.print("bare confluent-kafka consume + decode ...")
        bare_kafka = common.bare_kafka(stack.bootstrap, SIGNALS.name, n, decode=_decode_signals,
                                       max_messages=MAX_BATCH_WINDOWS, poll_s=0.2, security=stack.kafka_security)
        console.print("bare Faust consume (take_events, no work) ...")
        bare_faust = common.bare_faust(stack.bootstrap, SIGNALS.name, n, tmp, batch,
                                       kafka_env=bench_settings.kafka_env())
        console.print("linewatch worker end to end ...")
        e2e = _end_to_end(bench_settings, stack, n, assets, tmp, console, worker_argv)
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
        "latency_p50_s": round(e2e["latency_p50_s"], 4),
        "latency_p99_s": round(e2e["latency_p99_s"], 4),
        "latency_rate_per_s": round(e2e["latency_rate"], 1),
        "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
        **e2e["drain"],
        "batch_size": batch,
        "cpu_count": os.cpu_count(),
    }


def backlog(assets: Sequence[str], snapshots: int, *, seed: int = 2) -> Iterator[tuple[SignalMeta, np.ndarray]]:
    """Every machine's snapshots in time order; simulated ones replayed with shifted times beyond BASE_SNAPSHOTS."""
    base = min(snapshots, BASE_SNAPSHOTS)
    sim = simulate_signals(n_machines=len(assets), duration_s=base * SNAPSHOT_S, snapshot_interval_s=SNAPSHOT_S,
                           faults=[], seed=seed)
    names = dict(zip(sim.machines, assets, strict=True))
    messages = [(m.model_copy(update={"asset_id": names[m.asset_id]}), x) for m, x in sim.signal_messages()]
    for j in range(math.ceil(snapshots / base)):
        shift = timedelta(seconds=j * base * SNAPSHOT_S)
        for i, (meta, samples) in enumerate(messages):
            if j * base + i // (3 * len(assets)) >= snapshots:
                return
            yield (meta.model_copy(update={"start": meta.start + shift}) if j else meta), samples


def produce_backlog(bootstrap: str, assets: Sequence[str], snapshots: int, *,
                    security: Mapping[str, str] | None = None) -> int:
    """Produce :func:`backlog` (``security``: the broker's TLS/SASL configuration); returns the samples sent."""
    total = {"samples": 0}

    def counted() -> Iterator[tuple[SignalMeta, np.ndarray]]:
        for meta, samples in backlog(assets, snapshots):
            total["samples"] += meta.n_samples
            yield meta, samples

    produce_signals(bootstrap, counted(), security=security)
    return total["samples"]


def _decode_signals(msgs: list[Message]) -> int:
    return len([decode_signal(m.value()) for m in msgs if m.error() is None])


def _end_to_end(settings: Settings, stack: Stack, n: int, assets: tuple[str, ...], tmp: Path, console: Console,
                worker_argv: Sequence[str] | None) -> dict[str, float]:
    with running_worker(settings, stack, tmp, worker_argv) as worker:
        deadline = time.monotonic() + TIMEOUT_S
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            drain = wait_for_rows(conn, "SELECT count(*) FROM signal_features WHERE asset_id = ANY(%s)",
                                  (list(assets),), n, worker=worker, deadline=deadline, what="windows")
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
            if scores == 0:
                raise InfrastructureError(f"the worker stored windows but scored no frame; is the signals agent "
                                          f"registered in build_app?\n{tail(worker.log)}")
            rate = common.steady_rate(n - in_first, (last_tx - first_end).total_seconds(), n=n, what="windows")
            drained = common.drain_figures(stack, worker, drain, n=n, rate=rate)
            lat = _latency_phase(conn, stack, rate / 2, worker=worker, deadline=deadline, console=console)
    print_worker_stats(console, worker.log, "signals: ")
    return {"windows_per_s": rate, "peak_rss_mb": worker.peak_rss_mb, "scores": scores,
            "latency_p50_s": float(np.percentile(lat, 50)), "latency_p99_s": float(np.percentile(lat, 99)),
            "latency_rate": rate / 2, "drain": drained}


def _latency_phase(conn: psycopg.Connection, stack: Stack, rate: float, *, worker: common.WorkerRun,
                   deadline: float, console: Console) -> np.ndarray:
    """Stream ``rate`` windows/s of fresh machines for LATENCY_PHASE_S; seconds from window end to row written."""
    run_id = uuid.uuid4().hex[:6]
    assets = tuple(f"latency-{run_id}-{i}" for i in range(MACHINES))
    snapshots = max(1, math.ceil(rate * LATENCY_PHASE_S / (3 * MACHINES)))
    m = snapshots * MACHINES * 3
    console.print(f"latency phase: {LATENCY_PHASE_S:.0f} s at {rate:.0f} windows/s ...")

    def completed_now() -> Iterator[tuple[SignalMeta, np.ndarray]]:
        for meta, samples in backlog(assets, snapshots, seed=3):
            duration = timedelta(seconds=meta.n_samples / meta.sample_rate_hz)
            yield meta.model_copy(update={"start": datetime.now(UTC) - duration}), samples

    produce_signals(stack.bootstrap, completed_now(), rate_per_s=rate, chunk=LATENCY_CHUNK,
                    security=stack.kafka_security)
    wait_for_rows(conn, "SELECT count(*) FROM signal_features WHERE asset_id = ANY(%s)", (list(assets),), m,
                  worker=worker, deadline=deadline, what="latency-phase windows")
    return np.array([r[0] for r in conn.execute(
        "SELECT extract(epoch FROM written_at - ts) - n_samples / sample_rate_hz FROM signal_features "
        "WHERE asset_id = ANY(%s)", (list(assets),))], dtype=float)
