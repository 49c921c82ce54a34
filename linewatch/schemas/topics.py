"""Topic names and partition counts, declared once.

Every topic is keyed by asset id so one asset's events stay ordered on one partition; the
partition count bounds how many workers of one consumer group can share the load.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    description: str
    #: Kafka topic configs linewatch asks for when it creates the topic.
    config: tuple[tuple[str, str], ...] = ()


FRAMES = TopicSpec("frames", 4, "camera frames: binary envelope with JSON header + encoded image")
SIGNALS = TopicSpec("signals", 4, "a window of one sensor: binary envelope with JSON header + float32 samples")
SPC = TopicSpec("spc", 4, "one part's or sample's measured characteristics (JSON)")
SCORES = TopicSpec("scores", 4, "one detector's verdict on one event (JSON)")
SHADOW_SCORES = TopicSpec("shadow_scores", 4, "shadow (challenger) models' verdicts: scores that are never routed "
                          "(JSON, the scores schema with shadow true)")
MACHINE_STATES = TopicSpec("machine_states", 4, "machine state changes from PLC/MES: running, idle, changeover (JSON)")
ALERTS = TopicSpec("alerts", 4, "fused alert lifecycle: open / update / close (JSON)")
DISPOSITIONS = TopicSpec("dispositions", 1, "operator feedback on an alert or event (JSON)")
DEADLETTER = TopicSpec("deadletter", 1, "anything that could not be decoded or validated, with the reason (JSON)")

ALL_TOPICS: tuple[TopicSpec, ...] = (FRAMES, SIGNALS, SPC, SCORES, SHADOW_SCORES, MACHINE_STATES, ALERTS, DISPOSITIONS,
                                     DEADLETTER)
INPUT_TOPICS: tuple[TopicSpec, ...] = (FRAMES, SIGNALS, SPC)


def topic_names() -> list[str]:
    return [t.name for t in ALL_TOPICS]
