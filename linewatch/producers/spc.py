"""Produce simulated or recorded SPC parts onto the ``spc`` topic, optionally at a plant-like pace.

:func:`publish_paced` is the publish loop every producer shares (SPC here, signals in
:mod:`linewatch.producers.signals`, frames in :mod:`linewatch.producers.frames`): they differ
only in how one input item becomes a ``(key, value)`` message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from linewatch.kafka import Publisher
from linewatch.schemas.codec import encode
from linewatch.schemas.messages import SpcRecord
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
) -> int:
    """Send ``records`` (keyed by asset) plus raw ``extra`` payloads; returns how many were sent.

    ``rate_per_s`` paces the stream like a line producing parts; None sends as fast as possible.
    """
    return publish_paced(bootstrap, SPC.name, ((rec.asset_id.encode(), encode(rec)) for rec in records),
                         rate_per_s=rate_per_s, chunk=chunk, progress=progress, extra=extra, security=security)
