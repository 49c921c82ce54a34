"""Ground truth as time windows: a NAB-style windows JSON or a CSV of ``start,end`` intervals.

Why: labelled history rarely comes as a label column. Benchmarks such as NAB, and most
maintenance logs, give *when* something was wrong; ``linewatch backtest csv --labels FILE``
turns that into row labels and into one event per window, matched against ``--time-column``.

Formats
-------
- **Windows JSON** (NAB's ``labels/combined_windows.json``): ``{"<data file key>": [[start, end], ...]}``.
  The entry is chosen by ``key`` (``--labels-key``), else the one key that is a path suffix of
  the test file (``realKnownCause/machine_temperature_system_failure.csv`` matches
  ``.../data/realKnownCause/machine_temperature_system_failure.csv``), else the one key with the
  test file's base name; none or several is a ConfigError listing the keys. An entry may also
  be a list of single timestamps (NAB's ``combined_labels.json``): zero-width windows. A bare
  list of ``[start, end]`` pairs needs no key.
- **Intervals CSV**: a header with ``start`` and ``end`` columns (any case), one interval a row.

Bounds are ISO 8601 (naive = UTC) or numbers, read by :func:`linewatch.loaders.parse_times`
exactly as the time column is, and **inclusive**: a row at ``start`` or ``end`` is inside.

The NAB convention: a NAB window is a *tolerance window* centred on a labelled anomaly
(its width is 10 % of the file's length divided by the number of anomalies), not the span
during which the process was faulty. Rows inside it are counted anomalous, so per-row recall
and precision understate a good detector (one alarm early in a two-day window is a perfect
NAB detection); read the per-event table (detected, delay from the window's start) first.

>>> import numpy as np
>>> t = np.arange(10.0)
>>> w = LabelWindows(np.array([2.0, 7.0]), np.array([4.0, 7.0]), "example")
>>> w.episodes(t), w.mask(t).astype(int).tolist()
([(2, 5), (7, 8)], [0, 0, 1, 1, 1, 0, 0, 1, 0, 0])
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.errors import ConfigError, DataError
from linewatch.loaders import TabularData, parse_times


@dataclass(frozen=True)
class LabelWindows:
    """Inclusive ``[start, end]`` windows, parsed like the time column (datetime64[us] or float)."""

    starts: np.ndarray
    ends: np.ndarray
    source: str  # the file (and JSON key) they came from, for the report

    def _check_kind(self, times: np.ndarray) -> None:
        ours, theirs = (np.issubdtype(np.asarray(a).dtype, np.datetime64) for a in (self.starts, times))
        if ours != theirs:
            kinds = {True: "ISO 8601 times", False: "numbers"}
            raise ConfigError(
                f"the label windows in {self.source} are {kinds[ours]} but the time column holds {kinds[theirs]}; "
                "check --time-column or the labels file"
            )

    def row_bounds(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per window, its first row in ``times`` (sorted) and one past its last; equal when it holds no row."""
        if len(self.starts) == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        self._check_kind(times)
        return np.searchsorted(times, self.starts, side="left"), np.searchsorted(times, self.ends, side="right")

    def episodes(self, times: np.ndarray) -> list[tuple[int, int]]:
        """``[start, end)`` row ranges of the windows in ``times`` (sorted); windows without rows are left out."""
        lo, hi = self.row_bounds(times)
        return [(int(s), int(e)) for s, e in zip(lo, hi, strict=True) if e > s]

    def mask(self, times: np.ndarray) -> np.ndarray:
        """True for every row inside some window."""
        out = np.zeros(len(times), dtype=bool)
        for s, e in self.episodes(times):
            out[s:e] = True
        return out


def _readable(value: str) -> bool:
    try:
        parse_times([value], "bound")
    except DataError:
        return False
    return True


def _parse_bounds(pairs: list[tuple[Any, Any]], source: str) -> LabelWindows:
    flat = [str(v) for pair in pairs for v in pair]
    if not flat:
        return LabelWindows(np.array([], dtype=np.float64), np.array([], dtype=np.float64), source)
    try:
        bounds = parse_times(flat, f"windows in {source}")
    except DataError:
        bad = next(i for i, v in enumerate(flat) if not _readable(v))
        raise DataError(
            f"{source}: window {bad // 2 + 1} has {flat[bad]!r}, neither a number nor an ISO 8601 time; "
            "all bounds must be one or the other"
        ) from None
    starts, ends = bounds[0::2], bounds[1::2]
    wrong = np.flatnonzero(ends < starts)
    if wrong.size:
        i = int(wrong[0])
        raise DataError(f"{source}: window {i + 1} ends ({pairs[i][1]}) before it starts ({pairs[i][0]})")
    return LabelWindows(starts, ends, source)


