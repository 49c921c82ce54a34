"""Produce simulated or recorded SPC parts onto the ``spc`` topic, optionally at a plant-like pace.

A message carries one record, or with ``records_per_message`` N a JSON array of up to N records of
one asset (a gateway or PLC bridge that batches; :func:`batched_by_key`), which the worker decodes in
one pass per message. Either form gives each record the same event id.

:func:`publish_paced` is the publish loop every producer shares (SPC here, signals in
:mod:`linewatch.producers.signals`, frames in :mod:`linewatch.producers.frames`): they differ
only in how one input item becomes a ``(key, value)`` message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from linewatch.errors import ConfigError
from linewatch.kafka import Publisher
from linewatch.schemas.codec import MAX_BATCH_JSON_BYTES, encode
from linewatch.schemas.messages import MAX_RECORDS_PER_MESSAGE, SpcRecord
from linewatch.schemas.topics import SPC


def publish_paced(
    bootstrap: str,
    topic: str,
    keyed_payloads: Iterable[tuple[bytes, bytes]],
    *,
    rate_per_s: float | None = None,
    chunk: int = 500,
    progress: Callable[[int], None] | None = None,
    extra: Iterable[bytes] = (),
    security: Mapping[str, str] | None = None,
) -> int:
    """Send ``keyed_payloads`` then the raw ``extra`` payloads (key ``b"garbage"``) to ``topic``.

    Messages go to librdkafka in chunks of ``chunk``: after each chunk ``progress`` gets the
    running count and, with ``rate_per_s``, the loop sleeps until the stream is back on that
    pace (None sends as fast as possible). ``keyed_payloads`` is consumed lazily, so callers
    that encode or time-stamp an item as it is pulled do so at the paced moment. Returns the
    number of messages sent, after every one of them is confirmed by the broker. ``security`` is
    the broker's TLS/SASL client configuration (:meth:`~linewatch.config.Settings.kafka_client_config`).
    """
    pub = Publisher(bootstrap, security=security)
    sent = 0
    start = time.monotonic()
    batch: list[tuple[bytes, bytes]] = []
    for message in keyed_payloads:
        batch.append(message)
        if len(batch) >= chunk:
            sent += pub.publish(topic, batch)
            batch = []
            if progress:
                progress(sent)
            if rate_per_s:
                ahead = sent / rate_per_s - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    sent += pub.publish(topic, batch)
    sent += pub.publish(topic, ((b"garbage", raw) for raw in extra))
    pub.flush()
    if progress:
        progress(sent)
    return sent


def produce_spc(
    bootstrap: str,
    records: Iterable[SpcRecord],
    *,
    rate_per_s: float | None = None,
    extra: Iterable[bytes] = (),
    progress: Callable[[int], None] | None = None,
    chunk: int = 500,
    security: Mapping[str, str] | None = None,
    records_per_message: int = 1,
) -> int:
    """Send ``records`` (keyed by asset) plus raw ``extra`` payloads; returns how many records were sent.

    ``rate_per_s`` paces the stream like a line producing parts (records per second); None sends as
    fast as possible. ``records_per_message`` above 1 sends each asset's records as JSON arrays of up
    to that many (:func:`batched_by_key`); ``chunk`` and ``progress`` then count messages.
    """
    _check_per_message(records_per_message)
    keyed = ((rec.asset_id.encode(), encode(rec)) for rec in records)
    if records_per_message == 1:
        return publish_paced(bootstrap, SPC.name, keyed, rate_per_s=rate_per_s, chunk=chunk, progress=progress,
                             extra=extra, security=security)
    pulled = {"records": 0, "messages": 0}  # filled as publish_paced pulls the messages

    def messages() -> Iterator[tuple[bytes, bytes]]:
        for key, value, n in batched_by_key(keyed, records_per_message):
            pulled["records"] += n
            pulled["messages"] += 1
            yield key, value

    def records_progress(sent: int) -> None:  # the caller counts records, whatever the messages hold
        if progress:
            progress(pulled["records"] + sent - pulled["messages"])

    sent = publish_paced(bootstrap, SPC.name, messages(), rate_per_s=rate_per_s and rate_per_s / records_per_message,
                         chunk=max(1, chunk // records_per_message), progress=records_progress, extra=extra,
                         security=security)
    return pulled["records"] + sent - pulled["messages"]  # the records, plus each raw ``extra`` payload as one


def _check_per_message(per_message: int) -> None:
    if not 1 <= per_message <= MAX_RECORDS_PER_MESSAGE:
        raise ConfigError(f"records per message must be 1 to {MAX_RECORDS_PER_MESSAGE} (the batched spc message's "
                          f"limit), not {per_message}")


def batched_by_key(keyed_values: Iterable[tuple[bytes, bytes]], per_message: int) -> Iterator[tuple[bytes, bytes, int]]:
    """Group encoded records by key into JSON arrays of up to ``per_message``: ``(key, array, records in it)``."""
    batcher = RecordBatcher(per_message)
    for key, value in keyed_values:
        yield from batcher.add(key, value)
    yield from batcher.drain()


class RecordBatcher:
    """Holds each key's encoded records until they make a batched message (a JSON array).

    An asset's records stay in their order (one key, one partition). A message is ready when it
    holds ``per_message`` records or one more would take it past
    :data:`~linewatch.schemas.codec.MAX_BATCH_JSON_BYTES`; :meth:`drain` sends what is left, so every
    record goes out. A record waits until its message is full: the delay a batching gateway adds.
    """

    def __init__(self, per_message: int) -> None:
        _check_per_message(per_message)
        self.per_message = per_message
        self._held: dict[bytes, tuple[list[bytes], int]] = {}  # key -> (encoded records, array size in bytes)

    def add(self, key: bytes, value: bytes) -> list[tuple[bytes, bytes, int]]:
        """Hold ``value`` for ``key``; returns the ``(key, array, records)`` messages that are ready (0 to 2)."""
        ready = []
        held, size = self._held.get(key, ([], 2))
        if held and size + len(value) + 1 > MAX_BATCH_JSON_BYTES:
            ready.append((key, _array(held), len(held)))
            held, size = [], 2
        held.append(value)
        size += len(value) + 1
        if len(held) >= self.per_message:
            ready.append((key, _array(held), len(held)))
            held, size = [], 2
        self._held[key] = (held, size)
        return ready

    def drain(self) -> list[tuple[bytes, bytes, int]]:
        """Every key's partial message, and nothing held any more."""
        ready = [(key, _array(held), len(held)) for key, (held, _) in self._held.items() if held]
        self._held.clear()
        return ready


def _array(encoded: list[bytes]) -> bytes:
    return b"[" + b",".join(encoded) + b"]"
