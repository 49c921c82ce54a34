"""History from files and from the database, as the raw messages the worker would have received.

A replay runs the worker's own decode and scoring, so every source is turned into the bytes a
plant would have sent: SPC tables (CSV or Parquet, one row per part) become ``spc`` JSON records,
an image folder (MVTec layout or any folder of images) becomes ``frames`` envelopes around the
files' own bytes, and the database's stored measurements become the records that were stored.
Signal windows and camera frames are not kept in the database (only their features and scores
are), so a database replay re-scores SPC and re-fuses the stored signals and frames scores; the
Kafka source (:mod:`linewatch.replay.kafka_source`) replays every modality from its raw bytes.

Messages come back in event-time order (stable: rows with equal times keep the file's order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from linewatch.detectors.image_backbone import MIN_SIDE
from linewatch.errors import ConfigError, DataError
from linewatch.loaders import TabularData, load_table
from linewatch.replay.evaluate import from_utc64
from linewatch.schemas.codec import encode, encode_envelope
from linewatch.schemas.messages import FrameMeta, SpcRecord
from linewatch.schemas.topics import FRAMES, MACHINE_STATES, SCORES, SIGNALS, SPC
from linewatch.storage.connection import connect
from linewatch.streams.messages import RawMessage

#: Image files an image folder replay reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class History:
    """The messages to replay, in order, with what a report needs to know about them."""

    messages: list[RawMessage]
    description: str
    #: Per-event ground truth the source itself carries (an image folder's class folders): event id -> label.
    labels: dict[str, str] = field(default_factory=dict)
    #: The table that was read (file sources), for fitting a model on its early rows.
    table: TabularData | None = None


def _raw(topic: str, i: int, key: str, value: bytes, ts: datetime) -> RawMessage:
    return RawMessage(topic, 0, i, key.encode(), value, ts.timestamp())


def spc_table_history(path: Path, *, time_column: str, asset: str | None = None, asset_column: str | None = None,
                      sku: str = "default", part_column: str | None = None, columns: list[str] | None = None,
                      sep: str = ",", since: datetime | None = None, on_bad_rows: str = "error") -> History:
    """One SPC record per row of a CSV or Parquet file (``asset`` defaults to the file's stem).

    Rows before ``since`` are left out (they trained the model). The part id is ``part_column``'s
    value, else the row number, so event ids are stable from one replay of the file to the next.
    """
    table = load_table(path, sep=sep, columns=columns, time_column=time_column, on_bad_rows=on_bad_rows)
    if table.timestamps is None or not np.issubdtype(table.timestamps.dtype, np.datetime64):
        raise DataError(f"{path}: --time-column {time_column!r} must hold timestamps (ISO 8601) for a replay in "
                        "event time")
    assets = table.text.get(asset_column) if asset_column else None
    if asset_column and assets is None:
        raise ConfigError(f"{path} has no text column {asset_column!r} for --asset-column")
    parts = table.text.get(part_column) if part_column else None
    if part_column and parts is None:
        raise ConfigError(f"{path} has no text column {part_column!r} for --part-column")
    name = asset or path.stem
    messages: list[RawMessage] = []
    for i, (row, t) in enumerate(zip(table.X.tolist(), table.timestamps, strict=True)):
        ts = from_utc64(t)
        if since is not None and ts < since:
            continue
        a = str(assets[i]) if assets is not None else name
        rec = SpcRecord(asset_id=a, sku=sku, part_id=str(parts[i]) if parts is not None else f"row-{i}", ts=ts,
                        values=dict(zip(table.feature_names, row, strict=True)))
        messages.append(_raw(SPC.name, len(messages), a, encode(rec), ts))
    if not messages:
        raise DataError(f"{path}: no rows to replay" + (f" at or after {since.isoformat()}" if since else ""))
    return History(messages, f"{path} ({len(messages)} SPC records)", table=table)


def image_folder_history(root: Path, *, asset: str, sku: str, camera: str, start: datetime,
                         interval_s: float = 1.0) -> History:
    """Every image under ``root`` as a camera frame, one every ``interval_s`` from ``start``.

    An MVTec-layout folder (``test/<class>/*.png``; ``train/`` is left out) gives each frame its
    class as its label (``good`` is normal); any other folder is replayed as it is, unlabelled.
    """
    from PIL import Image, UnidentifiedImageError

    base = root / "test" if (root / "test").is_dir() else root
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "ground_truth" not in p.parts)
    if not files:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {base}")
    messages, labels = [], {}
    for i, path in enumerate(files):
        payload = path.read_bytes()
        try:
            with Image.open(path) as img:
                width, height, channels = img.width, img.height, 1 if img.mode in ("L", "I;16", "1") else 3
        except (UnidentifiedImageError, OSError):
            # Sent as it is (the header claims the smallest frame a worker decodes): the worker's
            # decode makes it a dead letter with the decoder's reason, as it would in the plant.
            width, height, channels = MIN_SIDE, MIN_SIDE, 3
        ts = start + timedelta(seconds=i * interval_s)
        meta = FrameMeta(asset_id=asset, camera=camera, sku=sku, part_id=f"{path.parent.name}-{path.stem}", ts=ts,
                         encoding="png" if path.suffix.lower() == ".png" else "jpeg", width=width, height=height,
                         channels=channels)
        messages.append(_raw(FRAMES.name, i, asset, encode_envelope(meta, payload), ts))
        if base is not root:
            labels[str(meta.event_id)] = path.parent.name
    return History(messages, f"{root} ({len(messages)} frames)", labels=labels)


#: Event time between two replayed recordings: longer than the signals agent's history gap
#: (:data:`~linewatch.streams.signals_pipeline.DEFAULT_HISTORY_GAP_S`), so a lagged detector restarts
#: its warm-up on every recording, as the recordings backtest scores each one as its own sequence.
RECORDING_GAP_S = 2 * 3600.0


def is_recordings_folder(root: Path) -> bool:
    """A waveform recordings folder (``train/good`` and ``test/<condition>`` of WAV, NPY or CSV files)."""
    from linewatch.signals.recordings import RECORDING_SUFFIXES

    test = root / "test"
    return test.is_dir() and any(p.suffix.lower() in RECORDING_SUFFIXES for p in test.rglob("*") if p.is_file())


def recordings_history(root: Path, *, asset: str, sample_rate: float, window_s: float, kind: str = "vibration",
                       speed_hz: float | None = None) -> History:
    """Every ``test/<condition>`` recording as the ``signals`` windows a sensor gateway would send, one after another.

    Cut exactly as ``linewatch train signals --data`` cuts the training recordings (same windows,
    same sensor names from the file), on one asset, each recording :data:`RECORDING_GAP_S` after the
    previous one; every signals frame of a recording is labelled with its condition folder.
    """
    from linewatch.schemas.codec import encode_signal
    from linewatch.schemas.ids import event_id
    from linewatch.signals.recordings import load_recordings, recording_messages, scan_recordings

    _, test = scan_recordings(root)
    if not test:
        raise ConfigError(f"{root}/test/ holds no recordings to replay (test/<condition>/*.wav|npy|csv)")
    messages: list[RawMessage] = []
    labels: dict[str, str] = {}
    offset = 0.0
    for rec in load_recordings(test, sample_rate=sample_rate):
        windows = recording_messages(rec, asset_id=asset, window_s=window_s, kind=kind, speed_hz=speed_hz)
        shift = timedelta(seconds=offset)
        for meta, samples in windows:
            meta = meta.model_copy(update={"start": meta.start + shift})
            messages.append(_raw(SIGNALS.name, len(messages), asset, encode_signal(meta, samples), meta.start))
            # the signals agent frames sensors in whole-second slots; a frame's event is its slot's start
            labels[str(event_id("signal_frame", asset, meta.start.replace(microsecond=0).isoformat()))] = rec.condition
        offset += (windows[-1][0].start - windows[0][0].start).total_seconds() + window_s + RECORDING_GAP_S
    return History(messages, f"{root} ({len(test)} recordings, {len(messages)} windows)", labels=labels)


def database_history(database_url: str, *, since: datetime, until: datetime, assets: Iterable[str] | None = None,
                     fuse_stored: Iterable[str] = ("signals", "frames")) -> History:
    """The stored SPC records, machine states and the other modalities' stored scores between two times.

    SPC is re-scored from its measurements; ``fuse_stored`` modalities (whose raw inputs are not
    kept) enter fusion with the scores the worker stored for them.
    """
    chosen = sorted(set(assets)) if assets is not None else None
    where, params = "ts >= %s AND ts < %s", [since, until]
    if chosen is not None:
        where += " AND asset_id = ANY(%s)"
        params.append(chosen)
    rows: list[tuple[datetime, int, str, bytes, str]] = []
    with connect(database_url) as conn:
        for ts, asset, sku, part, shift, values, limits in conn.execute(
                f"""SELECT ts, asset_id, sku, part_id, max(shift),
                           jsonb_object_agg(characteristic, value),
                           jsonb_object_agg(characteristic,
                                            jsonb_build_object('lsl', lsl, 'usl', usl, 'target', target))
                               FILTER (WHERE lsl IS NOT NULL OR usl IS NOT NULL OR target IS NOT NULL)
                    FROM spc_measurements WHERE {where}
                    GROUP BY ts, event_id, asset_id, sku, part_id ORDER BY ts, asset_id, part_id""", params):
            rec = SpcRecord(asset_id=asset, sku=sku, part_id=part, ts=ts, values=values, limits=limits or {},
                            shift=shift)
            rows.append((ts, 1, SPC.name, encode(rec), asset))
        for ts, asset, state, reason in conn.execute(
                f"SELECT ts, asset_id, state, reason FROM machine_states WHERE {where} ORDER BY ts", params):
            body = {"asset_id": asset, "ts": ts.isoformat(), "state": state, "reason": reason}
            rows.append((ts, 0, MACHINE_STATES.name, json.dumps(body).encode(), asset))
        modalities = list(fuse_stored)
        if modalities:
            for ts, value, asset in conn.execute(
                    f"SELECT ts, to_jsonb(s), asset_id FROM scores s WHERE {where} AND modality = ANY(%s) "
                    "ORDER BY ts", [*params, modalities]):
                rows.append((ts, 2, SCORES.name, json.dumps(_score_message(value), default=str).encode(), asset))
    rows.sort(key=lambda r: (r[0], r[1]))
    messages = [RawMessage(topic, 0, i, asset.encode(), value, ts.timestamp())
                for i, (ts, _, topic, value, asset) in enumerate(rows)]
    if not messages:
        raise DataError(f"the database holds nothing between {since.isoformat()} and {until.isoformat()}"
                        + (f" for {', '.join(chosen)}" if chosen else "") + "; check --since/--until and --asset")
    return History(messages, f"database {since.isoformat()} .. {until.isoformat()} ({len(messages)} messages)")


def _score_message(row: dict) -> dict:
    """A stored ``scores`` row as the ``scores`` message the worker published for it."""
    out = {k: row[k] for k in ("ts", "event_id", "modality", "asset_id", "sku", "part_id", "detector",
                               "model_version", "raw_score", "tail_probability", "calibrated_score", "threshold",
                               "is_anomaly", "ready", "scored_at")}
    explanation = row.get("explanation") or []
    out["explanation"] = json.loads(explanation) if isinstance(explanation, str) else explanation
    return out
