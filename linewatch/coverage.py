"""What a model's training data covered (assets, SKUs, shifts, lots, machine states, hours of day).

Why
---
A model trained on day-shift parts of one lot has no idea what night shift or a new lot looks
like: its scores there are extrapolation, and an alarm (or the lack of one) means less. The
coverage is counted once at training, stored with the model version (``bundle.meta["coverage"]``
and the ``model_versions.coverage`` column), printed by ``linewatch train spc``, checked on every
live record (the score's explanation then carries an ``unseen_context`` note and so does its
``scores`` row), and compared with a test period by :func:`coverage_report` for backtests.

Counts are per value per dimension; the hour of day (UTC) is 24 bins. A dimension the training
data did not record at all is not judged (nothing is known about it), and a record that does not
say its value for a dimension is not flagged for it either: only a value that was *never* seen
in training is.

>>> cov = Coverage.from_context({"shift": ["day", "day", "late"], "hour": [8, 9, 17]})
>>> cov.counts["shift"], cov.counts["hour"]["08"], cov.counts["hour"]["03"]
({'day': 2, 'late': 1}, 1, 0)
>>> cov.unseen({"shift": "night", "hour": 3, "lot": "L7"})
['shift=night never in training', 'hour 03 never in training']
>>> Coverage.from_dict(cov.to_dict()) == cov
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from rich.table import Table

from linewatch.errors import DataError

#: The context dimensions, in the order they are reported.
DIMENSIONS: tuple[str, ...] = ("asset", "sku", "shift", "lot", "machine_state", "hour")
HOUR = "hour"
HOURS_PER_DAY = 24
#: Column names a training file may use for each dimension (the first present one is read).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "asset": ("asset", "asset_id"),
    "sku": ("sku",),
    "shift": ("shift",),
    "lot": ("lot", "lot_id"),
    "machine_state": ("machine_state", "state"),
}
#: Values listed per dimension in the printed summary; the rest are counted as "... N more".
SUMMARY_VALUES = 8
#: Version of the stored layout, so a later change can still read models trained today.
LAYOUT_VERSION = 1


def _hour_label(h: int) -> str:
    return f"{h:02d}"


def hours_of(values: Any) -> np.ndarray:
    """Hour of day (0-23, UTC) of each value: hours already, ``datetime64`` or aware/naive-UTC datetimes.

    >>> hours_of(np.array(["2026-01-01T03:59", "2026-01-01T23:00"], dtype="datetime64[m]")).tolist()
    [3, 23]
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return (arr.astype("datetime64[h]").astype(np.int64) % HOURS_PER_DAY).astype(np.int64)
    if arr.dtype.kind == "O" and arr.size and isinstance(arr.flat[0], datetime):
        return np.array([_utc_hour(v) for v in arr.flat], dtype=np.int64)
    hours = arr.astype(np.int64)
    if hours.size and (hours.min() < 0 or hours.max() >= HOURS_PER_DAY):
        raise DataError(f"hour of day must be 0-23, got {int(hours.min())}..{int(hours.max())}; "
                        "pass timestamps or hours")
    return hours


def _utc_hour(v: datetime) -> int:
    """A naive datetime is UTC already (as everywhere in linewatch); an aware one is converted."""
    return v.hour if v.tzinfo is None else v.astimezone(UTC).hour


def _labels(values: Any) -> list[str | None]:
    """Values as strings; ``None``, NaN and empty strings are "not recorded"."""
    out: list[str | None] = []
    for v in np.asarray(values, dtype=object).reshape(-1):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
            continue
        s = str(v).strip()
        out.append(s or None)
    return out


