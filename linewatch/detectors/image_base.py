"""The contract image detectors keep, and their own registry.

Image detectors take camera frames, not ``(n, d)`` float tables: ``fit(images)`` on known-good
frames, ``score(images) -> (n,)`` with **high = anomalous**, ``heatmap(images) -> (n, H, W)``
saying *where*, and ``save`` / ``load``. Frames are ``uint8`` arrays, colour ``(n, H, W, 3)``,
grayscale ``(n, H, W)`` or ``(n, H, W, 1)``, or a list of such frames of any sizes.

Why a separate registry: :func:`linewatch.detectors.base.register` feeds the tabular
conformance test, which trains every registered detector on ``(n, d)`` float tables. An image
detector cannot honour that input, and pretending (reshaping a table into a fake image) would
test nothing. So image detectors register here, and a conformance test for images runs over
:func:`registered_images` with generated frames instead. The two registries share nothing but
the naming rules, and the CLI looks up the one that matches the modality.

>>> sorted(registered_images()) == sorted(set(registered_images()))
True
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from linewatch.detectors.base import Registry

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


IMAGE_DETECTORS = Registry("image detector")
#: Class decorator adding an image detector to the image registry (not the tabular one).
register_image = IMAGE_DETECTORS.register
#: All registered image detectors by name (importing their modules fills it).
registered_images = IMAGE_DETECTORS.all
#: An image detector class by name, or a KeyError listing the known names.
get_image_detector = IMAGE_DETECTORS.get
