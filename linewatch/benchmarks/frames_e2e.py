"""End-to-end frames benchmark: broker -> Faust worker -> PatchCore -> COPY + publish, with its limits.

Measured in one run, on the same pre-filled frames, on this machine (same shape as the SPC
benchmark in :mod:`linewatch.benchmarks.e2e`, so the two read side by side):

1. ``detector_per_s``: the agent's batch processor alone, in this process, on raw frames (no
   image decoding) in batches of the agent's size with the agent's scoring threads (backbone +
   patch search + heat maps for the alarms), and ``detector_one_thread_per_s`` with one: the
   ceiling of any frames path on this machine;
2. ``bare_kafka_per_s``: confluent-kafka consuming the topic, parsing every envelope and
   decoding every image with Pillow (the floor of a Python consumer that looks at the pixels);
3. ``bare_faust_per_s``: a Faust worker with the production settings doing nothing per batch;
4. ``frames_per_s``: the real worker, from the first score row written to the last of the
   pre-filled backlog (steady state, after the group join and model load);
5. latency p50/p99: a second phase streams frames paced at half the measured throughput,
   stamped with their production time, and measures frame time -> its score row written;
6. ``peak_rss_mb``: the worker's peak resident memory, sampled; ``rss_drain_growth_mb``: its growth
   while the backlog (``backlog_s`` seconds of throughput) drained (flat: near zero).

Frames are simulated parts (``bracket-a``, 5 % defective so heat maps are part of the load),
``size`` x ``size`` pixels, PNG by default, spread over 8 assets so every partition works.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Message
from rich.console import Console
from threadpoolctl import threadpool_limits

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
from linewatch.detectors.bundle import Scope
from linewatch.embedded.stack import Stack
from linewatch.errors import DataError, InfrastructureError
from linewatch.kafka import Publisher
from linewatch.producers.frames import CameraFrame, encode_frame
from linewatch.schemas.codec import decode_frame, encode_envelope
from linewatch.schemas.messages import FrameMeta
from linewatch.schemas.topics import FRAMES
from linewatch.simulation.frames import render_batch, stream_frames
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.frames_agent import FRAMES_BATCH_SIZE, default_scoring_threads
from linewatch.streams.frames_pipeline import ScoringPool, decode_image, score_frames_batch
from linewatch.streams.messages import RawMessage
from linewatch.training import train_and_register

SKU_LOOK = "bracket-a"
#: Good frames the bench model is trained on; 35 % (42) held out is the least POT accepts.
N_TRAIN_FRAMES = 120
CALIBRATION_FRACTION = 0.35
TARGET_FAR = 0.01
#: Distinct rendered frames cycled through the pre-fill (rendering costs more than scoring).
POOL_SIZE = 64
DEFECT_RATE = 0.05
N_ASSETS = 8
LATENCY_PHASE_S = 10.0
#: A worker that has joined but writes no frame score in this long is not running the frames agent.
NO_PROGRESS_S = 90.0
#: Rough end-to-end rate at 256x256 on two cores, used to turn --seconds into a frame count before
#: anything is measured; fewer than MIN_FRAMES would be mostly group join and warm-up.
PLANNING_RATE_PER_S = 60
MIN_FRAMES = 300


def planned_frames(seconds: float) -> int:
    """How many frames to pre-fill for a backlog phase of about ``seconds``.

    >>> planned_frames(30)
    1800
    """
    return max(MIN_FRAMES, int(seconds * PLANNING_RATE_PER_S))


def run_frames_bench(
    settings: Settings,
    *,
    frames: int,
    size: int = 256,
    console: Console,
    encoding: str = "png",
    model_size: int | None = None,
    worker_command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure the frames path; returns JSON-ready figures (keys documented in the module docstring).

    ``model_size`` is the detector's input side (default: ``size``, so frames are scored at their
    own resolution); ``worker_command`` replaces ``python -m linewatch worker`` (e.g. to measure
    a worker built another way).
    """
    model_size = model_size or size
    with bench_stack(settings, "linewatch-bench-frames-") as (bench_settings, stack, tmp):
        run_id = uuid.uuid4().hex[:6]
        sku = f"bench-{run_id}"
        console.print(f"training a {model_size}x{model_size} image model on {N_TRAIN_FRAMES} good frames ...")
        good = _as_sent(render_batch(SKU_LOOK, n=N_TRAIN_FRAMES, size=size, seed=1)[0], encoding)
        train_and_register(good, modality="frames", scope=Scope(sku=sku), database_url=stack.database_url,
                           model_dir=tmp / "models", target_far=TARGET_FAR, calibration_fraction=CALIBRATION_FRACTION,
                           detector_params={"image_size": model_size}, seed=0)
        pool = [f.image for f in stream_frames(SKU_LOOK, size=size, seed=2, defect_rate=DEFECT_RATE,
                                               limit=POOL_SIZE)]
        assets = tuple(f"bench-{run_id}-{i}" for i in range(N_ASSETS))

        console.print("detector alone (in process, decoded frames) ...")
        detector = _detector_alone(stack.database_url, sku, pool, encoding)
        console.print(f"pre-filling {frames} {encoding} frames on {FRAMES.name} ...")
        _prefill(stack.bootstrap, pool, n=frames, sku=sku, assets=assets, encoding=encoding,
                 security=stack.kafka_security)
        console.print("bare confluent-kafka consume + envelope + image decode ...")
        bare_kafka = common.bare_kafka(stack.bootstrap, FRAMES.name, frames, decode=_decode_frames,
                                       max_messages=FRAMES_BATCH_SIZE * 8, poll_s=1.0, verb="decoded",
                                       noun="frames", security=stack.kafka_security)
        console.print("bare Faust consume (take_events, no work) ...")
        bare_faust = common.bare_faust(stack.bootstrap, FRAMES.name, frames, tmp, settings.batch_size,
                                       kafka_env=bench_settings.kafka_env())
        console.print("linewatch worker end to end ...")
        e2e = _end_to_end(bench_settings, stack, frames, assets, sku, pool, encoding, tmp, console,
                          worker_command)
    return {
        "modality": "frames",
        "frames": frames,
        "size": size,
        "model_size": model_size,
        "encoding": encoding,
        "frames_per_s": round(e2e["frames_per_s"], 1),
        "detector_per_s": round(detector["per_s"], 1),
        "detector_one_thread_per_s": round(detector["one_thread_per_s"], 1),
        "scoring_threads": detector["threads"],
        "bare_faust_per_s": round(bare_faust, 1),
        "bare_kafka_per_s": round(bare_kafka, 1),
        "ratio_vs_detector": round(e2e["frames_per_s"] / detector["per_s"], 3),
        "ratio_vs_bare_faust": round(e2e["frames_per_s"] / bare_faust, 3),
        "ratio_vs_bare_kafka": round(e2e["frames_per_s"] / bare_kafka, 3),
        "latency_p50_s": round(e2e["latency_p50_s"], 4),
        "latency_p99_s": round(e2e["latency_p99_s"], 4),
        "latency_rate_per_s": round(e2e["latency_rate"], 1),
        "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
        **e2e["drain"],
        "anomalies": e2e["anomalies"],
        "batch_size": FRAMES_BATCH_SIZE,
        "providers": detector["providers"],
        "cpu_count": os.cpu_count(),
    }


