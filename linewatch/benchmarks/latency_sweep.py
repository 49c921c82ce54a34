"""SPC latency per worker setting: how the fetch wait and the flush interval were chosen.

``python -m linewatch.benchmarks.latency_sweep [--rate 300] [--seconds 15] [--setting K=V,K=V ...]``
(also ``linewatch bench latency-sweep``). One stack and one trained model for the whole sweep; per
setting the worker (``python -m linewatch worker``) is started with those ``LINEWATCH_*`` values in
the same consumer group as the one before (so nothing is read twice), SPC records are produced at a
fixed ``--rate`` for ``--seconds``, each stamped with its production time, and the latency to its
``scores`` row is summarised (p50 / p90 / p99, and the batches they were written in, counted by
transaction). A fixed rate, not half the measured one, keeps settings comparable within a sweep.

The first worker of a stack pays its warm-up (scoring process, first loads), so the sweep starts
with one warm-up run of the first setting, reported apart. Figures and how to read them:
docs/benchmarks.md ("Latency: the fetch wait and the flush interval").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from rich.console import Console
from rich.table import Table

from linewatch.benchmarks.common import TIMEOUT_S, bench_stack, latencies, running_worker, stamped_now, wait_ready
from linewatch.config import Settings
from linewatch.embedded.stack import Stack
from linewatch.errors import ConfigError
from linewatch.producers.spc import produce_spc
from linewatch.simulation.spc import simulate_spc
from linewatch.training import train_and_register

#: The grid of docs/benchmarks.md: Faust's fetch wait with the old interval, then the interval at 100 ms.
DEFAULT_SETTINGS = (
    "fetch_max_wait_ms=1500,batch_within_s=0.25",
    "fetch_max_wait_ms=1500,batch_within_s=0.1",
    "fetch_max_wait_ms=100,batch_within_s=0.25",
    "fetch_max_wait_ms=100,batch_within_s=0.1",
    "fetch_max_wait_ms=100,batch_within_s=0.05",
)
#: Records handed to the producer between pacing checks (a few ms of records at a few hundred per second).
CHUNK = 10
#: After readiness, so the group's first fetches are not what is measured.
SETTLE_S = 3.0
#: Gives up on a worker that does not join in this long.
READY_TIMEOUT_S = 120.0


def parse_setting(text: str) -> dict[str, str]:
    """``"fetch_max_wait_ms=100,batch_within_s=0.1"`` -> ``LINEWATCH_*`` variables, checked against Settings.

    >>> parse_setting("fetch_max_wait_ms=100,batch_within_s=0.1")
    {'LINEWATCH_FETCH_MAX_WAIT_MS': '100', 'LINEWATCH_BATCH_WITHIN_S': '0.1'}
    """
    env = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in Settings.model_fields:
            raise ConfigError(f"{part!r} is not NAME=VALUE with NAME a setting (e.g. batch_within_s=0.1)")
        env[f"LINEWATCH_{key.upper()}"] = value
    Settings(**{k.removeprefix("LINEWATCH_").lower(): v for k, v in env.items()})  # fails on a bad value
    return env


def measure(settings: Settings, stack: Stack, tmp: Path, app_id: str, env: dict[str, str], *, rate: float,
            seconds: float, run: int) -> dict[str, Any]:
    """One worker with ``env`` in group ``app_id``, ``rate`` records/s for ``seconds``; its latency figures."""
    with running_worker(settings, stack, tmp, group=app_id, env=env, log_name=f"worker-{run}.log") as worker:
        wait_ready(worker, READY_TIMEOUT_S)
        time.sleep(SETTLE_S)
        asset = f"sweep-{uuid.uuid4().hex[:6]}"
        m = max(1, int(rate * seconds))
        load = os.getloadavg()[0]
        sim = simulate_spc(n_parts=m, seed=3 + run, fault_fraction=0.0, assets=(asset,))
        produce_spc(stack.bootstrap, stamped_now(sim.records()), rate_per_s=rate, chunk=CHUNK,
                    security=stack.kafka_security)
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            lat = latencies(conn, asset, m, deadline=time.monotonic() + TIMEOUT_S, worker=worker)
            sizes = [r[0] for r in conn.execute(
                "SELECT count(*) FROM scores WHERE asset_id = %s GROUP BY xmin::text", (asset,))]
    return {"p50_s": round(float(np.percentile(lat, 50)), 3), "p90_s": round(float(np.percentile(lat, 90)), 3),
            "p99_s": round(float(np.percentile(lat, 99)), 3), "batches": len(sizes),
            "mean_batch": round(float(np.mean(sizes)), 1), "load": round(load, 2)}


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="SPC records per second during each measurement")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each setting is measured")
    parser.add_argument("--setting", action="append", dest="settings", metavar="K=V,K=V",
                        help="worker settings of one run (repeat; default: the grid in docs/benchmarks.md)")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the figures here")
    args = parser.parse_args(argv)
    console = Console()
    grid = args.settings or list(DEFAULT_SETTINGS)
    try:
        envs = [parse_setting(s) for s in grid]
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    app_id = f"sweep-{uuid.uuid4().hex[:6]}"
    with bench_stack(Settings(), "linewatch-sweep-") as (bench_settings, stack, tmp):
        normal = simulate_spc(n_parts=20_000, seed=1, fault_fraction=0.0)
        train_and_register(normal.X, feature_names=normal.feature_names, database_url=stack.database_url,
                           model_dir=tmp / "models", target_far=Settings().target_far)
        for run, (label, env) in enumerate([(f"{grid[0]} (warm-up)", envs[0]), *zip(grid, envs, strict=True)]):
            console.print(f"{label}: {args.rate:g} records/s for {args.seconds:g} s ...")
            rows.append({"setting": label, **measure(bench_settings, stack, tmp, app_id, env, rate=args.rate,
                                                     seconds=args.seconds, run=run)})
    table = Table(title=f"SPC latency at {args.rate:g} records/s (event time -> scores row)")
    for col in ("setting", "p50 s", "p90 s", "p99 s", "batches", "mean batch", "load"):
        table.add_column(col, justify="left" if col == "setting" else "right", no_wrap=col == "setting")
    for r in rows:
        table.add_row(r["setting"], *(f"{r[k]:g}" for k in ("p50_s", "p90_s", "p99_s", "batches", "mean_batch",
                                                              "load")))
    console.print(table)
    if args.json_path:
        args.json_path.write_text(json.dumps({"rate": args.rate, "seconds": args.seconds, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
