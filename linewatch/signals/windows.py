"""One sensor's window of samples as recorders and simulators hand it out, and its ``signals`` header.

The ``signals`` topic carries ``(SignalMeta, float32 samples)``; a data logger, a CSV import or the
simulator knows an asset, a sensor, a start time, a rate and an array. :class:`SensorWindow` is
that, validated once, and :func:`as_signal_messages` turns it into what the producer and
:func:`~linewatch.signals.framing.training_frames` take.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import get_args

import numpy as np

from linewatch.errors import DataError
from linewatch.schemas.messages import SignalMeta

#: Default unit per sensor kind, for windows that arrive without one (simulations, CSV imports).
DEFAULT_UNITS: dict[str, str] = {
    "vibration": "g", "current": "A", "temperature": "degC", "pressure": "bar", "speed": "Hz", "other": "1",
}
KINDS: tuple[str, ...] = get_args(SignalMeta.model_fields["kind"].annotation)


@dataclass(frozen=True)
class SensorWindow:
    """One sensor's window as the ``signals`` topic carries it; ``start`` in POSIX seconds (UTC)."""

    asset_id: str
    sensor: str
    start: float
    sample_rate_hz: float
    samples: np.ndarray

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and self.sample_rate_hz > 0 and math.isfinite(self.sample_rate_hz)):
            raise DataError(
                f"window of {self.asset_id}/{self.sensor}: start={self.start!r} and "
                f"sample_rate_hz={self.sample_rate_hz!r} must be finite and the rate positive"
            )
        arr = np.asarray(self.samples, dtype=np.float32)
        if arr.ndim != 1 or arr.size == 0:
            raise DataError(f"window of {self.asset_id}/{self.sensor} must hold a non-empty 1-D sample array")
        object.__setattr__(self, "samples", arr)

    @property
    def end(self) -> float:
        """Time just after the last sample's slot: ``start + n / rate``."""
        return self.start + self.samples.size / self.sample_rate_hz

    @classmethod
    def from_meta(cls, meta: SignalMeta, samples: np.ndarray) -> SensorWindow:
        """Build from a decoded ``signals`` message header and its float32 samples."""
        if samples.size != meta.n_samples:
            raise DataError(f"header announces {meta.n_samples} samples but {samples.size} arrived")
        return cls(meta.asset_id, meta.sensor, meta.start.timestamp(), meta.sample_rate_hz, samples)



def signal_meta_for(window: SensorWindow, *, kind: str | None = None, unit: str | None = None) -> SignalMeta:
    """The ``signals`` header of a :class:`SensorWindow`.

    Without ``kind`` the sensor name is used when it is a kind (the simulator's ``"vibration"``,
    ``"current"``, ``"temperature"``), else ``"other"``; ``unit`` defaults per kind.
    """
    k = kind or (window.sensor if window.sensor in KINDS else "other")
    return SignalMeta(
        asset_id=window.asset_id, sensor=window.sensor, kind=k, unit=unit or DEFAULT_UNITS.get(k, "1"),
        start=datetime.fromtimestamp(window.start, UTC), sample_rate_hz=window.sample_rate_hz,
        n_samples=int(window.samples.size),
    )


def as_signal_messages(
    source: Iterable[SensorWindow | tuple[SignalMeta, np.ndarray]],
    *,
    kinds: Mapping[str, str] | None = None,
) -> list[tuple[SignalMeta, np.ndarray]]:
    """``(SignalMeta, float32 samples)`` pairs from :class:`SensorWindow` objects or pairs already made.

    ``kinds`` maps sensor names to a :class:`~linewatch.schemas.messages.SignalMeta` kind.
    """
    kinds = dict(kinds or {})
    out = []
    for item in source:
        if isinstance(item, SensorWindow):
            out.append((signal_meta_for(item, kind=kinds.get(item.sensor)), item.samples))
        else:
            meta, samples = item
            out.append((meta, np.asarray(samples, dtype=np.float32)))
    return out
