"""History from Kafka: the input topics (or stored ``scores``) between two times or offsets, in the worker's order.

The worker sees each partition in offset order, and one asset's messages are on one partition
(keyed by asset), so that order is what a replay must keep. Partitions and topics are merged by
the messages' timestamps, which keeps every partition's own order (a merge never reorders one
input) and interleaves the modalities as they arrived.

The topics are read from their beginning up to their end when the replay starts
(:func:`linewatch.kafka.read_to_end`), and filtered by timestamp, offsets and asset key here: every
broker linewatch runs on supports that, where seeking by time is not supported everywhere. What is
kept is held in memory until the merge (one plant hour of the demo is ~15 MB).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from linewatch.errors import ConfigError
from linewatch.kafka import read_to_end
from linewatch.streams.messages import RawMessage

#: The consumer group a replay reads with (it never commits offsets).
REPLAY_READER_GROUP = "linewatch-replay"


@dataclass(frozen=True)
class KafkaRange:
    """Which messages of the topics to replay: a time range (message timestamps), offsets, assets."""

    since: datetime | None = None
    until: datetime | None = None
    #: ``(topic, partition) -> (first, last)`` offsets, both inclusive; partitions not named are read whole.
    offsets: Mapping[tuple[str, int], tuple[int, int]] | None = None
    #: Only messages keyed by one of these assets (the producers key every message by its asset).
    assets: frozenset[str] | None = None

    def keeps(self, msg: RawMessage) -> bool:
        ts = msg.timestamp
        if self.since is not None and (ts is None or ts < self.since.timestamp()):
            return False
        if self.until is not None and (ts is None or ts >= self.until.timestamp()):
            return False
        if self.offsets is not None and (span := self.offsets.get((msg.topic, msg.partition))) is not None:
            first, last = span
            if not first <= msg.offset <= last:
                return False
        return self.assets is None or (msg.key is not None and msg.key.decode("utf-8", "replace") in self.assets)


def parse_offsets(specs: Sequence[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """``TOPIC:PARTITION:FIRST-LAST`` (``LAST`` may be empty: to the end) -> the :class:`KafkaRange` mapping.

    >>> parse_offsets(["spc:0:100-200", "frames:3:5-"])
    {('spc', 0): (100, 200), ('frames', 3): (5, 9223372036854775807)}
    """
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for spec in specs:
        try:
            topic, partition, span = spec.rsplit(":", 2)
            first, _, last = span.partition("-")
            out[(topic, int(partition))] = (int(first), int(last) if last else 2**63 - 1)
        except ValueError:
            raise ConfigError(f"--offsets {spec!r}: write TOPIC:PARTITION:FIRST-LAST, e.g. spc:0:1000-2000 "
                             "(LAST may be left out: to the end)") from None
    return out


def kafka_history(bootstrap: str, topics: Iterable[str], selection: KafkaRange | None = None, *,
                  security: Mapping[str, str] | None = None) -> Iterator[RawMessage]:
    """The selected messages of ``topics``, every partition in offset order, merged by timestamp."""
    selection = selection or KafkaRange()
    streams: list[list[RawMessage]] = []
    for topic in topics:
        by_partition: dict[int, list[RawMessage]] = {}
        for m in read_to_end(bootstrap, topic, group_id=REPLAY_READER_GROUP, security=security):
            kind, ts_ms = m.timestamp()
            raw = RawMessage(topic, m.partition(), m.offset(), m.key(), m.value(),
                             ts_ms / 1000.0 if kind else None)
            if selection.keeps(raw):
                by_partition.setdefault(raw.partition, []).append(raw)
        streams += [sorted(msgs, key=lambda r: r.offset) for _, msgs in sorted(by_partition.items())]
    yield from heapq.merge(*streams, key=lambda r: r.timestamp or 0.0)
