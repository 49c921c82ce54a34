"""The one contract every detector keeps, stated once.

A detector learns "normal" from known-good data and answers, for a batch, how far each
row is from it. The contract is deliberately tiny so the live agent, the replay job, the
backtest and the benchmarks all call the exact same code:

- ``fit(X) -> self`` on an ``(n, d)`` float array of normal rows only;
- ``score(X) -> (n,)`` raw scores, **high = anomalous**;
- ``explain(X) -> (n, d)`` non-negative per-feature contributions (optional, but every
  detector that can name a culprit should);
- ``save(path)`` / ``load(path)`` to a directory holding ``metadata.json`` and arrays.

Online detectors add ``learn_one(x)`` and ``score_one(x)``. ``__init__`` stores
parameters only (keyword-only); fitted state ends in ``_``; ``score`` before ``fit``
raises :class:`~linewatch.errors.NotFittedError`.

>>> import numpy as np
>>> X = as_batch([[1.0, 2.0], [3.0, 4.0]])
>>> X.shape, X.dtype
((2, 2), dtype('float64'))
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from linewatch.errors import DataError, NotFittedError

METADATA_FILE = "metadata.json"
ARRAYS_FILE = "arrays.npz"


@runtime_checkable
class Detector(Protocol):
    """What the agents, replay and benchmarks rely on."""

    name: ClassVar[str]

    def fit(self, X: np.ndarray) -> Self: ...

    def score(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Self: ...


@runtime_checkable
class Explainer(Protocol):
    """A detector that can say which feature is to blame."""

    def explain(self, X: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class OnlineDetector(Detector, Protocol):
    """A detector that keeps learning from the stream (never from rows it flagged)."""

    def learn_one(self, x: np.ndarray) -> None: ...

    def score_one(self, x: np.ndarray) -> float: ...


def as_batch(X: Any, *, n_features: int | None = None) -> np.ndarray:
    """Return ``X`` as a 2-D float64 array, refusing NaN/inf and wrong widths with a clear error.

    Validation lives here once, so every detector rejects the same bad input the same way.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if n_features is not None and arr.size == n_features else arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D batch (rows, features), got an array of shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise DataError(
            f"expected {n_features} features per row, got {arr.shape[1]}; "
            "score with the same feature columns the model was fitted on"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DataError(f"{bad} row(s) contain NaN or infinite values; clean or drop them before scoring")
    return arr


def check_fitted(obj: object, attribute: str) -> None:
    """Raise :class:`NotFittedError` naming the class when ``attribute`` is not set yet."""
    if getattr(obj, attribute, None) is None:
        raise NotFittedError(
            f"{type(obj).__name__} is not fitted yet; call fit() on known-good data before scoring"
        )


def save_state(path: str | Path, *, kind: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write a detector as ``metadata.json`` (kind + params) and ``arrays.npz`` (fitted arrays).

    JSON + npz instead of pickle: the artifact is readable by other languages and loading it
    never executes code.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / METADATA_FILE).write_text(json.dumps({"kind": kind, "params": params}, indent=2, sort_keys=True))
    np.savez(root / ARRAYS_FILE, **arrays)


def load_state(path: str | Path, *, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read what :func:`save_state` wrote, checking it is the expected kind of detector."""
    root = Path(path)
    meta_file = root / METADATA_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"no {METADATA_FILE} in {root}; is this a saved linewatch model directory?")
    meta = json.loads(meta_file.read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"{root} holds a {meta.get('kind')!r} model, not {kind!r}")
    with np.load(root / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta["params"], arrays


class Registry:
    """Detector classes by name; the CLI, backtests and conformance tests look them up here.

    Tabular/time-series detectors and image detectors keep separate registries (their ``fit``
    takes different inputs), both built from this one class.
    """

    def __init__(self, kind: str, fill: Callable[[], None] | None = None) -> None:
        self._kind = kind
        self._fill = fill
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator adding a detector under ``name``."""

        def deco(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self._kind} name {name!r} is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return deco

    def all(self) -> dict[str, type]:
        if self._fill is not None:
            self._fill()
        return dict(self._classes)

    def get(self, name: str) -> type:
        """Look a class up by name, listing the known names when it is not there."""
        if name not in self._classes and self._fill is not None:
            self._fill()
        if name not in self._classes:
            known = ", ".join(sorted(self._classes)) or "(none imported)"
            raise KeyError(f"unknown {self._kind} {name!r}; known {self._kind}s: {known}")
        return self._classes[name]


def _import_catalog() -> None:
    import linewatch.detectors.catalog  # noqa: F401 - importing it registers every detector


DETECTORS = Registry("detector", fill=_import_catalog)
#: Class decorator adding a detector to the registry the CLI, backtest and conformance test use.
register = DETECTORS.register
#: All registered detectors by name.
registered = DETECTORS.all
#: A detector class by name, or a KeyError listing the known names.
get_detector = DETECTORS.get
