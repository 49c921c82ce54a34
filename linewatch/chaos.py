"""``linewatch chaos``: stream known events through the real system, break it on purpose, count what landed.

One embedded stack (Tansu broker, PostgreSQL) serves the whole run; every scenario gets a fresh
worker (``python -m linewatch worker``, a child process, as the demo starts it) under a small
:class:`~linewatch.supervisor.Supervisor` that restarts a worker that exits, as systemd or Compose would, and counts
the exits. Each scenario streams its own events (its own asset names, so its rows are counted
apart from the other scenarios'), injects its fault, waits on real conditions (the worker's
ready line, row counts, process exits, committed offsets) and then asks the database and the
``scores`` topic what became of every event:

- ``worker-kill``: the worker is SIGKILLed three times while SPC parts stream in;
- ``child-kill``: the agents' scoring child processes (SPC's among them) are SIGKILLed once;
- ``db-restart``: PostgreSQL is stopped for a while and started again on the same port;
- ``db-hang``: every PostgreSQL process is SIGSTOPped for longer than the worker's retry window,
  then SIGCONTed; the worker must notice (exit or recover), not stall silently;
- ``two-workers``: two workers share the consumer group; one is SIGKILLed, the other SIGTERMed;
- ``poison``: malformed messages of every modality interleaved with valid events; each must
  become exactly one dead letter, and every valid event must be stored.

Every SIGKILL waits (a few seconds at most) for a batch in flight, seen as a fresh row in
``processing_attempts``: a process killed between batches only has Kafka redeliver what it had
not committed; one killed in the middle of a batch is the case the durability rules are for.

This module does not import :mod:`linewatch.streams`: it watches workers from the outside, by
their log, their processes and their rows, as an operator would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psutil
import psycopg

from linewatch.config import Settings
from linewatch.embedded.stack import Stack
from linewatch.errors import ConfigError, InfrastructureError
from linewatch.kafka import ensure_topics, make_consumer, make_producer, read_to_end
from linewatch.schemas.codec import ENVELOPE_MAGIC, ENVELOPE_VERSION, MAX_JSON_BYTES, encode, encode_envelope
from linewatch.schemas.messages import FrameMeta, SignalMeta
from linewatch.schemas.score_encoder import DEDUP_HEADER
from linewatch.schemas.topics import FRAMES, SCORES, SIGNALS, SPC
from linewatch.storage.migrations import migrate
from linewatch.supervisor import CHAOS_RESTARTS, Supervisor

SCENARIOS: tuple[str, ...] = ("worker-kill", "child-kill", "db-restart", "db-hang", "two-workers", "poison")
DESCRIPTIONS: dict[str, str] = {
    "worker-kill": "SPC parts at a steady rate; the worker is SIGKILLed three times",
    "child-kill": "the agents' scoring child processes (SPC's among them) are SIGKILLed once",
    "db-restart": "PostgreSQL stopped and started again (same port) mid-stream",
    "db-hang": "every PostgreSQL process SIGSTOPped past the worker's retry window, then SIGCONTed",
    "two-workers": "two workers in one group; one SIGKILLed, the other SIGTERMed",
    "poison": "malformed messages of all three modalities interleaved with valid events",
}

#: How long a worker may take to start and report ready before a scenario gives up.
WORKER_READY_TIMEOUT_S = 90.0
#: Restarts per worker slot and scenario after which the supervisor stops trying (a crash loop).
MAX_RESTARTS = CHAOS_RESTARTS.max_restarts
#: How often the counts are polled while a scenario waits.
POLL_S = 0.25
#: How long a kill waits for a batch in flight before it strikes anyway.
IN_FLIGHT_TIMEOUT_S = 15.0
#: Seconds between checks of the worker group's committed offsets while a scenario drains.
ACK_CHECK_S = 3.0
#: The SPC detector the chaos models use (any would do: the rows are what is counted).
SPC_DETECTOR = "robust_mahalanobis"
#: What frames look like and the SKU their model is for; frames of another SKU have no model.
FRAMES_SKU = "bracket-a"
UNMODELLED_SKU = "chaos-no-model"
FRAME_SIZE = 64
#: Signal rates low enough to keep the scenario fast; the model is trained on the same rates.
SIGNAL_RATES = {"vibration_rate": 2000.0, "current_rate": 500.0}
SIGNAL_SNAPSHOT_S = 30.0
#: Log lines that say what a worker went through, counted per scenario for the report.
LOG_MARKERS: dict[str, str] = {
    "stopped": "stopping the worker",
    "db_retry": "database write failed",
    "db_hung": "treating the database as hung",
    "db_back": "database write succeeded again",
    "isolating": "a worker stopped while processing",
    "set_aside": "set aside so the messages behind it flow",
    "tracebacks": "Traceback (most recent call last)",
}


@dataclass(frozen=True)
class Params:
    """Sizes and durations of one run, and its SPC detector: full, or ``--quick`` (fewer events, shorter outages)."""

    spc_rate: float  # SPC parts per second while a fault is injected
    settle_s: float  # seconds a (re)started worker streams before the next fault
    tail_s: float  # seconds the stream goes on after the last fault
    kills: int  # SIGKILLs of worker-kill
    db_outage_s: float  # how long PostgreSQL is down in db-restart
    db_hang_s: float  # how long PostgreSQL is stopped in db-hang (past the retry window)
    db_hang_retry_s: float  # the worker's LINEWATCH_DB_RETRY_TOTAL_S in db-hang
    poison_spc: int  # valid SPC records in poison
    poison_snapshots: int  # signal snapshots (3 windows each) in poison
    poison_frames: int  # frames with a model in poison
    poison_rate: float  # messages per second in poison
    drain_timeout_s: float  # how long a scenario waits for every event after its last fault
    spc_detector: str = SPC_DETECTOR  # the SPC model's detector (a test may pick one that fits in a blink)

    @classmethod
    def for_run(cls, quick: bool) -> Params:
        if quick:
            return cls(spc_rate=50.0, settle_s=2.0, tail_s=1.0, kills=3, db_outage_s=4.0, db_hang_s=20.0,
                       db_hang_retry_s=5.0, poison_spc=60, poison_snapshots=4, poison_frames=8, poison_rate=40.0,
                       drain_timeout_s=90.0)
        return cls(spc_rate=100.0, settle_s=5.0, tail_s=3.0, kills=3, db_outage_s=10.0, db_hang_s=25.0,
                   db_hang_retry_s=5.0, poison_spc=300, poison_snapshots=10, poison_frames=24, poison_rate=60.0,
                   drain_timeout_s=180.0)


@dataclass
class ScenarioResult:
    """What became of one scenario's events; ``ok`` when nothing was lost or doubled."""

    scenario: str
    description: str
    produced: int = 0
    stored: int = 0
    duplicate_rows: int = 0
    lost: int = 0
    deadletters: int = 0
    expected_deadletters: int = 0
    duplicate_messages: int = 0
    missing_messages: int = 0
    recovery_s: float | None = None
    worker_exits: int = 0
    ok: bool = False
    assets: list[str] = field(default_factory=list)
    by_modality: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicate_rows_by_table: dict[str, int] = field(default_factory=dict)
    exit_codes: list[int] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    log_markers: dict[str, int] = field(default_factory=dict)
    poison: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str | None = None

    def judge(self) -> None:
        self.lost = self.produced - self.stored
        self.ok = (self.error is None and self.lost == 0 and self.duplicate_rows == 0
                   and self.deadletters == self.expected_deadletters and all(self.checks.values()))


