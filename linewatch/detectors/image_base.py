"""The contract image detectors keep.

Image detectors take camera frames, not ``(n, d)`` float tables: ``fit(images)`` on known-good
frames, ``score(images) -> (n,)`` with **high = anomalous**, ``heatmap(images) -> (n, H, W)``
saying *where*, and ``save`` / ``load``. Frames are ``uint8`` arrays, colour ``(n, H, W, 3)``,
grayscale ``(n, H, W)`` or ``(n, H, W, 1)``, or a list of such frames of any sizes.

Why image detectors are kept apart from the tabular ones: the tabular conformance test
trains every ``"table"`` detector on ``(n, d)`` float tables. An image detector cannot honour
that input, and pretending (reshaping a table into a fake image) would test nothing. So image
detectors are listed in :mod:`linewatch.detectors.table` with input kind ``"image"``
(``get_detector(name, kind="image")``, ``registered("image")``), and a conformance test for
images runs over those with generated frames instead.

>>> from linewatch.detectors.table import names
>>> names("image")
('patchcore',)
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, Self, runtime_checkable

import numpy as np

#: What an image batch may be: one array of frames, or a sequence of frames of any sizes.
Images = np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...]


@runtime_checkable
class ImageDetector(Protocol):
    """What the frames agent, the folder backtest and the benchmarks rely on."""

    name: ClassVar[str]

    def fit(self, images: Images) -> Self: ...

    def score(self, images: Images) -> np.ndarray: ...

    def heatmap(self, images: Images) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Self: ...
