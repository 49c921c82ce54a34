"""Produce simulated or recorded SPC parts onto the ``spc`` topic, optionally at a plant-like pace."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from linewatch.schemas.codec import encode
from linewatch.schemas.messages import SpcRecord
from linewatch.schemas.topics import SPC
from linewatch.streams.kafka import Publisher


def produce_spc(
    bootstrap: str,
    records: Iterable[SpcRecord],
    *,
    rate_per_s: float | None = None,
    extra: Iterable[bytes] = (),
    progress: Callable[[int], None] | None = None,
    chunk: int = 500,
) -> int:
    """Send ``records`` (keyed by asset) plus raw ``extra`` payloads; returns how many were sent.

    ``rate_per_s`` paces the stream like a line producing parts; None sends as fast as possible.
    """
    pub = Publisher(bootstrap)
    sent = 0
    start = time.monotonic()
    batch: list[tuple[bytes, bytes]] = []
    for rec in records:
        batch.append((rec.asset_id.encode(), encode(rec)))
        if len(batch) >= chunk:
            sent += pub.publish(SPC.name, batch)
            batch = []
            if progress:
                progress(sent)
            if rate_per_s:
                ahead = sent / rate_per_s - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    sent += pub.publish(SPC.name, batch)
    sent += pub.publish(SPC.name, ((b"garbage", raw) for raw in extra))
    pub.flush()
    if progress:
        progress(sent)
    return sent
