"""Every detector by name: one static table, imported lazily, so no module imports them all.

Why a static table instead of ``@register`` decorators: a registry filled as an import side
effect only knows the detectors somebody happened to import, so a "catalog" module had to
import all of them, and since every detector imported the registry's module, the package
was one import cycle. Here each entry is a ``"module:ClassName"`` string, resolved with
:mod:`importlib` only when looked up, so ``linewatch.detectors.base`` imports no detector,
asking for ``ewma`` never loads onnxruntime, and adding a detector means one line here plus
``name: ClassVar[str] = "..."`` on its class (``tests/detectors/test_table.py`` checks the two
agree). Each entry also says which input the detector takes: ``"table"`` for ``(n, d)`` float
arrays (tabular, SPC and windowed-signal features; the conformance test runs over these) or
``"image"`` for camera frames (:mod:`linewatch.detectors.image_base`). The two kinds cannot be
fed each other's data, so callers ask for the kind that matches their modality.

How to pick one (details in ``docs/detectors-tabular.md``):

- one characteristic, classic SPC: ``shewhart_imr`` (large shifts), ``ewma`` / ``cusum``
  (small sustained shifts);
- several correlated characteristics: ``hotelling`` (exact limits), ``robust_mahalanobis``
  (dirty training data), ``mewma`` (small joint drifts), ``pca_monitor`` (many, collinear features);
- non-normal, skewed or multi-modal data: ``isolation_forest``, ``ecod`` (names its culprit);
- a process that drifts legitimately: ``half_space_trees`` (module ``online_hst``).

The windowed-signal detectors (``dynamic_pca``, ``autoencoder``, ``online_residual``) take
``(n, d)`` feature rows too and are ``"table"`` detectors; see ``docs/signals.md``.

>>> get_detector("hotelling").__name__
'HotellingT2'
>>> set(TABULAR_DETECTORS) <= set(names("table")), "patchcore" in names("table")
(True, False)
>>> get_detector("patchcore", kind="table")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
KeyError: "unknown detector 'patchcore'; known detectors: autoencoder, cusum, ..."
"""

from __future__ import annotations

import importlib
from typing import Literal, NamedTuple

#: What a detector's ``fit`` / ``score`` take: ``(n, d)`` float arrays, or camera frames.
InputKind = Literal["table", "image"]


class Entry(NamedTuple):
    """Where a detector class lives (``"module:ClassName"``) and which input it takes."""

    target: str
    kind: InputKind


#: Detector name -> entry. The name is the one saved artifacts carry (``metadata.json``'s
#: ``kind``, the bundle's ``detector``), so an entry may move modules but never change name.
DETECTORS: dict[str, Entry] = {
    "shewhart_imr": Entry("linewatch.detectors.spc_charts:ShewhartIMR", "table"),
    "ewma": Entry("linewatch.detectors.spc_charts:EWMAChart", "table"),
    "cusum": Entry("linewatch.detectors.spc_charts:CUSUMChart", "table"),
    "hotelling": Entry("linewatch.detectors.hotelling:HotellingT2", "table"),
    "robust_mahalanobis": Entry("linewatch.detectors.robust_mahalanobis:RobustMahalanobis", "table"),
    "mewma": Entry("linewatch.detectors.mewma:MEWMA", "table"),
    "pca_monitor": Entry("linewatch.detectors.pca_monitor:PCAMonitor", "table"),
    "isolation_forest": Entry("linewatch.detectors.isolation_forest:IsolationForestONNX", "table"),
    "ecod": Entry("linewatch.detectors.ecod:ECOD", "table"),
    "half_space_trees": Entry("linewatch.detectors.online_hst:OnlineHalfSpaceTrees", "table"),
    "dynamic_pca": Entry("linewatch.detectors.dynamic_pca:DynamicPCA", "table"),
    "autoencoder": Entry("linewatch.detectors.autoencoder:WindowAutoencoder", "table"),
    "online_residual": Entry("linewatch.detectors.online_signal:OnlineResidual", "table"),
    "patchcore": Entry("linewatch.detectors.patchcore:PatchCore", "image"),
}

#: The tabular/SPC detectors in the order the docs present them (the benchmarks loop over it).
TABULAR_DETECTORS: tuple[str, ...] = (
    "shewhart_imr",
    "ewma",
    "cusum",
    "hotelling",
    "robust_mahalanobis",
    "mewma",
    "pca_monitor",
    "isolation_forest",
    "ecod",
    "half_space_trees",
)

_NOUN: dict[InputKind | None, str] = {None: "detector", "table": "detector", "image": "image detector"}


def names(kind: InputKind | None = None) -> tuple[str, ...]:
    """Detector names of one input kind (``None`` = all), sorted; imports nothing."""
    return tuple(sorted(n for n, e in DETECTORS.items() if kind is None or e.kind == kind))


def input_kind(name: str) -> InputKind:
    """``"table"`` or ``"image"`` for a known detector name."""
    return _entry(name, None).kind


def get_detector(name: str, *, kind: InputKind | None = None) -> type:
    """The detector class called ``name``, importing its module now.

    ``kind`` restricts the lookup to one input kind, so a tabular caller handed an image
    detector's name gets the same clear KeyError as for a typo, not a class it cannot feed.
    """
    module, _, attr = _entry(name, kind).target.partition(":")
    return getattr(importlib.import_module(module), attr)


def registered(kind: InputKind | None = "table") -> dict[str, type]:
    """Name -> class for every detector of one input kind (``None`` = all kinds); imports them all."""
    return {n: get_detector(n) for n in names(kind)}


def _entry(name: str, kind: InputKind | None) -> Entry:
    entry = DETECTORS.get(name)
    if entry is None or (kind is not None and entry.kind != kind):
        noun = _NOUN[kind]
        raise KeyError(f"unknown {noun} {name!r}; known {noun}s: {', '.join(names(kind))}")
    return entry