@dataclass
class ChaosReport:
    run_id: str
    quick: bool
    scenarios: list[ScenarioResult]
    elapsed_s: float
    log_dir: str

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenarios)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "quick": self.quick, "ok": self.ok, "elapsed_s": round(self.elapsed_s, 1),
                "log_dir": self.log_dir, "scenarios": [asdict(s) for s in self.scenarios]}


class Reporter(Protocol):
    """Where a run says what it is doing (the CLI draws progress bars; the tests pass nothing)."""

    def scenario_started(self, scenario: str, description: str) -> None: ...
    def step(self, scenario: str, text: str) -> None: ...
    def counts(self, scenario: str, produced: int, stored: int | None) -> None: ...
    def scenario_finished(self, result: ScenarioResult) -> None: ...


class NullReporter:
    def scenario_started(self, scenario: str, description: str) -> None:
        pass

    def step(self, scenario: str, text: str) -> None:
        pass

    def counts(self, scenario: str, produced: int, stored: int | None) -> None:
        pass

    def scenario_finished(self, result: ScenarioResult) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Messages and the producer that remembers where each one landed


@dataclass(frozen=True)
class Outgoing:
    """One message to send: a valid event (``modality`` and ``event_id``) or a poison one (``poison``)."""

    topic: str
    key: bytes
    value: bytes
    modality: str | None = None
    event_id: str | None = None
    poison: str | None = None


@dataclass(frozen=True)
class Delivered:
    message: Outgoing
    partition: int
    offset: int


class TrackingProducer:
    """A librdkafka producer that records the partition and offset of every delivered message."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = make_producer(bootstrap)
        self._lock = threading.Lock()
        self.delivered: list[Delivered] = []
        self.errors: list[str] = []

    def send(self, msg: Outgoing) -> None:
        def on_delivery(err: Any, m: Any) -> None:
            with self._lock:
                if err is not None:
                    self.errors.append(str(err))
                else:
                    self.delivered.append(Delivered(msg, m.partition(), m.offset()))

        while True:
            try:
                self._producer.produce(msg.topic, value=msg.value, key=msg.key, on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining or self.errors:
            raise InfrastructureError(f"{remaining} message(s) not delivered; errors: {self.errors[:3]}")

    def close(self) -> None:
        """Hand back librdkafka's threads and sockets (before the broker goes, so it logs no reconnects)."""
        with contextlib.suppress(Exception):
            self._producer.flush(5)
        close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.13
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    def mark(self) -> int:
        with self._lock:
            return len(self.delivered)

    def since(self, mark: int) -> list[Delivered]:
        with self._lock:
            return list(self.delivered[mark:])


