"""Latency and throughput of ``linewatch serve`` (the inspection API), next to the detector alone, in one run.

What it does, on an embedded broker and PostgreSQL in a temporary directory:

1. trains and registers the demo's SPC models (``robust_mahalanobis`` and ``ewma`` over the six
   simulated characteristics) and a PatchCore ``fast`` model at the frame size (256x256 by default);
2. **detector alone**: the worker's batch functions (``score_spc_batch``, ``score_frames_batch``) on one
   event per call, in this process, with the registry's models: the floor any API can reach;
3. starts the real ``linewatch serve`` as a child process (fsync'd spool, publishing to the broker);
4. **paced**: open-loop clients send one frame every 1/``--frame-rate`` s and one SPC record every
   1/``--spc-rate`` s, over ``--clients`` keep-alive connections; latency runs from the moment a request
   was due (so a slow answer delays nothing after it unmeasured) to its answer: p50 and p99;
5. **saturated**: ``--clients`` closed-loop clients send as fast as answers come: requests per second.

``--json OUT`` writes ``frame_p50_ms``, ``frame_p99_ms``, ``frame_per_s``, ``spc_p50_ms``, ``spc_p99_ms``,
``spc_per_s`` (paced latencies, saturated requests/s of ``--spc-records-per-request`` records each), the
same six with ``detector_`` in front (one event per call), the rates the latencies were measured at,
and what was sent, answered and refused. Targets on two cores: frame
p99 < 50 ms at 20 requests/s, SPC p99 < 10 ms at 500 requests/s. The clients run on the same cores
as the server, as a station's client would not: the figures are an upper bound on the server's share.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

PROG = "linewatch bench serve"
SPC_DETECTORS = ("robust_mahalanobis", "ewma")
SKU = "bench-serve"
CAMERA = "cam-1"
N_TRAIN_FRAMES = 120
N_TRAIN_PARTS = 3000
#: Distinct frames cycled through (rendering costs more than scoring).
POOL_SIZE = 32
READY_TIMEOUT_S = 120.0
DETECTOR_CALLS = {"frames": 100, "spc": 2000}
#: A paced request not answered (or not even sent: all connections busy) in this long counts as this long.
#: It bounds a phase that the server cannot keep up with to its length plus this.
CLIENT_TIMEOUT_S = 5.0


def _percentiles(latencies_s: Sequence[float]) -> tuple[float, float]:
    lat = np.asarray(latencies_s, dtype=float) * 1000.0
    return (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if lat.size else (float("nan"),) * 2


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)  # what the camera producer sends
    return buf.getvalue()


def _records(n: int, seed: int) -> list[bytes]:
    """``n`` SPC records as JSON bodies, three assets interleaved, stamped over the last hours."""
    from linewatch.simulation.spc import simulate_spc

    start = datetime.now(UTC) - timedelta(hours=3)
    sim = simulate_spc(n_parts=n, seed=seed, fault_fraction=0.05, start=start, interval=timedelta(seconds=1))
    return [r.model_dump_json(exclude_none=True).encode() for r in sim.records()]


def _train(database_url: str, model_dir: Path, size: int, say: Callable[[str], None]) -> list[np.ndarray]:
    from linewatch.detectors.bundle import Scope
    from linewatch.simulation.frames import render_batch, stream_frames
    from linewatch.simulation.spc import simulate_spc
    from linewatch.training import train_and_register

    say(f"training {', '.join(SPC_DETECTORS)} on {N_TRAIN_PARTS} parts and PatchCore (fast) at {size}x{size} ...")
    normal = simulate_spc(n_parts=N_TRAIN_PARTS, seed=1, fault_fraction=0.0)
    for det in SPC_DETECTORS:
        train_and_register(normal.X, feature_names=normal.feature_names, detector=det, database_url=database_url,
                           model_dir=model_dir, target_far=1e-3, seed=0)
    good = render_batch("bracket-a", n=N_TRAIN_FRAMES, size=size, seed=1)[0]
    train_and_register(good, modality="frames", scope=Scope(sku=SKU), database_url=database_url,
                       model_dir=model_dir, target_far=0.01, calibration_fraction=0.35,
                       detector_params={"preset": "fast", "image_size": size}, seed=0)
    return [f.image for f in stream_frames("bracket-a", size=size, seed=2, defect_rate=0.05, limit=POOL_SIZE)]


def _detector_alone(database_url: str, frames: list[np.ndarray], records: list[bytes]) -> dict[str, float]:
    """One event per call through the worker's batch functions: latency per call and calls per second."""
    from threadpoolctl import threadpool_limits

    from linewatch.producers.frames import CameraFrame, encode_frame
    from linewatch.storage.model_registry import ModelCache
    from linewatch.streams.frames_pipeline import score_frames_batch
    from linewatch.streams.messages import RawMessage
    from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch

    out: dict[str, float] = {}
    t0 = datetime.now(UTC)
    frame_msgs = [RawMessage("frames", 0, i, b"a", encode_frame(
        CameraFrame("bench-a", CAMERA, SKU, f"d{i}", t0 + timedelta(milliseconds=i), frames[i % len(frames)])))
        for i in range(DETECTOR_CALLS["frames"])]
    spc_msgs = [RawMessage("spc", 0, i, b"a", records[i % len(records)]) for i in range(DETECTOR_CALLS["spc"])]
    cases = {"frame": ("frames", frame_msgs, lambda m, c, s: score_frames_batch([m], c)),
             "spc": ("spc", spc_msgs, lambda m, c, s: score_spc_batch([m], c, s))}
    with threadpool_limits(limits=1, user_api="blas"):  # as in the worker and the API
        for name, (modality, msgs, call) in cases.items():
            cache = ModelCache(database_url=database_url, modalities=(modality,))
            cache.refresh(force=True)
            states = StreamStates()
            for m in msgs[:5]:
                call(m, cache, states)  # warm-up: sessions, allocations
            lat = []
            t_all = time.perf_counter()
            for m in msgs:
                t = time.perf_counter()
                result = call(m, cache, states)
                lat.append(time.perf_counter() - t)
                if not result.scores:
                    raise RuntimeError(f"the bench {modality} model did not score: {result.deadletters.items[:1]}")
            p50, p99 = _percentiles(lat)
            out.update({f"detector_{name}_p50_ms": p50, f"detector_{name}_p99_ms": p99,
                        f"detector_{name}_per_s": len(msgs) / (time.perf_counter() - t_all)})
    return out


