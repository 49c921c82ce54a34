"""Publish a simulated plant's messages (every topic, one event-time order), paced like the plant runs.

``speed`` is plant seconds per wall second: at 60 a plant hour streams in a minute. Messages go
out in chunks of :data:`CHUNK_PLANT_S` plant seconds; each chunk is handed to librdkafka (per
topic, keyed by asset so one asset's messages stay in order on one partition), and the loop then
sleeps until the wall clock catches up with the chunk's event time. Images are drawn and messages
encoded as they are pulled (:meth:`PlantSimulation.iter_messages`), so that work (~10 s for the
default hour) is spread over the stream instead of delaying its start. Same :class:`Publisher` as
every other producer (:func:`linewatch.producers.spc.publish_paced`), which paces one topic by
count; a plant needs several topics paced together by event time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime

from linewatch.errors import ConfigError
from linewatch.kafka import Publisher
from linewatch.producers.spc import RecordBatcher
from linewatch.schemas.topics import SPC
from linewatch.simulation.plant import PlantSimulation

#: Plant seconds per chunk: a tenth of a wall second at speed 60, small enough for smooth pacing.
CHUNK_PLANT_S = 6.0


def _chunks(messages: Iterable[tuple[str, bytes | None, bytes, datetime]], seconds: float
            ) -> Iterable[tuple[float, list[tuple[str, bytes | None, bytes, datetime]]]]:
    """``(chunk end in plant seconds since the first message, messages)`` in event-time order."""
    t0: datetime | None = None
    chunk: list[tuple[str, bytes | None, bytes, datetime]] = []
    edge = seconds
    for m in messages:
        t0 = t0 or m[3]
        offset = (m[3] - t0).total_seconds()
        while offset >= edge:
            if chunk:
                yield edge, chunk
                chunk = []
            edge += seconds
        chunk.append(m)
    if chunk:
        yield edge, chunk


def publish_in_event_time(pub: Publisher, messages: Iterable[tuple[str, bytes | None, bytes, datetime]], *,
                          speed: float | None, progress: Callable[[Mapping[str, int]], None] | None = None
                          ) -> Counter[str]:
    """Publish ``(topic, key, value, event time)`` messages (in event-time order) at ``speed`` x their own pace.

    ``speed`` is event seconds per wall second (None: as fast as the broker takes them). Used for a
    simulated plant and for ``linewatch replay --to-kafka``. Returns the counts per topic (not yet flushed).
    """
    if speed is not None and speed <= 0:
        raise ConfigError(f"speed={speed!r} must be positive (event seconds per wall second), or None")
    counts: Counter[str] = Counter()
    start = time.monotonic()
    for edge, chunk in _chunks(messages, CHUNK_PLANT_S):
        per_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value, _ in chunk:
            per_topic.setdefault(topic, []).append((key, value))
        for topic, batch in per_topic.items():
            counts[topic] += pub.publish(topic, batch)
        if progress:
            progress(dict(counts))
        if speed:
            ahead = edge / speed - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return counts


def batched_spc(messages: Iterable[tuple[str, bytes | None, bytes, datetime]], per_message: int
                ) -> Iterator[tuple[str, bytes | None, bytes, datetime]]:
    """``messages`` with each asset's ``spc`` records joined into batched messages of up to ``per_message``.

    A batched message goes out at its last record's event time (a gateway sends when its buffer is
    full), so the stream stays in event-time order; the partial ones go out after the last message.
    """
    batcher = RecordBatcher(per_message)
    last: datetime | None = None
    for topic, key, value, ts in messages:
        last = ts
        if topic != SPC.name or key is None:
            yield topic, key, value, ts
            continue
        for k, array, _ in batcher.add(key, value):
            yield SPC.name, k, array, ts
    for k, array, _ in batcher.drain():
        yield SPC.name, k, array, last  # type: ignore[misc]


def produce_plant(
    bootstrap: str,
    plant: PlantSimulation,
    *,
    speed: float | None = 60.0,
    progress: Callable[[Mapping[str, int]], None] | None = None,
    extra: Iterable[tuple[str, bytes]] = (),
    security: Mapping[str, str] | None = None,
    encoding: str = "png",
    spc_records_per_message: int = 1,
) -> dict[str, int]:
    """Send every message of ``plant`` then the raw ``extra`` ``(topic, value)`` payloads (key ``b"garbage"``).

    ``speed`` plant seconds per wall second (None: as fast as the broker takes them). ``progress``
    gets the running counts per topic after each chunk. Returns the counts of messages per topic
    once the broker has confirmed every message. ``spc_records_per_message`` above 1 sends each
    asset's parts as batched ``spc`` messages (:func:`batched_spc`).
    """
    pub = Publisher(bootstrap, security=security)
    messages = plant.iter_messages(encoding=encoding)
    if spc_records_per_message > 1:
        messages = batched_spc(messages, spc_records_per_message)
    counts = publish_in_event_time(pub, messages, speed=speed, progress=progress)
    by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
    for topic, raw in extra:
        by_topic.setdefault(topic, []).append((b"garbage", raw))
    for topic, batch in by_topic.items():
        counts[topic] += pub.publish(topic, batch)
    pub.flush()
    if progress:
        progress(dict(counts))
    return dict(counts)
