"""Produce sensor windows onto the ``signals`` topic, keyed by asset, optionally at a plant-like pace.

Accepts what the simulator and recorders hand out: :class:`~linewatch.signals.windows.SensorWindow`
objects (kind and unit from the sensor name, see
:func:`~linewatch.signals.windows.signal_meta_for`, or from ``kinds``) or ready
``(SignalMeta, samples)`` pairs. Every window travels as one binary envelope (JSON header +
little-endian float32 samples, :func:`~linewatch.schemas.codec.encode_signal`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from linewatch.producers.spc import publish_paced
from linewatch.schemas.codec import encode_signal
from linewatch.schemas.messages import SignalMeta
from linewatch.schemas.topics import SIGNALS
from linewatch.signals.windows import SensorWindow, signal_meta_for

#: Windows handed to librdkafka between pacing checks and progress callbacks (~8 MB of 10 kHz windows).
DEFAULT_CHUNK = 200


def encode_window(window: SensorWindow | tuple[SignalMeta, np.ndarray], kinds: Mapping[str, str] | None = None
                  ) -> tuple[bytes, bytes]:
    """``(key, value)`` of one window: the asset id and the envelope."""
    if isinstance(window, SensorWindow):
        meta = signal_meta_for(window, kind=(kinds or {}).get(window.sensor))
        samples = window.samples
    else:
        meta, samples = window
    return meta.asset_id.encode(), encode_signal(meta, samples)


def produce_signals(
    bootstrap: str,
    windows: Iterable[SensorWindow | tuple[SignalMeta, np.ndarray]],
    *,
    rate_per_s: float | None = None,
    kinds: Mapping[str, str] | None = None,
    extra: Iterable[bytes] = (),
    progress: Callable[[int], None] | None = None,
    chunk: int = DEFAULT_CHUNK,
    security: Mapping[str, str] | None = None,
) -> int:
    """Send ``windows`` (keyed by asset) plus raw ``extra`` payloads; returns how many messages were sent.

    ``rate_per_s`` paces the stream in windows per second like live sensors; None sends as fast
    as possible. ``kinds`` maps sensor names to a :class:`SignalMeta` kind for ``SensorWindow``
    input whose sensor name is not itself a kind. Returns after every message is confirmed.
    """
    return publish_paced(bootstrap, SIGNALS.name, (encode_window(w, kinds) for w in windows),
                         rate_per_s=rate_per_s, chunk=chunk, progress=progress, extra=extra, security=security)