class Stream(threading.Thread):
    """Sends messages at a steady rate on its own thread until they run out or :meth:`finish` is called."""

    def __init__(self, producer: TrackingProducer, messages: Iterable[Outgoing], rate: float) -> None:
        super().__init__(name="chaos-stream", daemon=True)
        self._producer, self._messages, self._rate = producer, iter(messages), rate
        self._finish = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for msg in self._messages:
                if self._finish.is_set():
                    break
                self._producer.send(msg)
                self.sent += 1
                ahead = self.sent / self._rate - (time.monotonic() - start)
                if ahead > 0 and self._finish.wait(ahead):
                    break
            self._producer.flush()
        except BaseException as e:  # reported by the scenario, never lost in a thread
            self.error = e

    def finish(self, timeout: float = 60.0) -> None:
        """Stop sending, wait until everything sent is confirmed by the broker."""
        self._finish.set()
        self.join(timeout)
        if self.is_alive():
            raise InfrastructureError(f"the chaos producer did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise InfrastructureError(f"the chaos producer failed: {self.error}") from self.error


def scoring_child(children: Iterable[psutil.Process]) -> psutil.Process | None:
    """The SPC agent's scoring process among a worker's children (a multiprocessing spawn child)."""
    for child in children:
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            return child
    return None


def scoring_children(children: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Every agent's scoring process among a worker's children: SPC and signals each score in their own."""
    return [c for c in children if scoring_child([c]) is not None]


# --------------------------------------------------------------------------------------------
# Models, events and poison


def train_models(database_url: str, model_dir: Path, modalities: set[str], seed: int = 0,
                 spc_detector: str = SPC_DETECTOR) -> dict[str, str]:
    """Register one model per modality the chosen scenarios need; returns their versions."""
    from linewatch.detectors.bundle import Scope
    from linewatch.signals.framing import training_frames
    from linewatch.simulation.frames import render_batch
    from linewatch.simulation.signals import simulate_signals
    from linewatch.simulation.spc import simulate_spc
    from linewatch.training import train_and_register

    versions: dict[str, str] = {}
    if "spc" in modalities:
        normal = simulate_spc(n_parts=5000, seed=seed + 11, fault_fraction=0.0)
        bundle, _ = train_and_register(normal.X, feature_names=normal.feature_names, database_url=database_url,
                                       model_dir=model_dir, detector=spc_detector, target_far=0.01, seed=seed)
        versions["spc"] = bundle.version
    if "signals" in modalities:
        healthy = simulate_signals(n_machines=1, duration_s=4 * 3600.0, snapshot_interval_s=SIGNAL_SNAPSHOT_S,
                                   faults=[], seed=seed + 21, **SIGNAL_RATES)
        frames = training_frames(healthy.signal_messages(known_good_only=True))
        bundle, _ = train_and_register(frames.X, modality="signals", **frames.provenance(), database_url=database_url,
                                       model_dir=model_dir, detector="dynamic_pca", detector_params={"lags": 1},
                                       target_far=0.01, seed=seed)
        versions["signals"] = bundle.version
    if "frames" in modalities:
        good = render_batch(FRAMES_SKU, n=40, size=FRAME_SIZE, seed=seed)[0]
        bundle, _ = train_and_register(good, modality="frames", scope=Scope(sku=FRAMES_SKU), database_url=database_url,
                                       model_dir=model_dir, target_far=0.5, calibration_fraction=0.6,
                                       detector_params={"image_size": FRAME_SIZE}, seed=seed)
        versions["frames"] = bundle.version
    return versions


def spc_events(assets: Sequence[str], n: int, seed: int, chunk: int = 1000) -> Iterator[Outgoing]:
    """Up to ``n`` known-good parts spread over ``assets``, one a second of event time ending now.

    Simulated ``chunk`` parts at a time as the stream pulls them, so a long stream costs nothing
    up front.
    """
    from linewatch.simulation.spc import simulate_spc

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n)
    for k in range(0, n, chunk):
        sim = simulate_spc(n_parts=min(chunk, n - k), seed=seed * 1000 + k, assets=tuple(assets),
                           fault_fraction=0.0, start=start + timedelta(seconds=k))
        for rec in sim.records():
            rec = rec.model_copy(update={"part_id": f"{rec.part_id}-{k // chunk}"})
            yield Outgoing(SPC.name, rec.asset_id.encode(), encode(rec), "spc", str(rec.event_id))


def signal_events(asset: str, n_snapshots: int, seed: int) -> list[Outgoing]:
    from linewatch.producers.signals import encode_window
    from linewatch.signals.windows import SensorWindow, signal_meta_for
    from linewatch.simulation.signals import simulate_signals

    start = float(int(time.time()) - int(n_snapshots * SIGNAL_SNAPSHOT_S) - 3600)
    sim = simulate_signals(n_machines=1, duration_s=n_snapshots * SIGNAL_SNAPSHOT_S,
                           snapshot_interval_s=SIGNAL_SNAPSHOT_S, faults=[], seed=seed, start=start, **SIGNAL_RATES)
    out = []
    for w in sim.sensor_windows():
        window = SensorWindow(asset, w.sensor, w.start, w.sample_rate_hz, w.samples)
        key, value = encode_window(window)
        out.append(Outgoing(SIGNALS.name, key, value, "signals", str(signal_meta_for(window).event_id)))
    return out


def frame_events(asset: str, camera: str, sku: str, n: int, seed: int) -> list[Outgoing]:
    from linewatch.producers.frames import encode_frame, simulated_camera

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n + 60)
    out = []
    for fr in simulated_camera(sku, asset_id=asset, camera=camera, n=n, size=FRAME_SIZE, seed=seed,
                               defect_rate=0.0, start=start):
        meta = FrameMeta(asset_id=fr.asset_id, camera=fr.camera, sku=fr.sku, part_id=fr.part_id, ts=fr.ts,
                         encoding="png", width=FRAME_SIZE, height=FRAME_SIZE, channels=3)
        out.append(Outgoing(FRAMES.name, asset.encode(), encode_frame(fr, "png"), "frames", str(meta.event_id)))
    return out


def _raw_envelope(header: bytes, payload: bytes) -> bytes:
    return struct.pack(">2sBI", ENVELOPE_MAGIC, ENVELOPE_VERSION, len(header)) + header + payload


def poison_messages(run: str, *, spc_asset: str, signal_asset: str, frame_asset: str, seed: int = 0
                    ) -> tuple[list[Outgoing], list[Outgoing]]:
    """``(poison, valid)``: one message of each kind of bad input per modality, and valid edge cases.

    Every poison message is distinct from every other run's (the run id is inside), so the
    dead-letter table cannot mistake it for a redelivery of an earlier one. The valid edge cases
    (a record padded to just under the JSON limit, a frame of a SKU with no model) must be stored.
    """
    rng = random.Random(f"{seed}-{run}")
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    iso = now.isoformat().replace("+00:00", "Z")
    tag = run.encode()

    def rec(i: int, **fields: Any) -> dict[str, Any]:
        return {"asset_id": spc_asset, "part_id": f"poison-{run}-{i}", "ts": iso, "values": {"length_mm": 120.0},
                **fields}

    def js(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def spc(name: str, value: bytes) -> Outgoing:
        return Outgoing(SPC.name, spc_asset.encode(), value, poison=f"spc: {name}")

    near = js(rec(7, pad=""))
    near = near[:-2] + b"x" * (MAX_JSON_BYTES - len(near) - 16) + near[-2:]
    poison = [
        spc("random bytes", b"\xff\xfe" + rng.randbytes(400) + tag),
        spc("true for a number", js(rec(1, values={"length_mm": True}))),
        spc('"12.5" for a number', js(rec(2, values={"length_mm": "12.5"}))),
        spc("integer timestamp", js(rec(3, ts=int(now.timestamp())))),
        spc("NUL inside a JSON key (escaped)", js(rec(4, values={"length\u0000mm": 120.0}))),
        spc("NUL byte inside a JSON key (raw)", js(rec(5)).replace(b'"length_mm"', b'"length\x00mm"')),
        spc(f"just under the {MAX_JSON_BYTES // 1024} KiB limit, unknown field", near),
        spc("over the limit (~900 KB)", js(rec(8, pad="x" * 900_000))),
    ]
    assert len(near) < MAX_JSON_BYTES, len(near)

    sig_meta = SignalMeta(asset_id=signal_asset, sensor=f"poison-{run}", kind="vibration", unit="g", start=now,
                          sample_rate_hz=SIGNAL_RATES["vibration_rate"], n_samples=2000)
    samples = np.random.default_rng(seed).standard_normal(2000).astype("<f4")
    nan_samples = samples.copy()
    nan_samples[[10, 500, 1999]] = np.nan
    bad_header = json.loads(sig_meta.model_dump_json())
    bad_header["sample_rate_hz"] = "2000"

    def sig(name: str, value: bytes) -> Outgoing:
        return Outgoing(SIGNALS.name, signal_asset.encode(), value, poison=f"signals: {name}")

    poison += [
        sig("random bytes", b"\x00\x01" + rng.randbytes(300) + tag),
        sig("header announces more samples than sent",
            encode_envelope(sig_meta.model_copy(update={"start": now + timedelta(seconds=1)}),
                            samples[:1000].tobytes())),
        sig("NaN samples", encode_envelope(sig_meta.model_copy(update={"start": now + timedelta(seconds=2)}),
                                           nan_samples.tobytes())),
        sig('"2000" for a number in the header', _raw_envelope(js(bad_header), samples.tobytes())),
    ]

    from linewatch.producers.frames import CameraFrame, encode_frame
    from linewatch.simulation.frames import render_batch

    image = render_batch(FRAMES_SKU, n=1, size=FRAME_SIZE, seed=seed + 99)[0][0]

    def frame_meta(i: int, sku: str = FRAMES_SKU) -> FrameMeta:
        return FrameMeta(asset_id=frame_asset, camera="cam-1", sku=sku, part_id=f"poison-{run}-{i}",
                         ts=now + timedelta(seconds=i), encoding="png", width=FRAME_SIZE, height=FRAME_SIZE,
                         channels=3)

    good = encode_frame(CameraFrame(frame_asset, "cam-1", FRAMES_SKU, f"poison-{run}-20", now, image), "png")
    head_len = struct.unpack_from(">I", good, 3)[0]
    bad_png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(600) + tag

    def frm(name: str, value: bytes) -> Outgoing:
        return Outgoing(FRAMES.name, frame_asset.encode(), value, poison=f"frames: {name}")

    poison += [
        frm("random bytes", b"\x00\x02" + rng.randbytes(500) + tag),
        frm("bad PNG bytes in a valid envelope", encode_envelope(frame_meta(21), bad_png)),
        frm("envelope truncated in its header", good[: 7 + head_len - 20]),
        frm("envelope truncated in its image", good[: 7 + head_len + (len(good) - 7 - head_len) // 2]),
        frm("corrupt frame of a SKU with no model", encode_envelope(frame_meta(22, UNMODELLED_SKU), bad_png)),
    ]

    from linewatch.simulation.spc import simulate_spc

    part = simulate_spc(n_parts=1, seed=seed, assets=(spc_asset,), fault_fraction=0.0, start=now).records()[0]
    valid_spc = part.model_copy(update={"part_id": f"near-limit-{run}"})
    padded = encode(valid_spc)
    padded = b"{" + b" " * (MAX_JSON_BYTES - len(padded) - 16) + padded[1:]
    unmodelled = CameraFrame(frame_asset, "cam-2", UNMODELLED_SKU, f"poison-{run}-23", now + timedelta(seconds=23),
                             image)
    unmodelled_meta = frame_meta(23, UNMODELLED_SKU).model_copy(update={"camera": "cam-2"})
    valid = [
        Outgoing(SPC.name, spc_asset.encode(), padded, "spc", str(valid_spc.event_id)),
        Outgoing(FRAMES.name, frame_asset.encode(), encode_frame(unmodelled, "png"), "frames",
                 str(unmodelled_meta.event_id)),
    ]
    return poison, valid


def interleave(groups: Sequence[Sequence[Outgoing]], seed: int) -> list[Outgoing]:
    """All messages of ``groups`` in one random order that keeps each group's own order."""
    rng = random.Random(seed)
    queues = [list(g)[::-1] for g in groups if g]
    out: list[Outgoing] = []
    while queues:
        weights = [len(q) for q in queues]
        q = rng.choices(queues, weights=weights)[0]
        out.append(q.pop())
        queues = [q for q in queues if q]
    return out


# --------------------------------------------------------------------------------------------
# Verification


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, connect_timeout=3, autocommit=True)


def stored_counts(url: str, assets: Sequence[str], expected: dict[str, set[str]]) -> dict[str, int]:
    """Distinct expected events stored, per modality.

    SPC: a ``spc_measurements`` row and a ``scores`` row; signals: a ``signal_features`` row;
    frames: a ``scores`` row or an ``unscored_frames`` row.
    """
    where = "asset_id = ANY(%(assets)s) AND event_id = ANY(%(ids)s)"
    queries = {
        "spc": f"""SELECT count(*) FROM (SELECT event_id FROM spc_measurements WHERE {where}
                   INTERSECT SELECT event_id FROM scores WHERE {where} AND modality = 'spc') x""",
        "signals": f"SELECT count(DISTINCT event_id) FROM signal_features WHERE {where}",
        "frames": f"""SELECT count(*) FROM (SELECT event_id FROM scores WHERE {where} AND modality = 'frames'
                      UNION SELECT event_id FROM unscored_frames WHERE {where}) x""",
    }
    out = dict.fromkeys(expected, 0)
    with _connect(url) as conn:
        for modality, ids in expected.items():
            if ids:
                params = {"assets": list(assets), "ids": [uuid.UUID(i) for i in ids]}
                out[modality] = conn.execute(queries[modality], params).fetchone()[0]
    return out


def deadletters_at(url: str, delivered: Sequence[Delivered]) -> dict[tuple[str, int, int], tuple[int, str, str]]:
    """Dead-letter rows at the offsets of ``delivered``: ``(topic, partition, offset) -> (rows, reason, md5)``."""
    if not delivered:
        return {}
    params = {"topics": [d.message.topic for d in delivered], "parts": [d.partition for d in delivered],
              "offs": [d.offset for d in delivered]}
    with _connect(url) as conn:
        rows = conn.execute(
            """SELECT d.source_topic, d.partition, d."offset", count(*), min(d.reason), min(d.payload_md5)
               FROM deadletters d
               JOIN (SELECT DISTINCT * FROM unnest(%(topics)s::text[], %(parts)s::int[], %(offs)s::bigint[]))
                    AS o(topic, part, off)
                 ON d.source_topic = o.topic AND d.partition = o.part AND d."offset" = o.off
               GROUP BY 1, 2, 3""", params).fetchall()
    return {(t, p, o): (n, reason, md5) for t, p, o, n, reason, md5 in rows}


#: Natural key of every table a scenario's events land in (each is the table's primary key).
NATURAL_KEYS: dict[str, str] = {
    "scores": "ts, event_id, detector",
    "spc_measurements": "ts, event_id, characteristic",
    "signal_features": "ts, event_id",
    "unscored_frames": "ts, event_id",
    "frame_heatmaps": "ts, event_id",
}


def _deadletter_rows(url: str, delivered: Sequence[Delivered]) -> int:
    return sum(n for n, _, _ in deadletters_at(url, delivered).values())


def duplicate_rows(url: str, assets: Sequence[str], delivered: Sequence[Delivered]) -> dict[str, int]:
    """Rows beyond one per natural key, per table (the keys are primary keys: 0 by construction).

    Dead letters count per source offset: one message set aside twice (with different bytes
    recorded, say) would be two rows for one message.
    """
    out = {}
    with _connect(url) as conn:
        for table, key in NATURAL_KEYS.items():
            out[table] = int(conn.execute(
                f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {table} "
                f"WHERE asset_id = ANY(%s) GROUP BY {key} HAVING count(*) > 1) d", (list(assets),)).fetchone()[0])
    out["deadletters"] = sum(n - 1 for n, _, _ in deadletters_at(url, delivered).values())
    return out


def unexpected_rows(url: str, assets: Sequence[str], expected: set[str]) -> int:
    """Events stored for the scenario's assets that it never sent as valid (a poison message stored)."""
    with _connect(url) as conn:
        rows = conn.execute(
            """SELECT DISTINCT event_id::text FROM spc_measurements WHERE asset_id = ANY(%(a)s)
               UNION SELECT DISTINCT event_id::text FROM signal_features WHERE asset_id = ANY(%(a)s)
               UNION SELECT DISTINCT event_id::text FROM unscored_frames WHERE asset_id = ANY(%(a)s)
               UNION SELECT DISTINCT event_id::text FROM scores
                     WHERE asset_id = ANY(%(a)s) AND modality <> 'signals'""",
            {"a": list(assets)}).fetchall()
    return sum(1 for (e,) in rows if e not in expected)


def acknowledged(bootstrap: str, group: str, delivered: Sequence[Delivered]) -> bool:
    """Whether the worker group has committed offsets past every message in ``delivered``."""
    from confluent_kafka import TopicPartition

    last: dict[tuple[str, int], int] = {}
    for d in delivered:
        key = (d.message.topic, d.partition)
        last[key] = max(last.get(key, -1), d.offset)
    if not last:
        return True
    consumer = make_consumer(bootstrap, group)
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in last], timeout=10)
    except Exception:  # the broker is busy or the group is rebalancing: not yet
        return False
    finally:
        consumer.close()
    return all(tp.offset > last[(tp.topic, tp.partition)] for tp in committed)


