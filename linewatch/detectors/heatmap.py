"""Heat maps: patch distances resized to the frame, and the summary a score message carries.

Bilinear resizing is written as two small matrix products (cached weights) instead of a
per-pixel interpolation, so a batch of maps costs two GEMMs; the summary (peak, hot box,
thumbnail) is what an operator needs to find a defect without a full-resolution map per frame.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from linewatch.errors import ConfigError, DataError


@lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights, half-pixel centres (torch's align_corners=False)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - w)
    np.add.at(m, (np.arange(n_out), i1), w)
    m.setflags(write=False)
    return m


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(..., h, w)`` maps to ``(..., H, W)`` as two small matrix products."""
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    rows, cols = _interp_matrix(size[0], h), _interp_matrix(size[1], w)
    return rows @ maps @ cols.T


#: Side of the heat-map thumbnail carried in a score message's explanation (32x32 = 1 KiB).
THUMBNAIL_SIZE = 32


def summarize_heatmap(
    heat: np.ndarray, *, threshold: float, thumbnail_size: int = THUMBNAIL_SIZE
) -> dict[str, Any]:
    """What a score message needs to say *where*: peak, hot region, and a small thumbnail.

    Why: a full-resolution float map per frame is too big for a Kafka message; an operator needs
    the location and extent of the defect, and a dashboard a small picture. ``box`` is the
    bounding box ``(top, left, bottom, right)`` of the connected region above ``threshold``
    that holds the peak (``None`` when nothing exceeds it); ``thumbnail`` is the map resized to
    ``thumbnail_size`` squared and scaled so 128 = threshold, 255 = twice it, as ``uint8``.

    >>> heat = np.zeros((40, 60), dtype=np.float32); heat[10:15, 20:30] = 5.0
    >>> s = summarize_heatmap(heat, threshold=1.0, thumbnail_size=8)
    >>> s["peak"], s["box"], s["thumbnail"].shape, round(s["area_fraction"], 4)
    ((10, 20), (10, 20, 15, 30), (8, 8), 0.0208)
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise DataError(f"summarize one (H, W) heat map at a time, got shape {heat.shape}")
    if not threshold > 0:
        raise ConfigError(f"threshold={threshold!r} must be positive (use the detector's threshold_)")
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    hot = heat > threshold
    box: tuple[int, int, int, int] | None = None
    if hot[peak]:
        labels, _ = ndimage.label(hot)
        rows, cols = np.nonzero(labels == labels[peak])
        box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    small = resize_maps(heat, (thumbnail_size, thumbnail_size))
    thumb = np.clip(np.rint(small / threshold * 128.0), 0, 255).astype(np.uint8)
    return {
        "peak": (int(peak[0]), int(peak[1])),
        "peak_value": float(heat[peak]),
        "box": box,
        "area_fraction": float(hot.mean()),
        "thumbnail": thumb,
    }