class Load:
    """Requests for the frame and SPC endpoints, built once, sent by the paced and saturated phases."""

    def __init__(self, frames: list[np.ndarray], records: list[bytes], records_per_request: int = 1) -> None:
        self.frames = [_png(f) for f in frames]
        k = records_per_request
        self.records = records if k == 1 else [b"[" + b",".join(records[i:i + k]) + b"]"
                                               for i in range(0, len(records) - k + 1, k)]
        self._n = 0

    def frame(self) -> tuple[str, bytes, dict[str, str], dict[str, str]]:
        self._n += 1
        params = {"asset_id": f"bench-{self._n % 4}", "camera": CAMERA, "sku": SKU, "part_id": f"f{self._n}"}
        return "/v1/inspect/frame", self.frames[self._n % len(self.frames)], {"content-type": "image/png"}, params

    def spc(self) -> tuple[str, bytes, dict[str, str], dict[str, str]]:
        self._n += 1
        return "/v1/inspect/spc", self.records[self._n % len(self.records)], {"content-type": "application/json"}, {}


async def _paced(base: str, make: Callable[[], tuple], *, rate: float, seconds: float, clients: int
                 ) -> dict[str, Any]:
    """Open loop: request i is due at i / rate; latency from when it was due to its answer."""
    import httpx

    n = max(1, int(rate * seconds))
    latencies: list[float] = []
    codes: dict[int | str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=CLIENT_TIMEOUT_S) as client:
        requests = [make() for _ in range(n)]
        start = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            path, body, headers, params = requests[i]
            try:
                r = await client.post(path, content=body, headers=headers, params=params)
            except httpx.TimeoutException:  # overloaded: counted at the timeout, a lower bound on its latency
                codes["timeout"] = codes.get("timeout", 0) + 1
                latencies.append(CLIENT_TIMEOUT_S)
                return
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200:
                latencies.append(time.perf_counter() - due)

        await asyncio.gather(*(one(i) for i in range(n)))
    p50, p99 = _percentiles(latencies)
    return {"p50_ms": p50, "p99_ms": p99, "sent": n, "status": codes}


async def _saturated(base: str, make: Callable[[], tuple], *, seconds: float, clients: int) -> dict[str, Any]:
    """Closed loop: ``clients`` clients each send their next request as soon as the last is answered."""
    import httpx

    done, codes = 0, {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                path, body, headers, params = make()
                r = await client.post(path, content=body, headers=headers, params=params)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                done += r.status_code == 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"per_s": done / elapsed, "status": codes}


