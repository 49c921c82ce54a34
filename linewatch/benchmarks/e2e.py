"""End-to-end SPC benchmark: broker -> Faust worker -> detector -> COPY + publish, with its limits.

Measured in one run, on the same pre-filled messages, on this machine:

1. ``bare_kafka_per_s``: confluent-kafka consuming the topic and decoding every message into
   an ``SpcRecord`` (the floor of any Python consumer that validates its input);
2. ``bare_faust_per_s``: a Faust worker with the production settings doing nothing per batch;
3. ``records_per_s``: the real worker, from the first committed batch to the last row of the
   pre-filled backlog (steady state, after the group join);
4. latency p50/p99: a second phase streams records paced at half the measured throughput and
   measures record time (set when produced) -> the row's commit transaction in PostgreSQL;
5. ``peak_rss_mb``: the worker's peak resident memory, sampled; ``rss_drain_growth_mb``: how much it
   grew while the pre-filled backlog (``backlog_s`` seconds of throughput) drained
   (:meth:`~linewatch.benchmarks.common.WorkerRun.drain_growth_mb`: flat is near zero).

Ratios against (1) and (2) are what to compare across machines; absolute numbers are noisy.

With ``records_per_message`` N above 1 every message (pre-fill and latency phase) is a batched
``spc`` message of up to N records of one asset; (1) decodes those same messages, (2) reads them
(its messages/s times the records per message is ``bare_faust_per_s``), and the worker takes
its usual batches of ``batch_size`` messages, which the SPC agent cuts into runs of
``batch_size`` KiB (:data:`linewatch.streams.spc_agent.BYTES_PER_RECORD`), so a run holds about
as many records as a batch of single records.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Message
from rich.console import Console
from rich.markup import escape

from linewatch.benchmarks import common
from linewatch.benchmarks.common import (
    TIMEOUT_S,
    bench_stack,
    latencies,
    print_worker_stats,
    running_worker,
    wait_for_rows,
)
from linewatch.config import Settings
from linewatch.embedded.stack import Stack
from linewatch.errors import InfrastructureError
from linewatch.lifecycle import READY_MESSAGE
from linewatch.producers.spc import batched_by_key, produce_spc, publish_paced
from linewatch.schemas.codec import decode_record_lists, encode
from linewatch.schemas.messages import SpcRecord
from linewatch.schemas.topics import SPC
from linewatch.simulation.spc import simulate_spc
from linewatch.training import train_and_register

#: Rough single-worker rate used to turn --seconds into a record count before anything is measured.
PLANNING_RATE_PER_S = 4000
LATENCY_PHASE_S = 10.0


def run_bench_e2e(settings: Settings, *, seconds: float, records: int | None, console: Console,
                  processes: int = 1, records_per_message: int = 1) -> dict[str, Any]:
    """Pre-fill, measure the two floors, then the worker (``linewatch worker --processes <processes>``)."""
    n = records or max(10_000, int(seconds * PLANNING_RATE_PER_S))
    per = records_per_message
    with bench_stack(settings, "linewatch-bench-") as (bench_settings, stack, tmp):
        normal = simulate_spc(n_parts=20_000, seed=1, fault_fraction=0.0)
        train_and_register(normal.X, feature_names=normal.feature_names, database_url=stack.database_url,
                           model_dir=tmp / "models", target_far=settings.target_far)
        run_id = uuid.uuid4().hex[:6]
        assets = tuple(f"bench-{run_id}-{i}" for i in range(8))
        console.print(f"pre-filling {n} records on {SPC.name} ({per} per message) ...")
        sim = simulate_spc(n_parts=n, seed=2, fault_fraction=0.1, assets=assets)
        n_messages = _prefill(stack, sim.records(), per)

        console.print("bare confluent-kafka consume + decode ...")
        bare_kafka = common.bare_kafka(stack.bootstrap, SPC.name, n, decode=_decode_spc,
                                       max_messages=max(1, 5000 // per), poll_s=1.0, security=stack.kafka_security)
        console.print("bare Faust consume (take_events, no work) ...")
        bare_faust = common.bare_faust(stack.bootstrap, SPC.name, n_messages, tmp, settings.batch_size,
                                       kafka_env=bench_settings.kafka_env()) * n / n_messages
        console.print(f"linewatch worker end to end ({processes} process(es)) ...")
        e2e = _end_to_end(bench_settings, stack, n, assets, tmp, console, processes, per)
    figures = {
        "modality": "spc",
        "records": n,
        "records_per_message": per,
        "messages": n_messages,
        "records_per_s": round(e2e["records_per_s"], 1),
        "records_per_s_second_half": round(e2e["records_per_s_second_half"], 1),
        "processes": processes,
        "bare_faust_per_s": round(bare_faust, 1),
        "bare_kafka_per_s": round(bare_kafka, 1),
        "ratio_vs_bare_faust": round(e2e["records_per_s"] / bare_faust, 3),
        "ratio_vs_bare_kafka": round(e2e["records_per_s"] / bare_kafka, 3),
        "latency_p50_s": round(e2e["latency_p50_s"], 4),
        "latency_p99_s": round(e2e["latency_p99_s"], 4),
        "latency_rate_per_s": round(e2e["latency_rate"], 1),
        "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
        **e2e["drain"],
        "batch_size": settings.batch_size,
        "cpu_count": os.cpu_count(),
    }
    return figures


def _prefill(stack: Stack, records: list[SpcRecord], per_message: int) -> int:
    """Send ``records`` as single-record messages or JSON arrays of ``per_message``; returns the message count."""
    if per_message == 1:
        return produce_spc(stack.bootstrap, records, chunk=5000, security=stack.kafka_security)
    messages = [(key, value) for key, value, _ in
                batched_by_key(((r.asset_id.encode(), encode(r)) for r in records), per_message)]
    return publish_paced(stack.bootstrap, SPC.name, messages, chunk=max(1, 5000 // per_message),
                         security=stack.kafka_security)


def _decode_spc(msgs: list[Message]) -> int:
    """Records decoded from a polled batch (each message one record or a JSON array of them)."""
    decoded = decode_record_lists([m.value() for m in msgs if m.error() is None], SpcRecord)
    return sum(len(d) if isinstance(d, list) else 1 for d in decoded)


def _end_to_end(settings: Settings, stack: Stack, n: int, assets: tuple[str, ...], tmp: Path,
                console: Console, processes: int = 1, per_message: int = 1) -> dict[str, float]:
    argv = [sys.executable, "-m", "linewatch", "worker", "--processes", str(processes), "--log-level", "warn"]
    with running_worker(settings, stack, tmp, argv=argv) as worker:
        deadline = time.monotonic() + TIMEOUT_S
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            drain = wait_for_rows(conn, "SELECT count(*) FROM scores WHERE asset_id = ANY(%s)", (list(assets),), n,
                          worker=worker, deadline=deadline, what="records")
            first_tx, last_tx, in_first = conn.execute(
                """WITH s AS (SELECT written_at FROM scores WHERE asset_id = ANY(%s))
                   SELECT min(written_at), max(written_at),
                          count(*) FILTER (WHERE written_at = (SELECT min(written_at) FROM s)) FROM s""",
                (list(assets),)).fetchone()
            rate = common.steady_rate(n - in_first, (last_tx - first_tx).total_seconds(), n=n, what="records")
            # The second half alone: with several processes the first half also holds their group join.
            half_tx = conn.execute("SELECT written_at FROM scores WHERE asset_id = ANY(%s) ORDER BY written_at "
                                   "OFFSET %s LIMIT 1", (list(assets), n // 2)).fetchone()[0]
            rate_half = (n - n // 2) / max((last_tx - half_tx).total_seconds(), 1e-9)  # 0 s: rate refused above
            if READY_MESSAGE not in worker.log.read_text(errors="replace"):
                raise InfrastructureError("worker finished without logging readiness; see its log")
            drained = common.drain_figures(stack, worker, drain, n=n, rate=rate)

            console.print(f"latency phase: {LATENCY_PHASE_S:.0f} s at {rate / 2:.0f} records/s ...")
            lat_asset = f"latency-{uuid.uuid4().hex[:6]}"
            lat_rate = rate / 2
            m = int(lat_rate * LATENCY_PHASE_S)
            sim = simulate_spc(n_parts=m, seed=3, fault_fraction=0.0, assets=(lat_asset,))
            produce_spc(stack.bootstrap, common.stamped_now(sim.records()), rate_per_s=lat_rate, chunk=50,
                        security=stack.kafka_security, records_per_message=per_message)
            lat = latencies(conn, lat_asset, m, deadline=deadline)
    # The agent's stats line (SpcRuntime.log_stats) says where the worker's time went.
    if processes == 1:
        print_worker_stats(console, worker.log, "spc: ")
    else:  # each process's last throughput line (its output is prefixed ``worker-<i> | ``)
        lines = worker.log.read_text(errors="replace").splitlines()
        for i in range(processes):
            own = [ln for ln in lines if ln.startswith(f"worker-{i} | ") and "spc: " in ln and "busy" in ln]
            if own:
                console.print(f"worker-{i}: " + escape(own[-1].split("spc: ", 1)[1]))
    return {"records_per_s": rate, "records_per_s_second_half": rate_half,
            "latency_p50_s": float(np.percentile(lat, 50)), "latency_p99_s": float(np.percentile(lat, 99)),
            "latency_rate": lat_rate, "peak_rss_mb": worker.peak_rss_mb, "drain": drained}
