"""A training table's context columns (shift, lot, SKU, asset, machine state), for its coverage.

Files: the loaders hand every non-feature column over row-aligned (``TabularData.text``), and
:func:`context_from_columns` picks the context dimensions among them. A training query's context
is read by running the query once more (:func:`context_from_query`); counts do not depend on row
order. The hour of day comes from the loader's parsed time column (:func:`training_context`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from linewatch.coverage import COLUMN_ALIASES, HOUR


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
