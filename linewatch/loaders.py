"""Every way linewatch reads data it did not produce itself: CSV, Parquet, SQL queries and topics.

``linewatch train``, ``linewatch backtest csv`` and the Python API all read through here, so a
file trains a model exactly as it backtests one.

Tables (:func:`load_csv`, :func:`load_parquet`, :func:`load_table`, :func:`load_query`) come
back as :class:`TabularData`:

- features are ``columns`` in the order given, or else every *numeric-looking* column (other
  than the label, time and group columns), in file order: one in which more than half of the
  non-empty cells are numbers. Text columns such as an asset or part id are skipped (a CSV lists
  them in ``ignored_columns``);
- a bad cell (not a finite number, or empty) in a feature column is never a silent drop of the
  column: ``on_bad_rows="error"`` (the default) raises a DataError naming the file, column, row
  and value; ``"skip"`` drops those rows and counts them in ``skipped_rows``;
- the label column is read for metrics and *never* used as a feature or to select rows.
  Labels: ``1/0``, ``true/false``, ``yes/no``; or a category column in which ``none``,
  ``normal``, ``ok``, ``good``, ``0`` and the empty string mean normal and any other value
  names a kind of anomaly (``linewatch simulate spc --csv`` writes such a ``fault`` column);
- with a time column, CSV rows are sorted by it (stable), so charts with memory (EWMA,
  CUSUM, MEWMA, online models) see the process in order.

A topic's history (:func:`read_signal_topic`) is read through :mod:`linewatch.kafka`, and a
query runs through :func:`linewatch.storage.connection.connect`. Bad input raises
:class:`~linewatch.errors.ConfigError` (wrong path, column, separator or query) or
:class:`~linewatch.errors.DataError` (the content itself) with the row and column at fault.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = Path(tmp) / "parts.csv"
...     _ = path.write_text("ts,asset,bore,fault\\n2026-01-01T00:00:01,a,1.5,none\\n2026-01-01T00:00:00,a,1.2,shift\\n")
...     d = load_csv(path, label_column="fault", time_column="ts")
>>> d.feature_names, d.X[:, 0].tolist(), d.labels.tolist(), d.ignored_columns
(['bore'], [1.2, 1.5], [True, False], ['asset'])
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from linewatch.errors import ConfigError, DataError

if TYPE_CHECKING:
    from linewatch.schemas.messages import SignalMeta

#: The consumer group the topic reader names itself with (it commits nothing).
TOPIC_READER_GROUP = "linewatch-train"
#: Query rows inspected to decide which result columns are numeric.
NUMERIC_SNIFF_ROWS = 100


#: A column is numeric-looking (a feature whose odd cells are errors, not a text column) when more
#: than this share of its non-empty cells parse as numbers: an id column such as ``P-1007`` has
#: none, a measurement column with a few ``n/a`` cells has almost all.
NUMERIC_LOOKING_SHARE = 0.5
#: What a loader does with a row holding a bad cell in a feature column: raise, or drop and count it.
BAD_ROW_POLICIES = ("error", "skip")


#: Label spellings that mean "normal"; anything else non-empty names an anomaly.
NORMAL_LABELS = frozenset({"0", "false", "no", "n", "none", "normal", "ok", "good", ""})
TRUE_LABELS = frozenset({"1", "true", "yes", "y"})


@dataclass(frozen=True)
class TabularData:
    """One table (CSV, Parquet or query result) as arrays, in time order when a time column was given."""

    X: np.ndarray
    feature_names: list[str]
    labels: np.ndarray | None = None  # bool per row
    label_values: np.ndarray | None = None  # the raw label strings, for per-kind recall
    timestamps: np.ndarray | None = None  # datetime64[us] (UTC) or float
    ignored_columns: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None  # the group column's values (e.g. asset ids), as strings
    skipped_rows: int = 0  # rows dropped for a bad feature cell (``on_bad_rows="skip"``)
    #: The ignored text columns (shift, lot, asset id...), row-aligned with ``X``: a model's context.
    text: dict[str, np.ndarray] = field(default_factory=dict)


def _parse_label(raw: str) -> tuple[bool, str]:
    v = raw.strip().lower()
    if v in TRUE_LABELS:
        return True, v
    if v in NORMAL_LABELS:
        return False, v
    try:
        return float(v) != 0.0, v
    except ValueError:
        return True, v  # a named anomaly kind, e.g. "mean_shift"


def parse_times(values: list[str], column: str) -> np.ndarray:
    """ISO 8601 (naive = UTC) to datetime64[us] UTC, or plain numbers to float.

    Shared by the time column and by label windows (:mod:`linewatch.backtest.labels`), so a
    window's bounds are read exactly as the rows they are matched against.
    """
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        pass
    out = []
    for i, v in enumerate(values):
        try:
            t = datetime.fromisoformat(v.strip())
        except ValueError as e:
            raise DataError(
                f"time column {column!r}, data row {i + 1}: {v!r} is neither a number nor an ISO 8601 time"
            ) from e
        t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        out.append(np.datetime64(t.replace(tzinfo=None), "us"))
    return np.array(out, dtype="datetime64[us]")


def _is_number(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


def _parses(v: str) -> bool:
    """A number, finite or not: ``nan`` in a column of numbers is a bad cell, not a sign of text."""
    try:
        float(v)
    except ValueError:
        return False
    return True


def _numeric_looking(values: tuple[str, ...]) -> bool:
    filled = [v for v in values if v.strip()]
    return bool(filled) and sum(_parses(v) for v in filled) > NUMERIC_LOOKING_SHARE * len(filled)


def _bad_cell_error(path: Path, name: str, values: tuple[str, ...], bad: np.ndarray) -> DataError:
    """The first bad cell of column ``name``, how many there are, and the two ways out."""
    i = int(np.flatnonzero(bad)[0])
    v = values[i]
    what = "is NaN or infinite" if _parses(v) else ("is empty" if not v.strip() else "is not a number")
    more = f" ({int(bad.sum())} rows have a bad cell in this column)" if bad.sum() > 1 else ""
    return DataError(
        f"{path}: column {name!r}, data row {i + 1}: {v!r} {what}{more}. Fix the file, pass "
        f"--on-bad-rows skip to drop such rows (the report counts them), or --columns to choose the features"
    )


def load_csv(
    path: str | Path,
    *,
    sep: str = ",",
    columns: list[str] | None = None,
    label_column: str | None = None,
    time_column: str | None = None,
    label_optional: bool = False,
    group_column: str | None = None,
    on_bad_rows: str = "error",
) -> TabularData:
    """Read one CSV into :class:`TabularData`; see the module docstring for the column rules.

    ``label_optional=True`` (for a training file) tolerates a missing label column; when it
    is there it is still read, so it can never slip in as a feature. ``on_bad_rows`` is
    ``"error"`` or ``"skip"`` (:data:`BAD_ROW_POLICIES`).
    """
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise ConfigError(f"--on-bad-rows {on_bad_rows!r}; use one of {', '.join(BAD_ROW_POLICIES)}")
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"CSV file {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration as e:
            raise DataError(f"{path} is empty; expected a header row and data rows") from e
        rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    if len(header) == 1 and sep not in {";", "\t"} and ";" in header[0]:
        raise ConfigError(f"{path} looks ';'-separated (header {header[0]!r}); pass --sep ';'")
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise DataError(
            f"{path}: data row {bad[0] + 1} has {len(rows[bad[0]])} fields, the header has {len(header)}; "
            f"check --sep (now {sep!r})"
        )
    index = {name: i for i, name in enumerate(header)}
    if label_optional and label_column not in index:
        label_column = None
    named = (("label column", label_column), ("time column", time_column), ("group column", group_column))
    for what, name in named:
        if name is not None and name not in index:
            raise ConfigError(f"{what} {name!r} is not in {path}; columns are: {', '.join(header)}")
    cols = list(zip(*rows, strict=True))
    reserved = {label_column, time_column, group_column}
    ignored: list[str] = []
    if columns:
        missing = [c for c in columns if c not in index]
        if missing:
            raise ConfigError(f"--columns {missing} not in {path}; columns are: {', '.join(header)}")
        if reserved & set(columns) - {None}:
            raise ConfigError("the label, time and group columns cannot also be feature --columns")
        features = list(columns)
    else:
        features = []
        for name in header:
            if name in reserved:
                continue
            (features if _numeric_looking(cols[index[name]]) else ignored).append(name)
        if not features:
            raise DataError(f"{path} has no numeric columns besides the label and time columns "
                            f"(text columns: {', '.join(ignored) or 'none'}); name the features with --columns")
    X = np.full((len(rows), len(features)), np.nan)
    keep = np.ones(len(rows), dtype=bool)
    for j, name in enumerate(features):
        values = cols[index[name]]
        bad = np.array([not _is_number(v) for v in values])
        if bad.any() and on_bad_rows == "error":
            raise _bad_cell_error(path, name, values, bad)
        keep &= ~bad
        X[~bad, j] = [float(v) for v, b in zip(values, bad, strict=True) if not b]
    skipped = int((~keep).sum())
    if not keep.any():
        raise DataError(f"{path}: every row has a bad cell in a feature column; choose the features with --columns")
    if skipped:
        X = X[keep]
        cols = [tuple(v for v, k in zip(c, keep, strict=True) if k) for c in cols]
    labels = label_values = times = groups = None
    if group_column is not None:
        groups = np.array([v.strip() for v in cols[index[group_column]]], dtype=object)
    if label_column is not None:
        parsed = [_parse_label(v) for v in cols[index[label_column]]]
        labels = np.array([p[0] for p in parsed], dtype=bool)
        label_values = np.array([p[1] for p in parsed], dtype=object)
    if time_column is not None:
        times = parse_times(list(cols[index[time_column]]), time_column)
        order = np.argsort(times, kind="stable")
        X, times = X[order], times[order]
        if labels is not None:
            labels, label_values = labels[order], label_values[order]
        if groups is not None:
            groups = groups[order]
    others = [name for name in header if name not in reserved and name not in features]
    text = {name: np.array([v.strip() for v in cols[index[name]]], dtype=object) for name in others}
    if time_column is not None:
        text = {name: v[order] for name, v in text.items()}
    return TabularData(X, features, labels, label_values, times, ignored, groups, skipped, text)


def load_parquet(
    path: str | Path,
    *,
    columns: list[str] | None = None,
    label_column: str | None = None,
    time_column: str | None = None,
) -> TabularData:
    """Read a Parquet file: features are ``columns`` or every int/float column but the label column.

    Needs pandas and pyarrow, which linewatch does not install (a missing one is a ConfigError
    that says what to install). Rows keep the file's order; the other columns come as ``text``.
    """
    path = Path(path)
    try:
        import pandas as pd
    except ImportError as e:
        raise ConfigError("reading Parquet needs pandas and pyarrow: pip install pandas pyarrow") from e
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    frame = pd.read_parquet(path)
    names = columns or [c for c in frame.columns if frame[c].dtype.kind in "fi" and c != label_column]
    times = frame[time_column].to_numpy(dtype="datetime64[us]") if time_column else None
    reserved = {*names, label_column, time_column}
    text = {str(c): frame[c].astype(str).to_numpy(dtype=object) for c in frame.columns if c not in reserved}
    return TabularData(frame[names].to_numpy(dtype=float), list(names), timestamps=times, text=text)


def load_table(
    path: str | Path,
    *,
    sep: str = ",",
    columns: list[str] | None = None,
    label_column: str | None = None,
    time_column: str | None = None,
    on_bad_rows: str = "error",
) -> TabularData:
    """A ``.parquet`` file through :func:`load_parquet`, anything else as a CSV through :func:`load_csv`.

    The label column is optional here (known-good training data usually has none), but when it
    is there it is read, so it never slips in as a feature. ``on_bad_rows`` applies to CSVs
    (a Parquet column has one type, so it has no text cells to skip).
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return load_parquet(path, columns=columns, label_column=label_column, time_column=time_column)
    return load_csv(path, sep=sep, columns=columns, label_column=label_column, time_column=time_column,
                    label_optional=True, on_bad_rows=on_bad_rows)