def _pairs(entry: Any, source: str) -> list[tuple[Any, Any]]:
    """``[[start, end], ...]`` or ``[t, ...]`` (zero-width windows) as a list of pairs."""
    if not isinstance(entry, list):
        raise DataError(f"{source}: expected a list of [start, end] windows, got {type(entry).__name__}")
    out = []
    for i, w in enumerate(entry):
        if isinstance(w, list | tuple) and len(w) == 2:
            out.append((w[0], w[1]))
        elif isinstance(w, str | int | float):
            out.append((w, w))
        else:
            raise DataError(f"{source}: window {i + 1} is {w!r}; expected [start, end] or one timestamp")
    return out


def choose_key(keys: list[str], test_file: Path, key: str | None = None) -> str:
    """The JSON entry for ``test_file``: ``key`` if given, else the unique suffix match, else the unique base name.

    >>> choose_key(["a/x.csv", "a/y.csv"], Path("/data/a/x.csv"))
    'a/x.csv'
    """
    listing = ", ".join(keys) or "(none)"
    if key is not None:
        if key not in keys:
            raise ConfigError(f"--labels-key {key!r} is not in the labels file; its keys are: {listing}")
        return key
    path = test_file.as_posix()
    by_suffix = [k for k in keys if path == k or path.endswith("/" + k.lstrip("/"))]
    by_name = [k for k in keys if Path(k).name == test_file.name]
    for found in (by_suffix, by_name):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigError(f"several label keys match {test_file}: {', '.join(found)}; choose one with --labels-key")
    raise ConfigError(f"no label key matches {test_file.name}; choose one with --labels-key (keys: {listing})")


def load_windows(path: Path, *, test_file: Path, key: str | None = None, sep: str = ",") -> LabelWindows:
    """Read label windows for ``test_file`` from a windows JSON (``.json``) or an intervals CSV (anything else)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--labels file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON ({e}); --labels takes a windows JSON or a start,end CSV") from e
        if isinstance(doc, dict):
            chosen = choose_key([str(k) for k in doc], Path(test_file), key)
            source = f"{path} [{chosen}]"
            return _parse_bounds(_pairs(doc[chosen], source), source)
        if key is not None:
            raise ConfigError(f"{path} holds one list of windows, not keyed entries; drop --labels-key")
        return _parse_bounds(_pairs(doc, str(path)), str(path))
    if key is not None:
        raise ConfigError("--labels-key chooses an entry of a windows JSON; a CSV of intervals has none")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=sep) if any(c.strip() for c in r)]
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "start" not in header or "end" not in header:
        raise DataError(f"{path}: an intervals CSV needs a header with 'start' and 'end' columns, got {header}")
    s, e = header.index("start"), header.index("end")
    pairs = [(r[s].strip(), r[e].strip()) for r in rows[1:]]
    return _parse_bounds(pairs, str(path))


def rows(data: TabularData, keep: np.ndarray) -> TabularData:
    """The rows of ``data`` where ``keep`` is True (every per-row array cut alike)."""
    def cut(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[keep]

    return replace(data, X=data.X[keep], labels=cut(data.labels), label_values=cut(data.label_values),
                   timestamps=cut(data.timestamps), groups=cut(data.groups),
                   text={name: v[keep] for name, v in data.text.items()})


def split_until(data: TabularData, until: str, anomalous: np.ndarray) -> tuple[TabularData, TabularData, int]:
    """``--train-until``: (rows before ``until`` not labelled anomalous, rows from ``until`` on, rows left out).

    One file is both history and test (NAB has one per machine): the model fits on what came
    before ``until`` minus the labelled rows there, and is judged only on what came after, so
    no test row was seen in training.
    """
    if data.timestamps is None:
        raise ConfigError("--train-until needs --time-column, to know which rows come before it")
    if not _readable(until):
        raise ConfigError(f"--train-until {until!r} is neither an ISO 8601 time nor a number")
    cut = parse_times([until], "--train-until")[0]
    if np.issubdtype(np.asarray(data.timestamps).dtype, np.datetime64) != np.issubdtype(cut.dtype, np.datetime64):
        raise ConfigError(f"--train-until {until!r} and the time column are not the same kind (time vs number)")
    before = data.timestamps < cut
    train, test = before & ~anomalous, ~before
    if not train.any():
        raise ConfigError(f"no unlabelled rows before --train-until {until}; choose a later time")
    if not test.any():
        raise ConfigError(f"no rows from --train-until {until} on; choose an earlier time")
    return rows(data, train), rows(data, test), int((before & anomalous).sum())
