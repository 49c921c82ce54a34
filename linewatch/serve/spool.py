"""Inspected events on their way to Kafka: a bounded on-disk spool, and the forwarder that drains it in order.

Every event the API scores is appended here before its verdict is returned (one fsync'd segment
file per scoring batch), and a background thread publishes the segments, oldest first, deleting
each only once the broker has confirmed every message in it. So a broker that is down, slow or
restarting never costs an event or delays a verdict: the spool grows while it is away and drains
when it returns. A process that stops with a full spool finds it again on start.

The spool is bounded by bytes and by events; a request that would pass either bound is refused
*before* it is scored (:meth:`Spool.reserve`), so stateful charts never see a part that would not
be published (the worker's charts and the API's would drift apart). Delivery is at least once
(a segment half-delivered before an outage is sent again); every store de-duplicates by event id.

Segment format (one file ``<seq>.seg``, written as ``.tmp`` then renamed, so a crash leaves no
half segment): ``LWSPOOL1`` | count (u32) | per event: topic, key, value (each u32 length + bytes,
key length 0xFFFFFFFF for none), header count (u16), per header name and value (u32 length + bytes)
| CRC-32 of everything before it (u32). All integers big-endian.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException

from linewatch.errors import InfrastructureError, LinewatchError
from linewatch.kafka import make_producer

log = logging.getLogger(__name__)
#: librdkafka's own lines (one per failed connection attempt while the broker is away) go here, off by
#: default: the forwarder says once that the broker is down and once that it is back.
librdkafka_log = logging.getLogger("linewatch.serve.librdkafka")
librdkafka_log.setLevel(logging.CRITICAL)

MAGIC = b"LWSPOOL1"
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_NONE = 0xFFFFFFFF
#: Segments the forwarder publishes per flush: one flush confirms many small SPC batches at once.
SEGMENTS_PER_FLUSH = 64
#: librdkafka gives up on a message after this long; the segment is then retried whole.
MESSAGE_TIMEOUT_MS = 5_000
#: Backoff between retries while the broker is away, doubling up to the maximum.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


class Undeliverable(LinewatchError):
    """librdkafka refused an event outright (e.g. larger than ``message.max.bytes``): retrying cannot help."""


class SpoolFull(LinewatchError):
    """The spool holds as much as it may: the broker has been away too long; the request is refused (503)."""


@dataclass(frozen=True)
class Event:
    """One message as it will be published: topic, key, value, headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        return len(self.value) + len(self.key or b"") + sum(len(k) + len(v) for k, v in self.headers)


def _pack(events: list[Event]) -> bytes:
    parts = [MAGIC, _U32.pack(len(events))]
    for e in events:
        topic = e.topic.encode()
        parts += [_U32.pack(len(topic)), topic]
        parts += [_U32.pack(_NONE)] if e.key is None else [_U32.pack(len(e.key)), e.key]
        parts += [_U32.pack(len(e.value)), e.value, _U16.pack(len(e.headers))]
        for name, value in e.headers:
            raw = name.encode()
            parts += [_U32.pack(len(raw)), raw, _U32.pack(len(value)), value]
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def _unpack(data: bytes) -> list[Event]:
    """The events of one segment, or ValueError when its bytes are not a whole, intact segment."""
    if len(data) < len(MAGIC) + 8 or not data.startswith(MAGIC):
        raise ValueError("not a spool segment")
    body, (crc,) = data[:-4], _U32.unpack(data[-4:])
    if zlib.crc32(body) != crc:
        raise ValueError("checksum mismatch")
    view, pos = memoryview(body), len(MAGIC)

    def chunk() -> bytes | None:
        nonlocal pos
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        if n == _NONE:
            return None
        out = bytes(view[pos:pos + n])
        pos += n
        return out

    (count,) = _U32.unpack_from(view, pos)
    pos += 4
    events = []
    for _ in range(count):
        topic, key, value = chunk(), chunk(), chunk()
        (n_headers,) = _U16.unpack_from(view, pos)
        pos += 2
        headers = tuple(((chunk() or b"").decode(), chunk() or b"") for _ in range(n_headers))
        events.append(Event((topic or b"").decode(), key, value or b"", headers))
    return events


