"""What an agent hands to the pure batch processors: raw bytes plus where they came from.

Keeping Faust's event objects out of the processors lets replay, tests and benchmarks feed
them the same way the live agent does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from linewatch.errors import DataError
from linewatch.schemas.messages import DeadLetter


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # broker/producer timestamp, seconds since the epoch

    @property
    def origin(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class DeadLetters:
    """Dead letters of one batch, as topic messages and as table rows."""

    items: list[DeadLetter] = field(default_factory=list)

    def add(self, msg: RawMessage, error: Exception) -> None:
        self.items.append(
            DeadLetter(
                source_topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                key=msg.key,
                reason=str(error)[:4000],
                error_type=type(error).__name__ if not isinstance(error, DataError) else "DataError",
                payload=msg.value or b"",
                received_at=datetime.now(UTC),
            )
        )

    def rows(self) -> list[tuple]:
        """Tuples in ``DeadLetterRow`` field order (a test holds the two together)."""
        return [
            (d.received_at, d.source_topic, d.partition, d.offset, d.key, d.reason, d.error_type, d.payload)
            for d in self.items
        ]

    def __len__(self) -> int:
        return len(self.items)

