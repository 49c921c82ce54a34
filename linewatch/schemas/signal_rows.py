"""The ``signal_features`` row: one sensor window reduced to the numbers an engineer reads.

Same contract as :mod:`linewatch.schemas.rows`: the signals pipeline builds plain tuples in
the field order of this model (that order is the COPY column order), and a test holds the
fields to the table's columns in ``sql/050_signals.sql`` so the two cannot drift apart.
It lives in its own module so the signals path could be added without touching the rows
every other agent writes; ``ROW_TYPES`` there can list it once the lead folds it in.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from linewatch.schemas.rows import Row


class SignalFeatureRow(Row):
    """One window of one sensor: identity, headline features as columns, everything as JSON.

    The headline columns are the ones dashboards and SQL users filter and chart on; the full
    feature vector (band energies, spectral peaks, ...) is in ``features`` (JSON text of
    ``{name: value}``; band and peak powers are ``log10`` of units², see ``docs/signals.md``).
    ``spectral_centroid_hz`` and ``dominant_hz`` are NULL for windows too short for a
    spectrum (a 1 Hz thermocouple's one-sample window). ``quality`` holds the data-quality
    gate's reason codes (``flatline``, ``stuck``, ...); empty means the window is usable.
    """

    __table__ = "signal_features"
    __key__ = ("ts", "event_id")

    ts: datetime
    event_id: uuid.UUID
    asset_id: str
    sensor: str
    kind: str
    unit: str
    sample_rate_hz: float
    n_samples: int
    mean: float
    rms: float
    peak: float
    crest_factor: float
    kurtosis: float
    skewness: float
    spectral_centroid_hz: float | None
    dominant_hz: float | None
    features: str  # JSON text of {feature name: value}
    quality: list[str]