def score_messages(bootstrap: str, assets_of: dict[str, str]) -> dict[str, Counter[str]]:
    """Per scenario (looked up by asset), how many ``scores`` messages each dedup key has."""
    out: dict[str, Counter[str]] = {}
    for msg in read_to_end(bootstrap, SCORES.name, group_id=f"chaos-verify-{uuid.uuid4().hex[:8]}"):
        try:
            asset = json.loads(msg.value())["asset_id"]
        except (ValueError, KeyError, TypeError):
            continue
        scenario = assets_of.get(asset)
        if scenario is None:
            continue
        key = dict(msg.headers() or []).get(DEDUP_HEADER, b"").decode()
        out.setdefault(scenario, Counter())[key] += 1
    return out


def score_keys(url: str, assets: Sequence[str]) -> set[str]:
    with _connect(url) as conn:
        rows = conn.execute("SELECT event_id::text || '/' || detector || '/' || model_version FROM scores "
                            "WHERE asset_id = ANY(%s)", (list(assets),)).fetchall()
    return {r[0] for r in rows}


def count_markers(logs: Iterable[Path]) -> dict[str, int]:
    counts = dict.fromkeys(LOG_MARKERS, 0)
    for log in logs:
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for name, marker in LOG_MARKERS.items():
            counts[name] += text.count(marker)
    return counts


