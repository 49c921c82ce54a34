"""Read a training table's context columns (shift, lot, SKU, asset, machine state) for its coverage.

Why apart from :mod:`linewatch.loaders`: the loaders turn a table into the numeric features a
detector fits on and drop text columns; coverage needs exactly those text columns. Counts do not
depend on row order, so this reads the same file (or query) on its own and need not line its
rows up with the features; the hour of day comes from the loader's parsed time column.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.coverage import COLUMN_ALIASES, HOUR
from linewatch.errors import ConfigError


def _pick(header: list[str]) -> dict[str, str]:
    """Dimension -> the first column of ``header`` that names it."""
    found: dict[str, str] = {}
    for dim, aliases in COLUMN_ALIASES.items():
        name = next((a for a in aliases if a in header), None)
        if name is not None:
            found[dim] = name
    return found


def context_from_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Context dimensions among a loader's row-aligned text columns (:attr:`TabularData.text`)."""
    return {dim: columns[col] for dim, col in _pick(list(columns)).items()}


def context_from_file(path: str | Path, *, sep: str = ",") -> dict[str, np.ndarray]:
    """Context columns of a CSV or Parquet training file, by dimension (absent ones are left out)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        try:
            import pandas as pd
        except ImportError as e:
            raise ConfigError("reading Parquet needs pandas and pyarrow: pip install pandas pyarrow") from e
        frame = pd.read_parquet(path)
        return {dim: frame[col].to_numpy(dtype=object) for dim, col in _pick(list(frame.columns)).items()}
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        header = [h.strip() for h in next(reader, [])]
        picked = _pick(header)
        index = {dim: header.index(col) for dim, col in picked.items()}
        values: dict[str, list[str]] = {dim: [] for dim in picked}
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            for dim, i in index.items():
                values[dim].append(row[i] if i < len(row) else "")
    return {dim: np.array(v, dtype=object) for dim, v in values.items()}


def context_from_query(database_url: str, query: str) -> dict[str, np.ndarray]:
    """Context columns of a training query's result, read in a read-only transaction like the features.

    This runs the query a second time (:func:`linewatch.loaders.load_query` keeps only numeric
    columns); a training query is run once per ``train``, so the cost is one more scan.
    """
    from linewatch.loaders import run_training_query

    header, rows = run_training_query(database_url, query)
    return {dim: np.array([r[header.index(col)] for r in rows], dtype=object)
            for dim, col in _pick(header).items()}


def training_context(context: dict[str, np.ndarray], timestamps: Any) -> dict[str, Any]:
    """``context`` plus the hour of day from the training window's timestamps (when there are datetimes)."""
    out: dict[str, Any] = dict(context)
    if timestamps is not None and np.asarray(timestamps).dtype.kind == "M":
        out[HOUR] = np.asarray(timestamps)
    return out