def _start_server(settings: Any, stack: Any, tmp: Path, port: int, fsync: bool) -> Any:
    """The real ``linewatch serve`` as a child process, ready when ``/readyz`` answers 200."""
    import httpx

    from linewatch.embedded.process import spawn, stop, tail

    env = dict(os.environ)
    env.update({"LINEWATCH_BROKER_URL": stack.bootstrap, "LINEWATCH_DATABASE_URL": stack.database_url,
                "LINEWATCH_DATA_DIR": str(tmp / "serve"), "LINEWATCH_SERVE_PORT": str(port),
                "LINEWATCH_SERVE_SPOOL_FSYNC": "true" if fsync else "false",
                **settings.kafka_env()})
    log_path = tmp / "serve.log"
    proc = spawn([sys.executable, "-m", "linewatch", "serve"], log_path=log_path, env=env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"linewatch serve did not become ready:\n{tail(log_path, 30)}")
        time.sleep(0.2)


def run_bench_serve(*, size: int = 256, frame_rate: float = 20.0, spc_rate: float = 500.0, seconds: float = 10.0,
                    clients: int = 8, records_per_request: int = 1, fsync: bool = True,
                    say: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything in the module docstring; returns the figures."""
    from linewatch.benchmarks.common import bench_stack
    from linewatch.config import load_settings
    from linewatch.embedded.process import free_port, stop

    with bench_stack(load_settings(), "linewatch-bench-serve-") as (settings, stack, tmp):
        pool = _train(stack.database_url, tmp / "models", size, say)
        records = _records(int(spc_rate * seconds * records_per_request) + 2000, seed=3)
        say("detector alone (one event per call, in process) ...")
        figures: dict[str, Any] = _detector_alone(stack.database_url, pool, records)
        port = free_port()
        say(f"starting linewatch serve on port {port} ...")
        proc = _start_server(settings, stack, tmp, port, fsync)
        try:
            base, load = f"http://127.0.0.1:{port}", Load(pool, records, records_per_request)
            asyncio.run(_paced(base, load.frame, rate=5, seconds=1, clients=clients))  # warm-up
            say(f"paced: {frame_rate:g} frames/s for {seconds:g} s ...")
            frame = asyncio.run(_paced(base, load.frame, rate=frame_rate, seconds=seconds, clients=clients))
            say(f"paced: {spc_rate:g} SPC requests/s of {records_per_request} record(s) for {seconds:g} s ...")
            spc = asyncio.run(_paced(base, load.spc, rate=spc_rate, seconds=seconds, clients=clients))
            say(f"saturated: {clients} clients, frames then SPC, {seconds / 2:g} s each ...")
            frame_max = asyncio.run(_saturated(base, load.frame, seconds=seconds / 2, clients=clients))
            spc_max = asyncio.run(_saturated(base, load.spc, seconds=seconds / 2, clients=clients))
        finally:
            stop(proc)
    figures.update({
        "frame_p50_ms": frame["p50_ms"], "frame_p99_ms": frame["p99_ms"], "frame_per_s": frame_max["per_s"],
        "spc_p50_ms": spc["p50_ms"], "spc_p99_ms": spc["p99_ms"], "spc_per_s": spc_max["per_s"],
        "frame_rate": frame_rate, "spc_rate": spc_rate, "spc_records_per_request": records_per_request,
        "frame_size": size, "clients": clients, "spool_fsync": fsync,
        "cpu_count": os.cpu_count(), "status": {"frame_paced": frame["status"], "spc_paced": spc["status"],
                                                "frame_saturated": frame_max["status"],
                                                "spc_saturated": spc_max["status"]},
    })
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="frame and model side in pixels")
    parser.add_argument("--frame-rate", type=float, default=20.0, help="paced frames per second")
    parser.add_argument("--spc-rate", type=float, default=500.0, help="paced SPC requests per second")
    parser.add_argument("--spc-records-per-request", type=int, default=1,
                        help="SPC records per request (a station that batches its gauge readings)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each paced phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--no-fsync", action="store_true", help="serve with LINEWATCH_SERVE_SPOOL_FSYNC=false")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = run_bench_serve(size=args.size, frame_rate=args.frame_rate, spc_rate=args.spc_rate,
                              seconds=args.seconds, clients=args.clients,
                              records_per_request=args.spc_records_per_request, fsync=not args.no_fsync,
                              say=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
