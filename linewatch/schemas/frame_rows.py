"""The ``frame_heatmaps`` row: where on a frame a detector saw the anomaly, small enough to keep.

Same contract as :mod:`linewatch.schemas.rows`: the frames pipeline builds plain tuples in the
field order of this model (that order is the COPY column order), and a test holds the fields
to the table's columns in ``sql/070_frames.sql`` so the two cannot drift apart. It lives in
its own module so the frames path could be added without touching the rows every other
agent writes; ``ROW_TYPES`` there can list it once the lead folds it in.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from linewatch.schemas.rows import Row


class FrameEventRow(Row):
    """The key and identity columns every per-frame table starts with, in this order."""

    ts: datetime
    event_id: uuid.UUID
    asset_id: str
    camera: str
    sku: str
    part_id: str


class FrameHeatmapRow(FrameEventRow):
    """One scored frame's heat-map summary; the ``scores`` row with the same (ts, event_id) has the verdict.

    Coordinates are pixels of the frame as the camera sent it (``width`` x ``height``), x to
    the right and y down; the box is half-open ``[x0, x1) x [y0, y1)``. ``box_*`` are NULL
    when no pixel of the smoothed map exceeds the threshold (a frame scored only because heat
    maps are drawn for all frames). ``thumbnail`` is a ``thumbnail_size`` squared 8-bit
    grayscale PNG of the map scaled so 128 = ``threshold`` and 255 = twice it.
    """

    __table__ = "frame_heatmaps"
    __key__ = ("ts", "event_id")

    detector: str
    model_version: str
    width: int
    height: int
    raw_score: float
    peak_value: float
    threshold: float  # raw (patch-distance) units, the scale of raw_score, peak_value and the thumbnail
    peak_x: int
    peak_y: int
    box_x0: int | None
    box_y0: int | None
    box_x1: int | None
    box_y1: int | None
    area_fraction: float
    thumbnail: bytes


class UnscoredFrameRow(FrameEventRow):
    """A valid frame that no image model watches yet: kept so nothing vanishes while a model is trained.

    The frame was decoded (an undecodable one is a dead letter instead); ``reason`` says why it
    was not scored, ``payload_bytes`` how large the encoded image was.
    """

    __table__ = "unscored_frames"
    __key__ = ("ts", "event_id")

    encoding: str
    width: int
    height: int
    channels: int
    payload_bytes: int
    reason: str


class FrameFeatureRow(Row):
    """A frame's pooled patch features as its image model computed them (``sql/190_defects.sql``).

    Kept for every alarm frame and a fixed sample of the others (by event id, so live and replay
    keep the same ones): the examples a defect classifier trains on once operators confirm them.
    """

    __table__ = "frame_features"
    __key__ = ("ts", "event_id")

    ts: datetime
    event_id: uuid.UUID
    asset_id: str
    camera: str
    sku: str
    detector: str
    model_version: str
    is_anomaly: bool
    features: list[float]