# --------------------------------------------------------------------------------------------
# Scenarios


class Aborted(Exception):
    """A scenario could not go on (a worker that never became ready, a producer that failed)."""


@dataclass
class Run:
    """What every scenario of one run shares: the stack, the producer, the models, the parameters."""

    settings: Settings
    stack: Stack
    producer: TrackingProducer
    params: Params
    run_id: str
    group: str
    log_dir: Path
    work_dir: Path
    reporter: Reporter
    seed: int = 0

    def worker_env(self, **extra: str) -> dict[str, str]:
        # Nothing of the caller's own linewatch settings (a config file, Kafka TLS, another URL):
        # the workers run against this run's embedded services with the settings below only.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
        env.update({
            "LINEWATCH_BROKER_URL": self.stack.bootstrap,
            "LINEWATCH_DATABASE_URL": self.stack.database_url,
            "LINEWATCH_APP_ID": self.group,
            "LINEWATCH_MODEL_REFRESH_S": "2",
            "LINEWATCH_BATCH_WITHIN_S": "0.1",
            "LINEWATCH_SESSION_TIMEOUT_S": "3",
            "LINEWATCH_HEALTH_PORT": "0",  # two workers on one host must not race for one port
            "LINEWATCH_ISOLATE_SCORING": "true",
            "LINEWATCH_TOPIC_PARTITIONS": str(self.settings.topic_partitions),
        })
        env.update(extra)
        return env


