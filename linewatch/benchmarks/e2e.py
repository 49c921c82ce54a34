"""End-to-end SPC benchmark: broker -> Faust worker -> detector -> COPY + publish, with its limits.

Measured in one run, on the same pre-filled messages, on this machine:

1. ``bare_kafka_per_s``: confluent-kafka consuming the topic and decoding every message into
   an ``SpcRecord`` (the floor of any Python consumer that validates its input);
2. ``bare_faust_per_s``: a Faust worker with the production settings doing nothing per batch;
3. ``records_per_s``: the real worker, from the first committed batch to the last row of the
   pre-filled backlog (steady state, after the group join);
4. latency p50/p99: a second phase streams records paced at half the measured throughput and
   measures record time (set when produced) -> the row's commit transaction in PostgreSQL;
5. ``peak_rss_mb``: the worker's peak resident memory, sampled.

Ratios against (1) and (2) are what to compare across machines; absolute numbers are noisy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
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
from linewatch.schemas.codec import decode_batch
from linewatch.schemas.messages import SpcRecord
from linewatch.schemas.topics import SPC
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.migrations import migrate
from linewatch.streams.kafka import ensure_topics
from linewatch.streams.producer import produce_spc
from linewatch.streams.spc_agent import READY_MESSAGE
from linewatch.training import train_and_register

#: Rough single-worker rate used to turn --seconds into a record count before anything is measured.
PLANNING_RATE_PER_S = 4000
LATENCY_PHASE_S = 10.0
TIMEOUT_S = 600.0


def run_bench_e2e(settings: Settings, *, seconds: float, records: int | None, console: Console) -> dict[str, Any]:
    n = records or max(10_000, int(seconds * PLANNING_RATE_PER_S))
    with tempfile.TemporaryDirectory(prefix="linewatch-bench-") as tmp:
        bench_settings = settings.model_copy(update={"data_dir": Path(tmp)}) if settings.embedded_broker \
            else settings
        with Stack(bench_settings, fsync=True) as stack:
            ensure_topics(stack.bootstrap, partitions=settings.topic_partitions)
            migrate(stack.database_url)
            normal = simulate_spc(n_parts=20_000, seed=1, fault_fraction=0.0)
            train_and_register(normal.X, feature_names=normal.feature_names, database_url=stack.database_url,
                               model_dir=Path(tmp) / "models", target_far=settings.target_far)
            run_id = uuid.uuid4().hex[:6]
            assets = tuple(f"bench-{run_id}-{i}" for i in range(8))
            console.print(f"pre-filling {n} records on {SPC.name} ...")
            sim = simulate_spc(n_parts=n, seed=2, fault_fraction=0.1, assets=assets)
            produce_spc(stack.bootstrap, sim.records(), chunk=5000)

            console.print("bare confluent-kafka consume + decode ...")
            bare_kafka = _bare_kafka(stack.bootstrap, n)
            console.print("bare Faust consume (take_events, no work) ...")
            bare_faust = _bare_faust(stack.bootstrap, n, Path(tmp), settings.batch_size)
            console.print("linewatch worker end to end ...")
            e2e = _end_to_end(bench_settings, stack, n, assets, Path(tmp), console)
    figures = {
        "modality": "spc",
        "records": n,
        "records_per_s": round(e2e["records_per_s"], 1),
        "bare_faust_per_s": round(bare_faust, 1),
        "bare_kafka_per_s": round(bare_kafka, 1),
        "ratio_vs_bare_faust": round(e2e["records_per_s"] / bare_faust, 3),
        "ratio_vs_bare_kafka": round(e2e["records_per_s"] / bare_kafka, 3),
        "latency_p50_s": round(e2e["latency_p50_s"], 4),
        "latency_p99_s": round(e2e["latency_p99_s"], 4),
        "latency_rate_per_s": round(e2e["latency_rate"], 1),
        "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
        "batch_size": settings.batch_size,
        "cpu_count": os.cpu_count(),
    }
    return figures


def _bare_kafka(bootstrap: str, n: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800})
    parts = consumer.list_topics(SPC.name, timeout=10).topics[SPC.name].partitions
    consumer.assign([TopicPartition(SPC.name, p, OFFSET_BEGINNING) for p in parts])
    got, first, first_batch = 0, None, 0
    deadline = time.monotonic() + TIMEOUT_S
    while got < n and time.monotonic() < deadline:
        msgs = consumer.consume(5000, 1.0)
        if not msgs:
            continue
        decoded = decode_batch([m.value() for m in msgs if m.error() is None], SpcRecord)
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
    proc = spawn([sys.executable, "-m", "linewatch.benchmarks.bare_faust", "--bootstrap", bootstrap, "--n", str(n),
                  "--batch", str(batch), "--out", str(out)], log_path=log)
    try:
        proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
    if not out.exists():
        raise InfrastructureError(f"the bare Faust consumer did not finish:\n{tail(log)}")
    return float(json.loads(out.read_text())["per_s"])


def _end_to_end(settings: Settings, stack: Stack, n: int, assets: tuple[str, ...], tmp: Path,
                console: Console) -> dict[str, float]:
    env = dict(os.environ)
    env.update({"LINEWATCH_BROKER_URL": stack.bootstrap, "LINEWATCH_DATABASE_URL": stack.database_url,
                "LINEWATCH_DATA_DIR": str(tmp), "LINEWATCH_APP_ID": f"bench-{uuid.uuid4().hex[:8]}",
                "LINEWATCH_BATCH_SIZE": str(settings.batch_size)})
    log = tmp / "worker.log"
    worker = spawn([sys.executable, "-m", "linewatch", "worker", "--log-level", "warn"], log_path=log, env=env)
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
                done = conn.execute("SELECT count(*) FROM scores WHERE asset_id = ANY(%s)", (list(assets),)
                                    ).fetchone()[0]
                if done >= n:
                    break
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise InfrastructureError(f"the worker stopped after {done}/{n} records:\n{tail(log)}")
                time.sleep(0.2)
            first_tx, last_tx, in_first = conn.execute(
                """WITH s AS (SELECT written_at FROM scores WHERE asset_id = ANY(%s))
                   SELECT min(written_at), max(written_at),
                          count(*) FILTER (WHERE written_at = (SELECT min(written_at) FROM s)) FROM s""",
                (list(assets),)).fetchone()
            rate = (n - in_first) / max((last_tx - first_tx).total_seconds(), 1e-9)
            if READY_MESSAGE not in log.read_text(errors="replace"):
                raise InfrastructureError("worker finished without logging readiness; see its log")

            console.print(f"latency phase: {LATENCY_PHASE_S:.0f} s at {rate / 2:.0f} records/s ...")
            lat_asset = f"latency-{uuid.uuid4().hex[:6]}"
            lat_rate = rate / 2
            m = int(lat_rate * LATENCY_PHASE_S)
            sim = simulate_spc(n_parts=m, seed=3, fault_fraction=0.0, assets=(lat_asset,))
            produce_spc(stack.bootstrap, _stamped_now(sim.records()), rate_per_s=lat_rate, chunk=50)
            while conn.execute("SELECT count(*) FROM scores WHERE asset_id = %s", (lat_asset,)).fetchone()[0] < m:
                if time.monotonic() > deadline:
                    raise InfrastructureError("latency phase did not complete in time")
                time.sleep(0.2)
            lat = np.array([r[0] for r in conn.execute(
                "SELECT extract(epoch FROM written_at - ts) FROM scores WHERE asset_id = %s", (lat_asset,))],
                dtype=float)
    finally:
        stop_sampling.set()
        stop(worker, timeout=30)
    stats_lines = [ln for ln in log.read_text(errors="replace").splitlines() if "spc: " in ln and "busy" in ln]
    if stats_lines:
        console.print("worker: " + stats_lines[-1].split("spc: ", 1)[1])
    return {"records_per_s": rate, "latency_p50_s": float(np.percentile(lat, 50)),
            "latency_p99_s": float(np.percentile(lat, 99)), "latency_rate": lat_rate, "peak_rss_mb": peak["rss"]}


def _stamped_now(records: list[SpcRecord]):
    """Give each record its production time as event time, so written_at - ts is the latency."""
    for rec in records:
        yield rec.model_copy(update={"ts": datetime.now(UTC)})