def _ranges(hours: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"00-02, 05"``."""
    parts: list[str] = []
    hs = sorted(hours)
    i = 0
    while i < len(hs):
        j = i
        while j + 1 < len(hs) and hs[j + 1] == hs[j] + 1:
            j += 1
        parts.append(_hour_label(hs[i]) if i == j else f"{_hour_label(hs[i])}-{_hour_label(hs[j])}")
        i = j + 1
    return ", ".join(parts)


@dataclass(frozen=True)
class Coverage:
    """Rows per value per context dimension in a model's training data (``hour``: 24 bins, "00"-"23")."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    n_rows: int = 0

    @classmethod
    def from_context(cls, columns: Mapping[str, Any]) -> Coverage:
        """Count ``columns`` (dimension -> values, one per training row); ``hour`` may be hours or timestamps.

        Dimensions outside :data:`DIMENSIONS` are counted too (a plant's own, e.g. ``"fixture"``). A
        dimension whose values are all missing is left out: the data did not record it.
        """
        counts: dict[str, dict[str, int]] = {}
        n_rows = 0
        for dim, values in columns.items():
            if values is None:
                continue
            if dim == HOUR:
                hours = hours_of(values)
                n_rows = max(n_rows, hours.size)
                if hours.size:
                    binned = np.bincount(hours, minlength=HOURS_PER_DAY)
                    counts[HOUR] = {_hour_label(h): int(binned[h]) for h in range(HOURS_PER_DAY)}
                continue
            labels = _labels(values)
            n_rows = max(n_rows, len(labels))
            seen = Counter(v for v in labels if v is not None)
            if seen:
                counts[dim] = dict(sorted(seen.items(), key=lambda kv: (-kv[1], kv[0])))
        return cls(counts=counts, n_rows=n_rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in ``bundle.meta["coverage"]`` and ``model_versions.coverage``."""
        return {"layout": LAYOUT_VERSION, "n_rows": self.n_rows,
                "counts": {dim: dict(values) for dim, values in self.counts.items()}}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Coverage:
        return cls(counts={dim: {str(k): int(v) for k, v in values.items()} for dim, values in doc["counts"].items()},
                   n_rows=int(doc.get("n_rows", 0)))

    @property
    def dimensions(self) -> list[str]:
        """Recorded dimensions, the standard ones first in :data:`DIMENSIONS` order."""
        return [d for d in DIMENSIONS if d in self.counts] + sorted(set(self.counts) - set(DIMENSIONS))

    def _seen_hours(self) -> np.ndarray:
        bins = self.counts[HOUR]
        return np.array([bins.get(_hour_label(h), 0) > 0 for h in range(HOURS_PER_DAY)])

    def unseen(self, context: Mapping[str, Any]) -> list[str]:
        """What about one record's ``context`` (dimension -> value) training never saw, as sentences."""
        batch = {dim: [value] for dim, value in context.items()}
        return [message for _, message in self.unseen_batch(batch)[0]]

    def unseen_batch(self, columns: Mapping[str, Sequence[Any]]) -> list[list[tuple[str, str]]]:
        """Per row of ``columns`` (dimension -> values, aligned), ``(dimension, sentence)`` for each unseen value.

        One set lookup per row and dimension (hours: one vectorised lookup), so the live agent
        can check every record of a batch for the price of building its columns.

        >>> Coverage.from_context({"lot": ["A", "B"]}).unseen_batch({"lot": ["A", "C", None]})
        [[], [('lot', 'lot=C never in training')], []]
        """
        n = max((len(v) for v in columns.values()), default=0)
        out: list[list[tuple[str, str]]] = [[] for _ in range(n)]
        for dim in self.dimensions:
            values = columns.get(dim)
            if values is None:
                continue
            if dim == HOUR:
                present = [i for i, v in enumerate(values) if v is not None]
                if not present:
                    continue
                hours = hours_of(np.array([values[i] for i in present]))
                for i in np.flatnonzero(~self._seen_hours()[hours]):
                    row = present[int(i)]
                    out[row].append((HOUR, f"hour {_hour_label(int(hours[i]))} never in training"))
                continue
            seen = self.counts[dim]
            for i, label in enumerate(_labels(values)):
                if label is not None and label not in seen:
                    out[i].append((dim, f"{dim}={label} never in training"))
        return out

    def summary_lines(self) -> list[tuple[str, str, str]]:
        """``(dimension, distinct values, what was seen)`` per recorded dimension, for printing."""
        rows: list[tuple[str, str, str]] = []
        for dim in self.dimensions:
            values = self.counts[dim]
            if dim == HOUR:
                seen = [h for h in range(HOURS_PER_DAY) if values.get(_hour_label(h), 0) > 0]
                never = [h for h in range(HOURS_PER_DAY) if h not in seen]
                text = f"seen {_ranges(seen)} UTC" + (f"; never {_ranges(never)}" if never else "")
                rows.append((dim, f"{len(seen)} of {HOURS_PER_DAY}", text))
                continue
            shown = list(values.items())[:SUMMARY_VALUES]
            text = ", ".join(f"{v} ({c})" for v, c in shown)
            if len(values) > SUMMARY_VALUES:
                text += f", ... {len(values) - SUMMARY_VALUES} more"
            rows.append((dim, str(len(values)), text))
        return rows

    def __rich__(self) -> Table:
        table = Table(title=f"training data covered ({self.n_rows} rows)", title_justify="left")
        table.add_column("context")
        table.add_column("values", justify="right")
        table.add_column("seen (rows)")
        for row in self.summary_lines():
            table.add_row(*row)
        if not self.counts:
            table.add_row("-", "0", "no context columns (shift, lot, sku, asset, machine_state, time) in the data")
        return table


def _as_coverage(context: Coverage | Mapping[str, Any]) -> Coverage:
    return context if isinstance(context, Coverage) else Coverage.from_context(context)


def coverage_report(train_context: Coverage | Mapping[str, Any],
                    test_context: Coverage | Mapping[str, Any]) -> dict[str, Any]:
    """How much of a test period lies in contexts the training data never had, per dimension.

    Either argument is a :class:`Coverage` or the columns to build one (dimension -> values).
    Returns ``train_rows``, ``test_rows``, per dimension the test rows whose value training never
    saw (``dimensions[dim]["unseen"]``: value -> test rows, ``["unseen_rows"]``), and ``messages``,
    one sentence per unseen value, for a backtest to print next to its figures. ``unseen_rows`` is
    an upper bound on rows outside the training context (a row can be unseen in several dimensions)
    when the test side is given as a :class:`Coverage`, exact when it is given as columns.

    >>> r = coverage_report({"shift": ["day"] * 3}, {"shift": ["day", "night", "night"]})
    >>> r["dimensions"]["shift"]["unseen"], r["unseen_rows"], r["messages"]
    ({'night': 2}, 2, ['shift=night never in training (2 of 3 test rows)'])
    """
    train, test = _as_coverage(train_context), _as_coverage(test_context)
    dims: dict[str, Any] = {}
    messages: list[str] = []
    for dim in train.dimensions:
        if dim not in test.counts:
            continue
        seen = train.counts[dim]
        unseen = {v: c for v, c in test.counts[dim].items() if c > 0 and seen.get(v, 0) == 0}
        dims[dim] = {"train": dict(seen), "test": dict(test.counts[dim]), "unseen": unseen,
                     "unseen_rows": int(sum(unseen.values()))}
        for value, rows in unseen.items():
            what = f"hour {value}" if dim == HOUR else f"{dim}={value}"
            messages.append(f"{what} never in training ({rows} of {test.n_rows} test rows)")
    if isinstance(test_context, Coverage):
        unseen_rows = min(test.n_rows, sum(d["unseen_rows"] for d in dims.values()))
    else:
        unseen_rows = sum(1 for notes in train.unseen_batch(test_context) if notes)
    return {
        "train_rows": train.n_rows,
        "test_rows": test.n_rows,
        "dimensions": dims,
        "not_in_training": sorted(set(test.counts) - set(train.counts)),
        "unseen_rows": int(unseen_rows),
        "unseen_share": float(unseen_rows / test.n_rows) if test.n_rows else 0.0,
        "messages": messages,
    }