class Scenario:
    """One scenario's bookkeeping: its assets, its messages, its faults, its supervisor and its result."""

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name
        self.prefix = f"chaos-{run.run_id}-{name}"
        self.assets: list[str] = []
        self.result = ScenarioResult(name, DESCRIPTIONS[name])
        self.mark = run.producer.mark()
        self.supervisor: Supervisor | None = None
        self.stream: Stream | None = None
        self.t0 = time.monotonic()
        self.last_fault_end: float | None = None

    def asset(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.assets.append(name)
        self.result.assets.append(name)
        return name

    # -- the moving parts

    def supervise(self, slots: int = 1, **env: str) -> Supervisor:
        self.supervisor = Supervisor(self.name, env=self.run.worker_env(**env), log_dir=self.run.log_dir,
                                     data_dir=self.run.work_dir / "workers", slots=slots,
                                     restart=CHAOS_RESTARTS).start()
        for slot in range(slots):
            self.step(f"starting worker {slot}")
            self.supervisor.wait_ready(slot)
        return self.supervisor

    def stream_spc(self, n_max: int) -> Stream:
        assets = [self.asset(f"press-{i}") for i in range(4)]  # keyed by asset: spread over partitions
        events = spc_events(assets, n_max, seed=self.run.seed + SCENARIOS.index(self.name))
        self.stream = Stream(self.run.producer, events, self.run.params.spc_rate)
        self.stream.start()
        return self.stream

    def step(self, text: str) -> None:
        self.run.reporter.step(self.name, text)

    def fault(self, what: str, *, start: float | None = None, end: float | None = None) -> None:
        end = time.monotonic() if end is None else end
        start = end if start is None else start
        self.result.faults.append({"what": what, "at_s": round(start - self.t0, 2),
                                   "duration_s": round(end - start, 2)})
        self.last_fault_end = end
        self.step(what)

    # -- what landed

    def delivered(self) -> list[Delivered]:
        return self.run.producer.since(self.mark)

    def expected(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {"spc": set(), "signals": set(), "frames": set()}
        for d in self.delivered():
            if d.message.modality is not None:
                out[d.message.modality].add(d.message.event_id)  # type: ignore[arg-type]
        return out

    def sent_valid(self) -> int:
        return sum(len(v) for v in self.expected().values())

    def stored(self) -> int | None:
        try:
            return sum(stored_counts(self.run.stack.database_url, self.assets, self.expected()).values())
        except psycopg.OperationalError:
            return None  # the database is down: that is the point of some scenarios

    def check_alive(self) -> None:
        if self.stream is not None and self.stream.error is not None:
            raise Aborted(f"the producer failed: {self.stream.error}")
        if self.supervisor is not None and self.supervisor.given_up():
            raise Aborted(f"the worker kept exiting; the supervisor gave up after {MAX_RESTARTS} restarts")

    def report_counts(self, stored: int | None) -> None:
        if stored is not None:
            self.run.reporter.counts(self.name, self.sent_valid(), stored)

    def in_flight(self, timeout: float = IN_FLIGHT_TIMEOUT_S) -> str | None:
        """Wait until a worker is in the middle of an SPC batch; returns its span, or None if none was seen.

        The runtime marks a batch's offsets in ``processing_attempts`` before scoring it and clears
        them in the transaction that stores its rows, so a fresh row there is a batch in flight: a
        kill now is the kill that matters (between batches Kafka merely redelivers what was not
        committed yet).
        """
        deadline = time.monotonic() + timeout
        try:
            with _connect(self.run.stack.database_url) as conn:
                while time.monotonic() < deadline:
                    row = conn.execute(
                        """SELECT "partition", first_offset, last_offset FROM processing_attempts
                           WHERE topic = %s AND last_attempt_at > now() - interval '1 second'
                           ORDER BY last_attempt_at DESC LIMIT 1""", (SPC.name,)).fetchone()
                    if row is not None:
                        return f"{SPC.name}[{row[0]}]@{row[1]}-{row[2]}"
                    time.sleep(0.002)
        except psycopg.Error:  # a schema without processing_attempts: kill whenever
            return None
        return None

    def kill_mid_batch(self, what: str, kill: Callable[[], Any]) -> Any:
        """``kill()`` as soon as a batch is in flight (or after :data:`IN_FLIGHT_TIMEOUT_S`); records the fault."""
        span = self.in_flight()
        out = kill()
        self.fault(f"{what}, batch in flight at {span}" if span else f"{what}, between batches")
        return out

    def settle(self, seconds: float, *, after: int) -> None:
        """Let the worker work: ``seconds`` of stream, and its stored count past ``after``."""
        deadline = time.monotonic() + seconds
        give_up = deadline + WORKER_READY_TIMEOUT_S
        while True:
            self.check_alive()
            stored = self.stored()
            self.report_counts(stored)
            if time.monotonic() >= deadline and stored is not None and stored > after:
                return
            if time.monotonic() > give_up:
                raise Aborted(f"the worker stored nothing new within {WORKER_READY_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)

    def hold(self, seconds: float) -> None:
        """A deliberate outage: ``seconds`` of waiting, watching the stream and the supervisor."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_alive()
            self.run.reporter.counts(self.name, self.sent_valid(), None)
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def wind_down(self) -> int:
        """The end of every fault scenario: let the worker catch up, send the rest, wait for it all."""
        self.settle(self.run.params.tail_s, after=0)
        self.finish_stream()
        self.drain()
        return 0

    def finish_stream(self) -> None:
        if self.stream is not None:
            self.step("last messages sent")
            self.stream.finish()

    def drain(self, expected_deadletters: int = 0) -> None:
        """Wait until every valid event is stored and every expected dead letter is there."""
        self.step("waiting for every event to land")
        deadline = time.monotonic() + self.run.params.drain_timeout_s
        url = self.run.stack.database_url
        reached: float | None = None
        last: tuple[int | None, int] = (None, -1)
        next_ack_check = time.monotonic() + ACK_CHECK_S
        while time.monotonic() < deadline:
            self.check_alive()
            stored, dead = self.stored(), -1
            self.report_counts(stored)
            with contextlib.suppress(psycopg.OperationalError):
                dead = _deadletter_rows(url, self.delivered())
            if stored is not None and stored >= self.sent_valid():
                reached = reached or time.monotonic()
                if dead >= expected_deadletters:
                    break
            # Once the group has committed offsets past every message, nothing more will land:
            # counts that stand still then are final, however long we would wait.
            if time.monotonic() >= next_ack_check:
                if (stored, dead) == last and stored is not None and \
                        acknowledged(self.run.stack.bootstrap, self.run.group, self.delivered()):
                    self.result.notes.append("the worker acknowledged every message but not every event landed")
                    break
                last, next_ack_check = (stored, dead), time.monotonic() + ACK_CHECK_S
            time.sleep(POLL_S)
        else:
            self.result.notes.append(f"not every event landed within {self.run.params.drain_timeout_s:.0f} s")
        if reached is not None and self.last_fault_end is not None:
            self.result.recovery_s = round(max(0.0, reached - self.last_fault_end), 2)
        # The worker acknowledges what it stored by committing offsets: wait for that too, so the
        # next scenario's worker starts where this one ended and nothing is redelivered across them.
        ack_deadline = time.monotonic() + 30.0
        while not acknowledged(self.run.stack.bootstrap, self.run.group, self.delivered()):
            if time.monotonic() > ack_deadline:
                self.result.notes.append("the worker group had not committed every offset 30 s after the last row")
                break
            time.sleep(0.5)

    def stop(self) -> None:
        if self.stream is not None and self.stream.is_alive():
            with contextlib.suppress(InfrastructureError):
                self.stream.finish()
        if self.supervisor is not None:
            self.supervisor.stop()

    def verify(self, expected_deadletters: int) -> None:
        r, url = self.result, self.run.stack.database_url
        expected = self.expected()
        delivered = self.delivered()
        counts = stored_counts(url, self.assets, expected)
        r.by_modality = {m: {"produced": len(ids), "stored": counts[m]} for m, ids in expected.items() if ids}
        r.produced = sum(len(ids) for ids in expected.values())
        r.stored = sum(counts.values())
        r.duplicate_rows_by_table = duplicate_rows(url, self.assets, delivered)
        r.duplicate_rows = sum(r.duplicate_rows_by_table.values())
        r.deadletters = _deadletter_rows(url, delivered)
        r.expected_deadletters = expected_deadletters
        extra = unexpected_rows(url, self.assets, set().union(*expected.values()))
        r.checks["no rows for events never sent"] = extra == 0
        if extra:
            r.notes.append(f"{extra} stored event(s) of this scenario's assets were never sent as valid events")
        if self.supervisor is not None:
            r.exit_codes = [e.returncode for e in self.supervisor.exits]
            r.worker_exits = len(r.exit_codes)
            r.logs = [str(p) for p in self.supervisor.logs()]
            r.log_markers = count_markers(self.supervisor.logs())
            if self.supervisor.left_behind:
                r.notes.append(f"processes outlived their worker: {'; '.join(self.supervisor.left_behind)}")
            r.checks["no process left behind"] = not self.supervisor.left_behind
        valid = [d for d in delivered if d.message.modality is not None]
        set_aside = deadletters_at(url, valid)
        if set_aside:
            reasons = Counter(reason[:120] for _, reason, _ in set_aside.values())
            r.notes.append(f"{len(set_aside)} valid message(s) dead-lettered: "
                           + "; ".join(f"{n} x {reason!r}" for reason, n in reasons.most_common(3)))


def _worker_kill(sc: Scenario) -> int:
    p = sc.run.params
    sup = sc.supervise()
    sc.stream_spc(int(p.spc_rate * 600))
    for k in range(1, p.kills + 1):
        sc.settle(p.settle_s, after=sc.stored() or 0)
        inc = sc.kill_mid_batch(f"SIGKILL worker ({k}/{p.kills})", lambda: sup.signal(signal.SIGKILL))
        sup.wait_ready(after=inc)
        sc.step(f"worker restarted ({k}/{p.kills})")
    return sc.wind_down()


def _child_kill(sc: Scenario) -> int:
    p = sc.run.params
    sup = sc.supervise()
    sc.stream_spc(int(p.spc_rate * 600))
    sc.settle(p.settle_s, after=0)
    deadline = time.monotonic() + 30
    child = scoring_child(sup.children())
    while child is None and time.monotonic() < deadline:
        time.sleep(0.2)
        child = scoring_child(sup.children())
    sc.result.checks["scoring child found"] = child is not None
    if child is None:
        raise Aborted("the worker has no scoring child process (is LINEWATCH_ISOLATE_SCORING off?)")
    inc = sup.incarnation()
    # The spawn children look alike (SPC's and the signals agent's): kill each, so the SPC one is hit.
    victims = scoring_children(sup.children())
    pids = ", ".join(str(v.pid) for v in victims)

    def kill() -> None:
        for v in victims:
            with contextlib.suppress(psutil.NoSuchProcess):  # gone already: died with its worker
                v.send_signal(signal.SIGKILL)

    sc.kill_mid_batch(f"SIGKILL scoring children (pid {pids})", kill)
    ready = None
    with contextlib.suppress(InfrastructureError):
        ready = sup.wait_ready(after=inc, timeout=60)
    if ready is None:
        sc.result.notes.append("the worker did not restart within 60 s of losing its scoring child")
    return sc.wind_down()


def _db_restart(sc: Scenario) -> int:
    p = sc.run.params
    pg = sc.run.stack.postgres
    assert pg is not None
    sc.supervise()
    sc.stream_spc(int(p.spc_rate * 600))
    sc.settle(p.settle_s, after=0)
    start = time.monotonic()
    sc.step("stopping PostgreSQL")
    pg.stop()
    try:
        sc.hold(p.db_outage_s)
    finally:
        sc.step("starting PostgreSQL again")
        pg.start()
    sc.fault(f"PostgreSQL down for {time.monotonic() - start:.1f} s", start=start)
    return sc.wind_down()


def _postgres_processes(pg: Any) -> list[psutil.Process]:
    root = psutil.Process(pg.proc.pid)
    return [root, *root.children(recursive=True)]


def _db_hang(sc: Scenario) -> int:
    p = sc.run.params
    pg = sc.run.stack.postgres
    assert pg is not None and pg.proc is not None
    sup = sc.supervise(LINEWATCH_DB_RETRY_TOTAL_S=f"{p.db_hang_retry_s:g}")
    sc.stream_spc(int(p.spc_rate * 600))
    sc.settle(p.settle_s, after=0)
    exits_before = len(sup.exits)
    logs_before = {str(path): path.stat().st_size for path in sup.logs() if path.exists()}
    procs = _postgres_processes(pg)
    start = time.monotonic()
    try:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.suspend()
        sc.step(f"SIGSTOPped {len(procs)} PostgreSQL processes")
        sc.hold(p.db_hang_s)
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.resume()
    sc.fault(f"PostgreSQL stopped (SIGSTOP) for {time.monotonic() - start:.1f} s", start=start)
    exited = len(sup.exits) > exits_before
    # What the worker logged during the hang (only the new part of logs that existed before it).
    during = ""
    for path in sup.logs():
        with contextlib.suppress(OSError):
            during += path.read_bytes()[logs_before.get(str(path), 0):].decode(errors="replace")
    noticed = exited or LOG_MARKERS["db_hung"] in during or LOG_MARKERS["db_retry"] in during
    sc.result.checks["worker noticed the hang"] = noticed
    sc.result.notes.append("the worker exited during the hang" if exited else
                           "the worker retried and stayed up through the hang" if noticed else
                           "the worker neither exited nor logged anything during the hang")
    return sc.wind_down()


def _two_workers(sc: Scenario) -> int:
    p = sc.run.params
    sup = sc.supervise(slots=2)
    sc.stream_spc(int(p.spc_rate * 600))
    sc.settle(p.settle_s, after=0)
    inc = sc.kill_mid_batch("SIGKILL worker 0", lambda: sup.signal(signal.SIGKILL, slot=0))
    sup.wait_ready(0, after=inc)
    sc.step("worker 0 restarted")
    sc.settle(p.settle_s, after=sc.stored() or 0)
    inc = sup.signal(signal.SIGTERM, slot=1)
    sc.fault("SIGTERM worker 1")
    sup.wait_ready(1, after=inc)
    sc.step("worker 1 restarted")
    return sc.wind_down()


def _poison(sc: Scenario) -> int:
    p = sc.run.params
    spc_asset, signal_asset, frame_asset = sc.asset("press"), sc.asset("motor"), sc.asset("camera")
    poison, extras = poison_messages(sc.run.run_id, spc_asset=spc_asset, signal_asset=signal_asset,
                                     frame_asset=frame_asset, seed=sc.run.seed)
    spc = list(spc_events([spc_asset], p.poison_spc, seed=sc.run.seed + 5))
    signals = signal_events(signal_asset, p.poison_snapshots, seed=sc.run.seed + 6)
    frames = frame_events(frame_asset, "cam-1", FRAMES_SKU, p.poison_frames, seed=sc.run.seed + 7)
    messages = interleave([spc, signals, frames, poison, extras], seed=sc.run.seed)
    sc.supervise()
    sc.stream = Stream(sc.run.producer, messages, p.poison_rate)
    sc.stream.start()
    sc.step(f"streaming {len(messages)} messages, {len(poison)} of them poison")
    sc.stream.join(len(messages) / p.poison_rate + 60)
    sc.finish_stream()
    sc.drain(expected_deadletters=len(poison))
    _check_poison(sc)
    return len(poison)


def _check_poison(sc: Scenario) -> None:
    poisoned = [d for d in sc.delivered() if d.message.poison]
    rows = deadletters_at(sc.run.stack.database_url, poisoned)
    ok = True
    for d in poisoned:
        n, reason, md5 = rows.get((d.message.topic, d.partition, d.offset), (0, "", ""))
        same = md5 == hashlib.md5(d.message.value).hexdigest()  # the table's own key column
        ok = ok and n == 1 and same
        sc.result.poison.append({"poison": d.message.poison, "bytes": len(d.message.value),
                                 "origin": f"{d.message.topic}[{d.partition}]@{d.offset}", "deadletters": n,
                                 "payload_kept": same, "reason": reason[:160]})
    sc.result.checks["every poison message is exactly one dead letter, bytes kept"] = ok


SCENARIO_FUNCS: dict[str, Callable[[Scenario], int]] = {
    "worker-kill": _worker_kill,
    "child-kill": _child_kill,
    "db-restart": _db_restart,
    "db-hang": _db_hang,
    "two-workers": _two_workers,
    "poison": _poison,
}
#: Which models each scenario needs registered before its worker starts.
NEEDS: dict[str, set[str]] = {name: {"spc"} for name in SCENARIOS} | {"poison": {"spc", "signals", "frames"}}


def resolve_scenarios(names: Sequence[str]) -> list[str]:
    """``all`` or scenario names (in the given order, each once); unknown names are a ConfigError."""
    out: list[str] = []
    for name in names or ["all"]:
        for n in (SCENARIOS if name == "all" else [name]):
            if n not in SCENARIOS:
                raise ConfigError(f"unknown chaos scenario {n!r}; use one of {', '.join(SCENARIOS)} or all")
            if n not in out:
                out.append(n)
    return out


def run_chaos(settings: Settings, scenarios: Sequence[str] = ("all",), *, quick: bool = False,
              reporter: Reporter | None = None, log_dir: Path | None = None, seed: int = 0,
              params: Params | None = None) -> ChaosReport:
    """Run ``scenarios`` on one embedded stack of their own and report what became of every event.

    The stack's data lives in a temporary directory removed at the end; worker, broker and
    PostgreSQL logs are kept in ``log_dir`` (default ``<data_dir>/chaos/<run id>``). Needs the
    embedded services: the scenarios stop, hang and restart the database. ``params`` replaces
    the sizes ``quick`` picks (:meth:`Params.for_run`), for a test that needs fewer events (a
    smaller backlog behind each kill) but the same faults; the CLI never passes it.
    """
    names = resolve_scenarios(scenarios)
    if not (settings.embedded_broker and settings.embedded_database):
        raise ConfigError("linewatch chaos breaks the broker and database it runs, so it starts embedded ones; "
                          "unset LINEWATCH_BROKER_URL and LINEWATCH_DATABASE_URL for it")
    reporter = reporter or NullReporter()
    params = params or Params.for_run(quick)
    run_id = uuid.uuid4().hex[:8]
    log_dir = log_dir or settings.data_dir / "chaos" / run_id
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results: list[ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix="linewatch-chaos-") as tmp_dir:
        work = Path(tmp_dir)
        stack_settings = settings.model_copy(update={"data_dir": work})
        stack = Stack(stack_settings, fsync=True)
        try:
            with stack:
                ensure_topics(stack.bootstrap, partitions=settings.topic_partitions)
                migrate(stack.database_url)
                needed = set().union(*(NEEDS[n] for n in names))
                reporter.step("setup", f"training models: {', '.join(sorted(needed))}")
                train_models(stack.database_url, work / "models", needed, seed=seed,
                             spc_detector=params.spc_detector)
                producer = TrackingProducer(stack.bootstrap)
                run = Run(settings, stack, producer, params, run_id, f"linewatch-chaos-{run_id}", log_dir, work,
                          reporter, seed)
                try:
                    for name in names:
                        results.append(_run_one(run, name))
                    reporter.step("verify", "counting messages on the scores topic")
                    _count_score_messages(run, results)
                finally:
                    producer.close()
        finally:
            for service in ("broker", "postgres"):
                src = work / "logs" / f"{service}.log"
                if src.exists():
                    shutil.copy(src, log_dir / f"{service}.log")
    for r in results:
        r.judge()
    return ChaosReport(run_id, quick, results, time.monotonic() - t0, str(log_dir))


def _run_one(run: Run, name: str) -> ScenarioResult:
    sc = Scenario(run, name)
    run.reporter.scenario_started(name, DESCRIPTIONS[name])
    expected_deadletters = 0
    try:
        try:
            expected_deadletters = SCENARIO_FUNCS[name](sc)
        finally:
            sc.stop()
        sc.verify(expected_deadletters)
    except (Aborted, InfrastructureError, psycopg.Error) as e:
        sc.result.error = f"{type(e).__name__}: {e}"
        with contextlib.suppress(Exception):
            sc.verify(expected_deadletters)
    sc.result.elapsed_s = round(time.monotonic() - sc.t0, 1)
    sc.result.judge()
    run.reporter.scenario_finished(sc.result)
    return sc.result


def _count_score_messages(run: Run, results: list[ScenarioResult]) -> None:
    """Messages on ``scores`` beyond the first per dedup key, and score rows with no message at all."""
    assets_of = {asset: r.scenario for r in results for asset in r.assets}
    counts = score_messages(run.stack.bootstrap, assets_of)
    for r in results:
        keys = counts.get(r.scenario, Counter())
        r.duplicate_messages = sum(n - 1 for n in keys.values())
        r.missing_messages = len(score_keys(run.stack.database_url, r.assets) - set(keys))
        if r.missing_messages:
            r.notes.append(f"{r.missing_messages} score row(s) have no message on the scores topic")