def run_training_query(database_url: str, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and rows of a user's training query, run read-only.

    No statement timeout (a training query may scan months of history), but a read-only
    transaction: a query that would write (``sql:DELETE ...``) fails instead of committing.
    """
    import psycopg

    from linewatch.storage.connection import connect

    try:
        with connect(database_url, statement_timeout_s=None) as conn:
            conn.read_only = True
            cur = conn.execute(query)  # the user's own query, run with their database credentials
            header = [d.name for d in cur.description or []]
            rows = cur.fetchall()
            conn.rollback()
    except psycopg.Error as e:
        raise ConfigError(f"the training query failed: {e}") from e
    return header, rows


def load_query(
    database_url: str,
    query: str,
    *,
    columns: list[str] | None = None,
    time_column: str | None = None,
) -> TabularData:
    """Run ``query`` (one row per part) on ``database_url``; features are ``columns`` or its numeric columns.

    The query is the user's own, run with their credentials in a read-only transaction; any
    database error, including one reaching the database or a query that tries to write, is a
    ConfigError carrying psycopg's message. A column counts as
    numeric when its first :data:`NUMERIC_SNIFF_ROWS` values are all ints or floats; the time
    column (timestamps, with or without a zone) is read as naive UTC ``datetime64[us]``.
    """
    header, rows = run_training_query(database_url, query)
    if not rows:
        raise ConfigError("the training query returned no rows; widen its time range or check its filters")
    numeric = [i for i, name in enumerate(header)
               if name != time_column and all(isinstance(r[i], int | float) for r in rows[:NUMERIC_SNIFF_ROWS])]
    names = columns or [header[i] for i in numeric]
    missing = [c for c in names if c not in header]
    if missing:
        raise ConfigError(f"columns {missing} are not in the query's result {header}")
    idx = [header.index(c) for c in names]
    X = np.array([[float(r[i]) for i in idx] for r in rows])
    times = None
    if time_column:
        if time_column not in header:
            raise ConfigError(f"time column {time_column!r} is not in the query's result {header}")
        t = header.index(time_column)
        times = np.array([r[t].replace(tzinfo=None) for r in rows], dtype="datetime64[us]")
    return TabularData(X, names, timestamps=times)


def time_span(times: np.ndarray | None) -> tuple[datetime, datetime] | tuple[None, None]:
    """(first, last) of ``times`` as aware UTC datetimes, or (None, None) without (datetime) times.

    What a model version records as its training window; numeric time columns have no clock
    meaning and give (None, None).
    """
    if times is None or len(times) == 0 or not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        return None, None
    lo, hi = (np.asarray(t).astype("datetime64[us]").item().replace(tzinfo=UTC)
              for t in (np.min(times), np.max(times)))
    return lo, hi


def read_signal_topic(bootstrap: str, *, security: Mapping[str, str] | None = None
                      ) -> tuple[list[tuple[SignalMeta, np.ndarray]], int]:
    """Every decodable window in the ``signals`` topic up to its current end, and how many were skipped.

    Windows that fail to decode are counted, not raised: a topic that also carries a few bad
    messages (the agent dead-letters them) still trains. An empty result is a ConfigError.
    ``security`` is the broker's TLS/SASL client configuration.
    """
    from linewatch.kafka import read_to_end
    from linewatch.schemas.codec import decode_signal
    from linewatch.schemas.topics import SIGNALS

    windows: list[tuple[SignalMeta, np.ndarray]] = []
    skipped = 0
    for msg in read_to_end(bootstrap, SIGNALS.name, group_id=TOPIC_READER_GROUP, security=security):
        try:
            windows.append(decode_signal(msg.value()))
        except DataError:
            skipped += 1
    if not windows:
        raise ConfigError("the `signals` topic holds no decodable windows to train on")
    return windows, skipped
