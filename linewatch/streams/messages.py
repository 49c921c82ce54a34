"""What an agent hands to the pure batch processors: raw bytes plus where they came from.

Keeping Faust's event objects out of the processors lets replay, tests and benchmarks feed
them the same way the live agent does.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from linewatch.errors import DataError
from linewatch.schemas.codec import encode
from linewatch.schemas.messages import (
    MAX_DEADLETTER_EXCERPT_BYTES,
    MAX_DEADLETTER_KEY_BYTES,
    MAX_REASON_LENGTH,
    DeadLetter,
)


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # broker/producer timestamp, seconds since the epoch
    #: One record of a batched message (a JSON array): its index (from 0) and the array's length. ``value``
    #: stays the whole message; the record's dead letter names the index and carries the record alone.
    record: tuple[int, int] | None = None

    @property
    def origin(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def of_record(self, index: int, count: int) -> RawMessage:
        """This message as the origin of its record ``index`` of ``count`` (a batched message's record)."""
        return RawMessage(self.topic, self.partition, self.offset, self.key, self.value, self.timestamp,
                          (index, count))


#: Memory addresses in exception texts (``<object at 0x7f3a...>``) differ on every run; a reason must not.
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,16}")
#: Control characters PostgreSQL text cannot hold (NUL) or a log line should not (the rest of C0 but tab/newline).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def sanitize_reason(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    r"""A rejection reason that any database, log and JSON consumer can hold, the same on every run.

    Control characters become visible escapes (a NUL inside a JSON key once made a reason that
    PostgreSQL refused, which stopped the worker), memory addresses are blanked, and the text
    is bounded.

    >>> sanitize_reason("bad key 'a\x00b' in <Foo object at 0x7f3a2b4c5d6e>")
    "bad key 'a\\x00b' in <Foo object at 0x...>"
    """
    text = _ADDRESS.sub("0x...", text)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class DeadLetters:
    """Dead letters of one batch: bounded topic messages, and table rows that keep the original bytes."""

    items: list[DeadLetter] = field(default_factory=list)
    #: The original (key, value) of each item, for the table.
    originals: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    def add(self, msg: RawMessage, error: Exception, *, payload: bytes | None = None) -> None:
        """Dead-letter ``msg`` for ``error``; ``payload`` replaces the message's bytes (one record of a batched one).

        For a batched message's record (``msg.record``) the reason starts ``record 3 of 10:`` (index from 0).
        """
        payload, key = payload if payload is not None else msg.value or b"", msg.key
        reason = str(error) if msg.record is None else f"record {msg.record[0]} of {msg.record[1]}: {error}"
        truncated = len(payload) > MAX_DEADLETTER_EXCERPT_BYTES
        key_truncated = key is not None and len(key) > MAX_DEADLETTER_KEY_BYTES
        self.items.append(
            DeadLetter(
                source_topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                key=key[:MAX_DEADLETTER_KEY_BYTES] if key_truncated else key,  # type: ignore[index]
                key_truncated=key_truncated,
                reason=sanitize_reason(reason),
                error_type="DataError" if isinstance(error, DataError) else sanitize_reason(type(error).__name__, 200),
                payload=payload[:MAX_DEADLETTER_EXCERPT_BYTES] if truncated else payload,
                payload_truncated=truncated,
                payload_size=len(payload),
                payload_sha256=hashlib.sha256(payload).hexdigest(),
                received_at=datetime.now(UTC),
            )
        )
        self.originals.append((key, payload))

    def extend(self, other: DeadLetters) -> None:
        self.items += other.items
        self.originals += other.originals

    def rows(self) -> list[tuple]:
        """Tuples in ``DeadLetterRow`` field order (a test holds the two together), original bytes included."""
        return [
            (d.received_at, d.source_topic, d.partition, d.offset, key, d.reason, d.error_type, payload)
            for d, (key, payload) in zip(self.items, self.originals, strict=True)
        ]

    def messages(self) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` for the ``deadletter`` topic, each far below the broker's message limit."""
        return [(d.key, encode(d)) for d in self.items]

    def __len__(self) -> int:
        return len(self.items)
