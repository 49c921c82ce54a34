"""The labelled set for retraining: every dispositioned event with its verdict, class and features.

One row per event behind a disposition (an alert's scored events, or the event an event-level
disposition names), with the latest verdict, the defect class, the alert, asset, modality, event
id and time, the ``detector@model_version`` pairs that scored it, and its features where the
database holds them (:func:`~linewatch.feedback.dispositions.event_features`) as one column each.
Feature columns are the union over the exported events, sorted, so a CSV has one header; an
event without a feature leaves its cell empty.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from linewatch.errors import ConfigError
from linewatch.feedback.dispositions import event_features, labelled_events
from linewatch.storage.connection import connect

#: The columns every labelled row has, in file order; feature columns follow, sorted by name.
BASE_COLUMNS = ("event_id", "ts", "asset_id", "modality", "sku", "part_id", "verdict", "defect_class", "alert_id",
                "disposition_id", "model_versions", "max_calibrated_score")


def labelled_rows(database_url: str, *, since: datetime | None = None,
                  verdicts: Sequence[str] = ()) -> tuple[list[dict[str, object]], list[str]]:
    """The labelled rows (base columns plus features) and the sorted feature column names."""
    with connect(database_url) as conn:
        events = labelled_events(conn, since=since, verdicts=verdicts)
        features = event_features(conn, events)
    names = sorted({k for f in features.values() for k in f} - set(BASE_COLUMNS))
    rows = []
    for e in events:
        row: dict[str, object] = {c: e.get(c) for c in BASE_COLUMNS}
        row["model_versions"] = ";".join(sorted(e["model_versions"]))
        row.update(features.get(e["event_id"], {}))
        rows.append(row)
    return rows, names


def write_labelled_set(database_url: str, out: Path, *, since: datetime | None = None,
                       verdicts: Sequence[str] = ()) -> tuple[int, int]:
    """Write the labelled set to ``out`` (.csv, or .parquet with pyarrow); returns (rows, feature columns)."""
    rows, names = labelled_rows(database_url, since=since, verdicts=verdicts)
    header = [*BASE_COLUMNS, *names]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("writing Parquet needs pyarrow (pip install pyarrow), or export to a .csv file"
                              ) from None
        columns = {c: [_cell(r.get(c)) if c in BASE_COLUMNS[:-1] else r.get(c) for r in rows] for c in header}
        pq.write_table(pa.table(columns), out)
    else:
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([_cell(r.get(c)) for c in header] for r in rows)
    return len(rows), len(names)


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, int | float) else str(value)