@dataclass
class Spool:
    """A directory of segment files, bounded by ``max_bytes`` and ``max_events``; safe to share between threads."""

    directory: Path
    max_bytes: int
    max_events: int
    fsync: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _added: threading.Condition = field(init=False, repr=False)
    _segments: dict[Path, tuple[int, int]] = field(default_factory=dict, repr=False)  # path -> (events, bytes)
    _reserved: list[int] = field(default_factory=lambda: [0, 0], repr=False)
    _totals: list[int] = field(default_factory=lambda: [0, 0], repr=False)  # events, bytes in _segments
    _next_seq: int = 0

    def __post_init__(self) -> None:
        self._added = threading.Condition(self._lock)
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob("*.tmp"):  # a write that never completed: its request got no verdict
            tmp.unlink()
        for path in sorted(self.directory.glob("*.seg")):
            try:
                events = _unpack(path.read_bytes())
            except (OSError, ValueError, struct.error) as e:
                bad = path.with_suffix(".corrupt")
                path.rename(bad)
                log.error("spool segment %s is unreadable (%s); kept as %s for inspection", path, e, bad)
                continue
            self._track(path, len(events), sum(ev.size for ev in events))
            self._next_seq = max(self._next_seq, int(path.stem) + 1)
        if self._segments:
            log.warning("spool %s holds %d event(s) from before; they are sent first", self.directory, self.events)

    @property
    def events(self) -> int:
        return self._totals[0]

    @property
    def bytes(self) -> int:
        return self._totals[1]

    def _track(self, path: Path, events: int, nbytes: int) -> None:
        """Count a segment in (caller holds the lock, or is the constructor)."""
        self._segments[path] = (events, nbytes)
        self._totals[0] += events
        self._totals[1] += nbytes

    def _untrack(self, path: Path) -> None:
        events, nbytes = self._segments.pop(path, (0, 0))
        self._totals[0] -= events
        self._totals[1] -= nbytes

    def reserve(self, events: int, nbytes: int) -> None:
        """Hold room for a request's events before it is scored, or raise :class:`SpoolFull`."""
        with self._lock:
            held_events = self.events + self._reserved[0] + events
            held_bytes = self.bytes + self._reserved[1] + nbytes
            if held_events > self.max_events or held_bytes > self.max_bytes:
                raise SpoolFull(
                    f"the spool ({self.directory}) holds {self.events} event(s), {self.bytes} bytes, waiting for "
                    f"Kafka (limits: serve_spool_max_events={self.max_events}, serve_spool_max_bytes="
                    f"{self.max_bytes}); nothing was scored: retry once the broker is back, or raise the limits")
            self._reserved[0] += events
            self._reserved[1] += nbytes

    def release(self, events: int, nbytes: int) -> None:
        """Give back a reservation (its events were appended, refused or never scored)."""
        with self._lock:
            self._reserved[0] = max(0, self._reserved[0] - events)
            self._reserved[1] = max(0, self._reserved[1] - nbytes)

    def append(self, events: list[Event]) -> None:
        """Write ``events`` as one durable segment (fsync'd file and directory) and wake the forwarder."""
        if not events:
            return
        data = _pack(events)
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        path = self.directory / f"{seq:016d}.seg"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        tmp.rename(path)
        if self.fsync:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        with self._added:
            self._track(path, len(events), sum(e.size for e in events))
            self._added.notify_all()

    def oldest(self, n: int = SEGMENTS_PER_FLUSH, wait_s: float = 0.0) -> list[tuple[Path, list[Event]]]:
        """Up to ``n`` oldest segments with their events (waiting up to ``wait_s`` for one when empty)."""
        with self._added:
            if not self._segments and wait_s > 0:
                self._added.wait(wait_s)
            paths = sorted(self._segments)[:n]
        out = []
        for path in paths:
            try:
                out.append((path, _unpack(path.read_bytes())))
            except (OSError, ValueError, struct.error) as e:
                log.error("spool segment %s became unreadable (%s); set aside as .corrupt", path, e)
                with self._lock:
                    self._untrack(path)
                path.rename(path.with_suffix(".corrupt"))
        return out

    def set_aside(self, paths: Iterable[Path], suffix: str) -> None:
        """Stop sending segments, keeping their files under another suffix (for an operator to look at)."""
        for path in paths:
            with self._lock:
                self._untrack(path)
            path.rename(path.with_suffix(suffix))

    def remove(self, paths: Iterable[Path]) -> None:
        """Delete segments whose every event the broker confirmed."""
        for path in paths:
            path.unlink(missing_ok=True)
            with self._lock:
                self._untrack(path)