def _as_sent(images: np.ndarray, encoding: str) -> list[np.ndarray]:
    """Frames as the worker will see them after ``encoding``: a model must learn the camera's JPEG
    artefacts as normal, or it flags every JPEG frame (it did, trained on lossless frames)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for img in images:
        meta, body = decode_frame(encode_frame(CameraFrame("x", "cam-1", "x", "x", t0, img), encoding))
        out.append(decode_image(meta, body))
    return out


def _messages(pool: list[np.ndarray], *, n: int, sku: str, assets: Sequence[str], encoding: str,
              start: datetime, interval_s: float, offset: int = 0) -> list[tuple[bytes, bytes]]:
    """``n`` frame messages cycling through ``pool``: each image encoded once, each header its own."""
    payloads = []
    for img in pool:
        _, body = decode_frame(encode_frame(CameraFrame("x", "cam-1", sku, "x", start, img), encoding))
        payloads.append(bytes(body))
    h, w = pool[0].shape[:2]
    channels = 1 if pool[0].ndim == 2 else 3
    out = []
    for i in range(n):
        asset = assets[i % len(assets)]
        meta = FrameMeta(asset_id=asset, camera="cam-1", sku=sku, part_id=f"p{offset + i:07d}",
                         ts=start + timedelta(seconds=i * interval_s), encoding=encoding,  # type: ignore[arg-type]
                         width=w, height=h, channels=channels)  # type: ignore[arg-type]
        out.append((asset.encode(), encode_envelope(meta, payloads[i % len(payloads)])))
    return out


def _prefill(bootstrap: str, pool: list[np.ndarray], *, n: int, sku: str, assets: Sequence[str],
             encoding: str, security: Mapping[str, str] | None = None) -> None:
    pub = Publisher(bootstrap, security=security)
    msgs = _messages(pool, n=n, sku=sku, assets=assets, encoding=encoding,
                     start=datetime(2026, 1, 1, tzinfo=UTC), interval_s=0.02)
    for start in range(0, n, 500):
        pub.publish(FRAMES.name, msgs[start : start + 500])
    pub.flush()


def _detector_alone(database_url: str, sku: str, pool: list[np.ndarray], encoding: str) -> dict[str, Any]:
    """The agent's own batch processor on raw frames (no image decoding), in batches of the agent's size.

    Best of two passes over the pool after a warm-up batch: the cost of scoring alone, which the
    end-to-end rate is compared with.
    """
    cache = ModelCache(database_url=database_url, modalities=("frames",))
    cache.refresh(force=True)
    models = cache.champions_for("frames", "a", sku, "cam-1")
    model = models[0] if models else None
    if model is None:
        raise InfrastructureError(f"the bench model for {sku} did not load from the database")
    msgs = [RawMessage(FRAMES.name, 0, i, b"a", v) for i, (_, v) in enumerate(
        _messages(pool, n=len(pool), sku=sku, assets=("a",), encoding="raw",
                  start=datetime(2025, 1, 1, tzinfo=UTC), interval_s=1.0))]
    threads = default_scoring_threads()
    rates = {}
    with threadpool_limits(limits=1, user_api="blas"):  # as in the worker (see register_frames_agent)
        for n_threads in sorted({1, threads}):
            pool = ScoringPool(n_threads)
            score_frames_batch(msgs[:FRAMES_BATCH_SIZE], cache, pool=pool)  # warm-up: session, allocations
            best = 0.0
            for _ in range(2):
                t0 = time.perf_counter()
                for start in range(0, len(msgs), FRAMES_BATCH_SIZE):
                    score_frames_batch(msgs[start : start + FRAMES_BATCH_SIZE], cache, pool=pool)
                best = max(best, len(msgs) / (time.perf_counter() - t0))
            pool.close()
            rates[n_threads] = best
    return {"per_s": rates[threads], "one_thread_per_s": rates[1], "threads": threads,
            "providers": model.detector.backbone.active_providers}


def _decode_frames(msgs: list[Message]) -> int:
    """Envelope + image decode of every message; undecodable frames are not counted."""
    k = 0
    for m in msgs:
        if m.error() is not None:
            continue
        try:
            meta, payload = decode_frame(m.value())
            decode_image(meta, payload)
        except DataError:
            continue
        k += 1
    return k


def _end_to_end(settings: Settings, stack: Stack, n: int, assets: tuple[str, ...], sku: str,
                pool: list[np.ndarray], encoding: str, tmp: Path, console: Console,
                worker_command: Sequence[str] | None) -> dict[str, Any]:
    count_sql = "SELECT count(*) FROM scores WHERE modality = 'frames' AND asset_id = ANY(%s)"
    with running_worker(settings, stack, tmp, worker_command) as worker:
        deadline = time.monotonic() + TIMEOUT_S
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            drain = wait_for_rows(conn, count_sql, (list(assets),), n, worker=worker, deadline=deadline,
                                  what="frames (does build_app register the frames agent?)",
                                  no_progress_s=NO_PROGRESS_S)
            first_tx, last_tx, anomalies = conn.execute(
                "SELECT min(written_at), max(written_at), count(*) FILTER (WHERE is_anomaly) FROM scores "
                "WHERE modality = 'frames' AND asset_id = ANY(%s)", (list(assets),)).fetchone()
            rate = common.steady_rate(n - 1, (last_tx - first_tx).total_seconds(), n=n, what="frames")
            drained = common.drain_figures(stack, worker, drain, n=n, rate=rate)

            lat_rate = rate / 2
            m = int(lat_rate * LATENCY_PHASE_S)
            console.print(f"latency phase: {LATENCY_PHASE_S:.0f} s at {lat_rate:.0f} frames/s ...")
            lat_asset = f"latency-{uuid.uuid4().hex[:6]}"
            _paced(stack.bootstrap, pool, m=m, sku=sku, asset=lat_asset, encoding=encoding, rate=lat_rate,
                   security=stack.kafka_security)
            lat = latencies(conn, lat_asset, m, deadline=deadline, worker=worker)
    print_worker_stats(console, worker.log, "frames: ")
    return {"frames_per_s": rate, "latency_p50_s": float(np.percentile(lat, 50)),
            "latency_p99_s": float(np.percentile(lat, 99)), "latency_rate": lat_rate,
            "peak_rss_mb": worker.peak_rss_mb, "anomalies": int(anomalies), "drain": drained}


def _paced(bootstrap: str, pool: list[np.ndarray], *, m: int, sku: str, asset: str, encoding: str,
           rate: float, security: Mapping[str, str] | None = None) -> None:
    """Send ``m`` frames at ``rate`` per second, each stamped with the moment it is handed to the producer."""
    pub = Publisher(bootstrap, security=security)
    template = _messages(pool, n=min(m, len(pool)), sku=sku, assets=(asset,), encoding=encoding,
                         start=datetime(2026, 1, 1, tzinfo=UTC), interval_s=1.0)
    payloads = [bytes(decode_frame(v)[1]) for _, v in template]
    h, w = pool[0].shape[:2]
    channels = 1 if pool[0].ndim == 2 else 3
    start = time.monotonic()
    for i in range(m):
        ahead = i / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        meta = FrameMeta(asset_id=asset, camera="cam-1", sku=sku, part_id=f"lat{i:07d}", ts=datetime.now(UTC),
                         encoding=encoding, width=w, height=h, channels=channels)  # type: ignore[arg-type]
        pub.publish(FRAMES.name, [(asset.encode(), encode_envelope(meta, payloads[i % len(payloads)]))])
    pub.flush()
