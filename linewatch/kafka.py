"""confluent-kafka helpers: topic creation, a batching publisher and a read-to-the-end consumer.

Agents publish through librdkafka rather than Faust's per-message ``send``: a batch of
thousands of scores is handed over in one loop of non-blocking ``produce`` calls and made
durable with one ``flush`` before the input offsets are acknowledged (at-least-once; the
consumers de-duplicate on ``event_id``).

Everything outside the Faust worker that talks to the broker goes through this module: the
producers (:mod:`linewatch.producers`), ``linewatch up`` and the demo create topics with
:func:`ensure_topics`, and the data loaders read a topic's history with :func:`read_to_end`.
It depends on nothing in :mod:`linewatch.streams`, so those callers need not import Faust.

Every client takes an optional ``security`` mapping: the librdkafka properties of
:meth:`linewatch.config.Settings.kafka_client_config` (TLS, SASL). Without it a client is
configured exactly as for a plaintext broker, such as the embedded one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from linewatch.errors import InfrastructureError
from linewatch.schemas.topics import ALL_TOPICS, TopicSpec

log = logging.getLogger(__name__)

#: Enough for the broker to answer on a loaded laptop; a broker that takes longer is down.
ADMIN_TIMEOUT_S = 15.0
FLUSH_TIMEOUT_S = 30.0
#: How long a reader waits for the topic's metadata and watermarks before the broker counts as down.
METADATA_TIMEOUT_S = 10.0


def ensure_topics(bootstrap: str, *, partitions: int | None = None,
                  topics: Iterable[TopicSpec] = ALL_TOPICS, security: Mapping[str, str] | None = None) -> list[str]:
    """Create the missing linewatch topics; returns the names it created."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(security or {})})
    try:
        existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    except KafkaException as e:
        raise InfrastructureError(f"cannot reach the Kafka broker at {bootstrap}: {e}") from e
    wanted = [
        NewTopic(t.name, partitions if partitions and t.partitions > 1 else t.partitions, 1, config=dict(t.config))
        for t in topics if t.name not in existing
    ]
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=ADMIN_TIMEOUT_S).items() if wanted else []:
        try:
            future.result()
            created.append(name)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise InfrastructureError(f"cannot create topic {name!r} on {bootstrap}: {e}") from e
    return created


def partition_counts(bootstrap: str, names: Iterable[str], *, security: Mapping[str, str] | None = None
                     ) -> dict[str, int]:
    """How many partitions each of the topics ``names`` has on the broker (a missing topic is left out)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(security or {})})
    try:
        topics = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
    except KafkaException as e:
        raise InfrastructureError(f"cannot reach the Kafka broker at {bootstrap}: {e}") from e
    return {name: len(topics[name].partitions) for name in names if name in topics}


def make_producer(bootstrap: str, *, security: Mapping[str, str] | None = None, **overrides: object) -> Producer:
    """A producer tuned for batches; ``security`` (TLS/SASL properties) is applied before ``overrides``."""
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "enable.idempotence": False,
        "acks": "all",
        "compression.type": "none",
        "queue.buffering.max.messages": 1_000_000,
        # Brokers close idle connections routinely; librdkafka would print each one to stderr.
        "log.connection.close": False,
    }
    config.update(security or {})
    config.update(overrides)
    return Producer(config)


class Publisher:
    """Publishes many messages and confirms them all; failures become an InfrastructureError."""

    def __init__(self, bootstrap: str, *, security: Mapping[str, str] | None = None) -> None:
        self._producer = make_producer(bootstrap, security=security)
        self._errors: list[str] = []

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def publish(self, topic: str, messages: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Any]]
                ) -> int:
        """Hand ``(key, value)`` or ``(key, value, headers)`` messages to librdkafka; :meth:`flush` confirms them."""
        n = 0
        for key, value, *rest in messages:
            headers = rest[0] if rest else None
            while True:
                try:
                    self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as e:
                    # Every message linewatch publishes is bounded far below the broker's limit; one that
                    # is refused here is a bug worth stopping for, said plainly.
                    raise InfrastructureError(
                        f"cannot publish a {len(value)}-byte message to {topic!r}: {e}") from e
            n += 1
        self._producer.poll(0)
        return n

    def flush(self) -> None:
        """Block until every produced message is acknowledged by the broker (call from a thread)."""
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        if remaining or self._errors:
            errors, self._errors = self._errors[:3], []
            raise InfrastructureError(
                f"{remaining} message(s) not delivered within {FLUSH_TIMEOUT_S:.0f} s; errors: {errors}"
            )


def make_consumer(bootstrap: str, group_id: str, *, security: Mapping[str, str] | None = None,
                  **overrides: object) -> Consumer:
    """A consumer that never commits: readers here assign partitions themselves and keep no position."""
    config: dict[str, object] = {"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False}
    config.update(security or {})
    config.update(overrides)
    return Consumer(config)


def read_to_end(bootstrap: str, topic: str, *, group_id: str, batch: int = 1000, poll_s: float = 5.0,
                drain_s: float = 1.0, security: Mapping[str, str] | None = None) -> Iterator[Message]:
    """Every message in ``topic`` from the beginning up to the end each partition had when reading began.

    The end is the high watermark the broker reports when reading begins, so a topic that keeps
    growing still yields a finite history. Some brokers report it short (the embedded Tansu
    broker answers the base offset + 1 of a partition's last record batch), so once every
    partition has reached its reported end, reading goes on while messages keep arriving within
    ``drain_s`` and were produced before reading began (their timestamps say so). Messages that
    carry a consumer error are skipped; empty partitions are not waited for. The consumer is
    closed when the iteration ends or is abandoned.
    """
    consumer = make_consumer(bootstrap, group_id, security=security)
    started_ms = time.time() * 1000.0
    try:
        parts = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=METADATA_TIMEOUT_S)[1]
                for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending = {p for p, end in ends.items() if end > 0}
        open_parts = set(pending)  # partitions whose tail may still hold messages produced before started_ms
        while open_parts:
            msgs = consumer.consume(batch, poll_s if pending else drain_s) or []
            if not msgs and not pending:
                break  # nothing more arrived after every reported end: the history is complete
            for msg in msgs:
                if msg.error() is not None:
                    continue
                p = msg.partition()
                if p not in pending:
                    _, ts = msg.timestamp()
                    if ts > started_ms:  # produced after reading began: past the end of this history
                        open_parts.discard(p)
                        continue
                    if p not in open_parts:
                        continue
                elif msg.offset() >= ends[p] - 1:
                    pending.discard(p)
                yield msg
    finally:
        consumer.close()