class Forwarder:
    """A thread that publishes the spool's segments in order and deletes each once the broker confirms it.

    While the broker is unreachable it retries the oldest segments with a growing backoff (up
    to :data:`RETRY_MAX_S`); newer segments wait behind them, so every asset's events reach the
    topic in the order they were scored.
    """

    def __init__(self, spool: Spool, bootstrap: str, *, security: Mapping[str, str] | None = None) -> None:
        self.spool = spool
        self.bootstrap = bootstrap
        self._producer = make_producer(bootstrap, security=security, **{
            "message.timeout.ms": MESSAGE_TIMEOUT_MS, "linger.ms": 1, "reconnect.backoff.max.ms": 1000,
            "logger": librdkafka_log})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: ``"up"`` after a confirmed delivery, ``"down"`` after a failed one, ``"unknown"`` before either.
        self.broker = "unknown"
        self.last_error: str | None = None
        self.published = 0
        self.last_published_at: float | None = None

    def start(self) -> Forwarder:
        self._thread = threading.Thread(target=self._run, name="serve-forwarder", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_s: float = 5.0) -> None:
        """Stop after trying to send what is spooled for up to ``drain_s`` (the rest stays on disk)."""
        deadline = time.monotonic() + drain_s
        while self.spool.events and self.broker == "up" and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=MESSAGE_TIMEOUT_MS / 1000 + 2)

    def state(self) -> dict[str, object]:
        return {"broker": self.broker, "bootstrap": self.bootstrap, "spooled_events": self.spool.events,
                "spooled_bytes": self.spool.bytes, "published": self.published, "last_error": self.last_error}

    def _run(self) -> None:
        delay = RETRY_FIRST_S
        while not self._stop.is_set():
            batch = self.spool.oldest(wait_s=0.2)
            if not batch:
                continue
            try:
                self._send([e for _, events in batch for e in events])
            except Undeliverable as e:
                # Never silently dropped: the segments are kept as .undeliverable for an operator, and the rest flows.
                log.error("%s; %d spool segment(s) set aside as .undeliverable in %s", e, len(batch),
                          self.spool.directory)
                self.spool.set_aside([p for p, _ in batch], ".undeliverable")
                self.last_error = str(e)
                continue
            except InfrastructureError as e:
                if self.broker != "down":
                    log.warning("cannot publish inspected events (%s); %d event(s) kept in the spool, retrying",
                                e, self.spool.events)
                self.broker, self.last_error = "down", str(e)
                self._stop.wait(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            if self.broker == "down":
                log.warning("the broker is back; draining %d spooled event(s)", self.spool.events)
            self.broker, delay = "up", RETRY_FIRST_S
            self.spool.remove(p for p, _ in batch)
            self.published += sum(len(events) for _, events in batch)
            self.last_published_at = time.time()

    def _send(self, events: list[Event]) -> None:
        """Produce ``events`` and wait until each is confirmed; any failure raises InfrastructureError."""
        errors: list[str] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        for e in events:
            while True:
                try:
                    self._producer.produce(e.topic, value=e.value, key=e.key, headers=list(e.headers),
                                           on_delivery=on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as err:  # refused locally (too large): retrying cannot help
                    raise Undeliverable(f"a {len(e.value)}-byte {e.topic} event was refused: {err}") from err
        deadline = time.monotonic() + MESSAGE_TIMEOUT_MS / 1000 + 1
        remaining = self._producer.flush(0)
        while remaining and not errors and not self._stop.is_set() and time.monotonic() < deadline:
            remaining = self._producer.flush(0.1)  # in slices, so stopping the service never waits on a dead broker
        if remaining or errors:
            raise InfrastructureError(f"{remaining} undelivered, errors: {sorted(set(errors))[:2]}")
