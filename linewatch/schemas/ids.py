"""Deterministic event ids, so a replayed or redelivered event lands exactly once.

The id is a UUIDv5 of the event's natural key: the same part measured at the same time on
the same asset always gets the same id, whichever producer, replay or retry sent it. The
database's primary keys use it, so a duplicate becomes ``ON CONFLICT DO NOTHING``.

>>> event_id("spc", "press-1", "P-000042", "2026-01-01T00:00:00+00:00")
UUID('b8580d21-6dcd-5ed0-b842-0539cf98e07c')
"""

from __future__ import annotations

import uuid

#: Fixed namespace for linewatch ids; changing it would re-key every stored event.
LINEWATCH_NAMESPACE = uuid.UUID("5f2b8a52-8c1e-4a39-9a5e-0d6c4f1e7b10")


def event_id(kind: str, *parts: str) -> uuid.UUID:
    """UUIDv5 over ``kind`` and the natural-key parts, joined by a separator no part may contain."""
    for p in parts:
        if "\x1f" in p:
            raise ValueError("id parts must not contain the unit separator character")
    return uuid.uuid5(LINEWATCH_NAMESPACE, "\x1f".join((kind, *parts)))
