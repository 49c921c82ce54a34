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
raises :class:`~linewatch.errors.NotFittedError`. Each class names itself with a plain
``name: ClassVar[str]``, the key it has in :mod:`linewatch.detectors.table` (which lists every
detector; this module imports none of them). :class:`ParamsMixin` derives ``get_params``,
``save`` and ``load`` from the ``__init__`` signature and a declaration of the fitted state.

>>> import numpy as np
>>> X = as_batch([[1.0, 2.0], [3.0, 4.0]])
>>> X.shape, X.dtype
((2, 2), dtype('float64'))
"""

from __future__ import annotations

import inspect
import json
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


#: Where fitted non-array values go inside ``metadata.json``'s params, unless a class says otherwise.
FITTED_KEY = "fitted"


def _saved_name(attribute: str) -> str:
    """Fitted attributes are saved without their trailing ``_`` (``mean_`` -> ``mean``)."""
    return attribute.removesuffix("_")


class ParamsMixin:
    """Parameters declared once, in ``__init__``; ``get_params``, ``save`` and ``load`` follow from it.

    Why: every detector used to spell its parameters three times (``__init__``, ``save``,
    ``load``), and one added to ``__init__`` but forgotten in ``save`` was silently reset to
    its default in every saved model. As with scikit-learn's ``BaseEstimator.get_params``,
    the parameters are the keyword-only arguments of ``__init__``, each stored unchanged
    under its own name. A detector then only declares its fitted state:

    - ``fitted_arrays``: attributes written to ``arrays.npz``, each under its name without
      the trailing ``_``; a Python number is written as a 0-d array and read back as a number;
    - ``fitted_values``: JSON values (numbers, strings, ``None``) written into
      ``metadata.json``'s params under ``fitted_key`` (``None``: next to the parameters).

    Artifacts stay JSON + npz (:func:`save_state`), so loading never executes code. State
    derived from the saved arrays (a whitener recomputed from a covariance) is rebuilt by
    overriding :meth:`_restore` and calling ``super()._restore`` first; a saved layout the
    declarations cannot express overrides :meth:`_fitted_state` and :meth:`_restore` together;
    files beside the arrays (an ONNX graph, a sub-model) come from extending ``save`` / ``load``.
    ``save`` refuses to run until every ``fitted_arrays`` attribute is set.

    >>> import tempfile
    >>> class Centre(ParamsMixin):
    ...     name: ClassVar[str] = "centre"
    ...     fitted_arrays = ("mean_",)
    ...     fitted_values = ("n_fit_",)
    ...
    ...     def __init__(self, *, scale: float = 1.0) -> None:
    ...         self.scale = scale
    ...         self.mean_, self.n_fit_ = None, None
    ...
    ...     def fit(self, X):
    ...         self.mean_, self.n_fit_ = X.mean(axis=0), len(X)
    ...         return self
    >>> det = Centre(scale=2.0).fit(np.ones((3, 2)))
    >>> det.get_params()
    {'scale': 2.0}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     det.save(d)
    ...     back = Centre.load(d)
    >>> back.scale, back.mean_.tolist(), back.n_fit_
    (2.0, [1.0, 1.0], 3)
    """

    name: ClassVar[str]
    #: Fitted attributes saved in ``arrays.npz`` (numpy arrays, or Python numbers as 0-d arrays).
    fitted_arrays: ClassVar[tuple[str, ...]] = ()
    #: Fitted JSON values saved in ``metadata.json``'s params.
    fitted_values: ClassVar[tuple[str, ...]] = ()
    #: The params key holding ``fitted_values``; ``None`` puts them next to the parameters.
    fitted_key: ClassVar[str | None] = FITTED_KEY

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The keyword-only parameters of ``__init__``, in the order they are declared."""
        signature = inspect.signature(cls.__init__)
        return tuple(p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def get_params(self) -> dict[str, Any]:
        """Parameter name -> value, enough to build an identical unfitted detector."""
        return {p: getattr(self, p) for p in self.param_names()}

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(arrays, values)`` to save: the declared attributes under their saved names."""
        arrays = {_saved_name(a): getattr(self, a) for a in self.fitted_arrays}
        values = {_saved_name(a): getattr(self, a) for a in self.fitted_values}
        return arrays, values

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        """Set the declared attributes from what :meth:`_fitted_state` saved."""
        for attr in self.fitted_arrays:
            arr = arrays[_saved_name(attr)]
            setattr(self, attr, arr.item() if arr.ndim == 0 else arr)
        for attr in self.fitted_values:
            setattr(self, attr, values[_saved_name(attr)])

    def save(self, path: str | Path) -> None:
        """Write the parameters and fitted state as ``metadata.json`` + ``arrays.npz``."""
        for attr in self.fitted_arrays:
            check_fitted(self, attr)
        arrays, values = self._fitted_state()
        params = self.get_params()
        if self.fitted_key is None:
            params.update(values)
        elif values:
            params[self.fitted_key] = values
        save_state(path, kind=self.name, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Rebuild a saved detector: parameters into ``__init__``, then :meth:`_restore`.

        JSON has no tuples, so a list among the parameters is handed to ``__init__`` as a tuple.
        """
        params, arrays = load_state(path, kind=cls.name)
        if cls.fitted_key is None:
            declared = set(cls.param_names())
            values = {k: params.pop(k) for k in list(params) if k not in declared}
        else:
            values = params.pop(cls.fitted_key, {})
        det = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        det._restore(arrays, values)
        return det
