"""Score a batch of raw ``frames`` messages: decode, pick each frame's model, score, build rows.

This is the whole of the frames agent's work except I/O, so the live agent, a replay and the
benchmark run exactly this code. Per batch it returns the rows to persist (``scores``,
``frame_heatmaps``, dead letters) and the ``scores`` messages to publish; nothing here
touches Kafka or the database.

What happens to a batch, and why in this order:

1. every envelope is parsed (:func:`~linewatch.schemas.codec.decode_frame`); a bad one is a
   dead letter with the reason, never an exception;
2. each frame's models are looked up by its (asset, SKU, camera) scope; a frame with no model is
   counted as *unscored* (the agent logs it: a new SKU or camera waiting for
   ``linewatch train frames``), not dead-lettered, because the frame is fine;
3. the pixels of frames that have a model are decoded (PNG/JPEG with Pillow, raw with one
   ``np.frombuffer``; JPEGs much larger than the model's input are decoded at a reduced DCT
   scale, which is several times cheaper), an undecodable image is a dead letter;
4. each model scores its frames in one batched call (one backbone pass per group), or, given
   a :class:`ScoringPool`, in a few chunks on as many cores side by side; heat maps are drawn
   only for frames that alarm (``heatmaps="alarms"``, the default: a line scores every frame
   but needs a picture only of the few it flags) or for all (``"all"``).

Every score names the hot region in frame pixels, ``"region x0,y0-x1,y1"`` (half-open box, x
to the right, y down): the region above threshold around the heat map's peak where a heat map
was drawn, else the worst 8x8 model patch mapped onto the frame. The heat-map summary
(peak, box, a small PNG thumbnail) goes to ``frame_heatmaps`` keyed like the score, which is
how a ``scores`` consumer finds the picture: same ``(ts, event_id)``.
"""

from __future__ import annotations

import io
import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.heatmap import THUMBNAIL_SIZE, summarize_heatmap
from linewatch.detectors.image_backbone import MIN_SIDE
from linewatch.errors import DataError
from linewatch.schemas.codec import decode_frame
from linewatch.schemas.event_time import EventTimeWindow
from linewatch.schemas.frame_rows import FrameFeatureRow, FrameHeatmapRow, UnscoredFrameRow
from linewatch.schemas.messages import FrameMeta, Modality
from linewatch.schemas.score_encoder import Defect, EventRef
from linewatch.storage.model_registry import is_shadow
from linewatch.streams.batch import BatchResult, ModelSource
from linewatch.streams.messages import RawMessage

if TYPE_CHECKING:
    from linewatch.defects.stream import Classifier, DefectLayer

HEATMAPS_ALARMS = "alarms"
HEATMAPS_ALL = "all"
HEATMAP_MODES = (HEATMAPS_ALARMS, HEATMAPS_ALL)
#: One ordinary (not alarmed) frame in this many keeps its pooled features: good-part examples for
#: defect classifiers, at 10 % of the alarm-free traffic (~1.2 kB a kept frame at the default preset).
FEATURE_SAMPLE_EVERY = 10
#: Decoded frames above this many pixels are refused: 64 MPix is beyond any area-scan camera a
#: line inspects with, and a tiny PNG can claim a huge canvas (a decompression bomb).
MAX_FRAME_PIXELS = 64 * 2**20
#: Pillow's format names for the envelope's ``encoding`` values.
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}
#: Pillow modes that are grayscale once decoded (16-bit cameras included); everything else is colour.
#: Public: the inspection API judges gray and colour with this very set, as the worker does.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: Fewest frames worth a scoring task of their own: with fewer, handing work to another thread
#: costs more than running it beside the first chunk saves.
MIN_FRAMES_PER_TASK = 4

T = TypeVar("T")
R = TypeVar("R")


class ScoringPool:
    """Threads that decode and score chunks of one model's frames side by side.

    Why threads help: Pillow's decoders, onnxruntime and BLAS all release the GIL, so two chunks
    of a batch run on two cores, each with one onnxruntime and one BLAS thread. That is steadier
    than one call with two intra-op threads, whose idle spinning fights the search for the cores
    (see ``docs/images.md``). ``threads=1`` runs everything in the caller's thread.
    """

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads={threads!r} must be at least 1")
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="frames-score") if threads > 1 else None

    def chunks(self, items: Sequence[T]) -> list[Sequence[T]]:
        """``items`` cut into at most ``threads`` chunks of at least :data:`MIN_FRAMES_PER_TASK` (order kept)."""
        k = max(1, min(self.threads, len(items) // MIN_FRAMES_PER_TASK))
        step = math.ceil(len(items) / k) if items else 1
        return [items[i : i + step] for i in range(0, len(items), step)] or [items]

    def map(self, fn: Callable[[Sequence[T]], R], items: Sequence[T]) -> list[R]:
        """``fn`` over the chunks of ``items``, in parallel where there is more than one; results in order."""
        parts = self.chunks(items)
        if self._executor is None or len(parts) == 1:
            return [fn(p) for p in parts]
        return list(self._executor.map(fn, parts))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)


@dataclass(frozen=True)
class _Frame:
    msg: RawMessage
    meta: FrameMeta
    event_id: uuid.UUID
    payload: memoryview


def decode_image(meta: FrameMeta, payload: memoryview | bytes, *, min_size: tuple[int, int] | None = None
                 ) -> np.ndarray:
    """Pixels of one frame as ``uint8`` ``(H, W)`` or ``(H, W, 3)``, or a :class:`DataError` saying why not.

    The decoded image must have the size and channel count its header announces: a mismatch
    is a producer bug (or a camera switched to another mode) that would otherwise be scored
    against a model trained on different frames. ``min_size`` lets a JPEG much larger than
    that be decoded at a reduced DCT scale (never below ``min_size``); the caller resizes to
    the model anyway. 16-bit grayscale is reduced to its top 8 bits.

    >>> from linewatch.schemas.messages import FrameMeta
    >>> meta = FrameMeta(asset_id="a", camera="c", part_id="p", ts="2026-01-01T00:00:00Z",
    ...                  encoding="raw", width=3, height=2, channels=1)
    >>> decode_image(meta, bytes(range(6))).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    if meta.width * meta.height > MAX_FRAME_PIXELS:
        raise DataError(
            f"frame of {meta.width}x{meta.height} pixels exceeds the {MAX_FRAME_PIXELS}-pixel limit; "
            "send a region of interest or a downscaled frame"
        )
    if meta.encoding == "raw":
        shape = (meta.height, meta.width) if meta.channels == 1 else (meta.height, meta.width, meta.channels)
        return np.frombuffer(payload, dtype=np.uint8).reshape(shape)
    expected = _PIL_FORMATS[meta.encoding]
    try:
        with Image.open(io.BytesIO(payload)) as img:
            if img.format != expected:
                raise DataError(f"frame header says {meta.encoding} but the payload is {img.format or 'unknown'}")
            if img.size != (meta.width, meta.height):
                raise DataError(
                    f"{meta.encoding} image is {img.size[0]}x{img.size[1]} but the header announces "
                    f"{meta.width}x{meta.height}"
                )
            gray = img.mode in GRAY_MODES
            if gray != (meta.channels == 1):
                raise DataError(
                    f"{meta.encoding} image has mode {img.mode} ({'1' if gray else '3'} channel(s)) but the "
                    f"header announces {meta.channels}; send the frames the model was trained on"
                )
            if min_size is not None and expected == "JPEG":
                img.draft(img.mode, (min_size[1], min_size[0]))  # keeps both sides >= min_size
            img.load()
            return _to_uint8(img, gray)
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types for corrupt data; none may stop the agent
        raise DataError(f"cannot decode {meta.encoding} frame: {type(e).__name__}: {e}") from e


def _to_uint8(img: Image.Image, gray: bool) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        wide = np.asarray(img)
        return (np.clip(wide, 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)
    want = "L" if gray else "RGB"
    if img.mode != want:
        img = img.convert(want)
    return np.asarray(img)


def score_frames_batch(
    messages: list[RawMessage],
    models: ModelSource,
    *,
    heatmaps: str = HEATMAPS_ALARMS,
    thumbnail_size: int = THUMBNAIL_SIZE,
    pool: ScoringPool | None = None,
    event_window: EventTimeWindow | None = None,
    defects: DefectLayer | None = None,
) -> BatchResult:
    """Everything the agent must persist and publish for one batch of raw ``frames`` messages.

    ``pool`` decodes and scores chunks of each model's frames in parallel; without one, the
    batch runs in the caller's thread. The results are the same either way. Frames stamped
    outside ``event_window`` (default :class:`EventTimeWindow`) are dead letters; frames no model
    watches are still decoded (a bad one is a dead letter) and recorded in ``unscored_frames``.
    The pass that scores a frame also pools its patch features: kept in ``frame_features`` for
    alarms and a sample of the rest, and read by the scope's defect classifier (``defects``).
    """
    if heatmaps not in HEATMAP_MODES:
        raise ValueError(f"heatmaps={heatmaps!r}; use one of {', '.join(HEATMAP_MODES)}")
    pool = pool or ScoringPool(1)
    window, now = event_window or EventTimeWindow(), datetime.now(UTC)
    out = BatchResult()
    groups: dict[tuple[int, tuple[int, int]], tuple[ModelBundle, list[_Frame]]] = {}
    for msg in messages:
        try:
            meta, payload = decode_frame(msg.value)
            if min(meta.width, meta.height) < MIN_SIDE:
                raise DataError(f"frame is {meta.width}x{meta.height} pixels; frames need at least {MIN_SIDE} a side")
            if (late := window.violation(meta.ts, now)) is not None:
                raise DataError(late)
        except DataError as e:
            out.deadletters.add(msg, e)
            continue
        out.counts["frames"] += 1
        bundles = models.models_for(Modality.FRAMES, meta.asset_id, meta.sku, meta.camera)
        if not bundles:
            _record_unscored(out, msg, meta, payload)
        for model in bundles:
            # One group per model and model size: frames of one size are scored in one batch.
            key = (id(model), _model_size(model, meta))
            groups.setdefault(key, (model, []))[1].append(_Frame(msg, meta, meta.event_id, payload))

    scored_at = datetime.now(UTC)
    for model, frames in groups.values():
        parts = pool.map(partial(_decode_and_score, model), frames)
        decoded = [d for p in parts for d in p.decoded]
        for f, error in (e for p in parts for e in p.errors):
            out.deadletters.add(f.msg, error)
        out.seconds["decoding"] += sum(p.decode_s for p in parts)
        out.seconds["scoring"] += sum(p.score_s for p in parts)
        if decoded:
            t0 = time.perf_counter()
            patches = np.concatenate([p.patches for p in parts if p.patches is not None])
            raw = np.concatenate([p.scores for p in parts if p.scores is not None])
            pooled = np.concatenate([p.pooled for p in parts if p.pooled is not None])
            classes = _classify(defects, model, decoded, pooled) if defects is not None else None
            _emit_group(out, model, decoded, raw, patches, heatmaps == HEATMAPS_ALL, thumbnail_size, scored_at,
                        pooled, classes)
            out.seconds["scoring"] += time.perf_counter() - t0
    return out


def _record_unscored(out: BatchResult, msg: RawMessage, meta: FrameMeta, payload: memoryview) -> None:
    """A frame no model watches: decoded all the same, so garbage is dead-lettered, not silently dropped."""
    try:
        # JPEGs at the smallest DCT scale that keeps MIN_SIDE: validating the bytes is the point, not the pixels.
        decode_image(meta, payload, min_size=(MIN_SIDE, MIN_SIDE))
    except DataError as e:
        out.deadletters.add(msg, e)
        return
    scope = f"{meta.sku}/{meta.camera}"
    out.add_unscored(scope)
    out.tables[UnscoredFrameRow].append((
        meta.ts, meta.event_id, meta.asset_id, meta.camera, meta.sku, meta.part_id, meta.encoding, meta.width,
        meta.height, meta.channels, len(payload), f"no image model for SKU/camera {scope} yet",
    ))


@dataclass
class _Part:
    """One chunk's decoded frames, its bad ones, and the patch distances of the good ones."""

    decoded: list[tuple[_Frame, np.ndarray]]
    errors: list[tuple[_Frame, DataError]]
    patches: np.ndarray | None
    scores: np.ndarray | None
    pooled: np.ndarray | None
    decode_s: float
    score_s: float


def _decode_and_score(model: ModelBundle, frames: Sequence[_Frame]) -> _Part:
    """Decode a chunk's pixels and run them through the model (backbone + patch search) in one call."""
    t0 = time.perf_counter()
    size = model.inputs.image_size
    decoded: list[tuple[_Frame, np.ndarray]] = []
    errors: list[tuple[_Frame, DataError]] = []
    for f in frames:
        try:
            decoded.append((f, decode_image(f.meta, f.payload, min_size=size)))
        except DataError as e:
            errors.append((f, e))
    t1 = time.perf_counter()
    scores = patches = pooled = None
    if decoded:
        scores, patches, pooled = model.detector.score_patches_pooled([img for _, img in decoded])
    return _Part(decoded, errors, patches, scores, pooled, t1 - t0, time.perf_counter() - t1)


def _classify(defects: DefectLayer, model: ModelBundle, items: list[tuple[_Frame, np.ndarray]], pooled: np.ndarray
              ) -> list[Defect | None]:
    """Each frame's class from its scope's defect classifier.

    None where no classifier covers the frame, or where it was trained on another image model's
    features (another model, another feature space: retrain the classifier after the image model).
    """
    out: list[Defect | None] = [None] * len(items)
    groups: dict[tuple[int, str], tuple[Classifier, list[int]]] = {}
    for i, (f, _) in enumerate(items):
        clf = defects.classifier_for(Modality.FRAMES, f.meta.asset_id, f.meta.sku, f.meta.camera)
        if clf is not None and reads_features_of(clf, model, pooled.shape[1]):
            groups.setdefault((id(clf), f.meta.sku), (clf, []))[1].append(i)
    for (_, sku), (clf, idx) in groups.items():
        for i, d in zip(idx, defects.classify(clf, pooled[idx], modality=Modality.FRAMES, sku=sku), strict=True):
            out[i] = d
    return out


def reads_features_of(clf: Classifier, model: ModelBundle, width: int) -> bool:
    """Whether ``clf`` was trained on ``model``'s pooled features (its recorded image model, and their width)."""
    trained_on = clf.meta.get("feature_model")
    return len(clf.feature_names) == width and trained_on in (None, model.version)


def keeps_features(event_id: uuid.UUID, anomalous: bool) -> bool:
    """Whether a frame's pooled features are stored: every alarm, and one ordinary frame in FEATURE_SAMPLE_EVERY.

    Chosen by event id, not at random, so the live worker and a replay keep the same frames.
    """
    return anomalous or event_id.int % FEATURE_SAMPLE_EVERY == 0


def _model_size(model: ModelBundle, meta: FrameMeta) -> tuple[int, int]:
    """The size the model reads this frame at (its aspect ratio may be kept, see PatchCore's ``resize``)."""
    size_for = getattr(model.detector, "model_size", None)
    if size_for is None:
        return tuple(model.inputs.image_size)  # type: ignore[return-value]
    return tuple(size_for((meta.height, meta.width)))


def _scaled_box(box: np.ndarray, sx: float, sy: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A ``(top, left, bottom, right)`` box at model resolution as ``(x0, y0, x1, y1)`` frame pixels, covering it."""
    top, left, bottom, right = (float(v) for v in box)
    x0, y0 = int(np.floor(left * sx)), int(np.floor(top * sy))
    x1, y1 = int(np.ceil(right * sx)), int(np.ceil(bottom * sy))
    return max(0, x0), max(0, y0), min(width, max(x1, x0 + 1)), min(height, max(y1, y0 + 1))


def _png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _emit_group(out: BatchResult, model: ModelBundle, items: list[tuple[_Frame, np.ndarray]], raw: np.ndarray,
                patches: np.ndarray, all_heatmaps: bool, thumbnail_size: int, scored_at: datetime,
                pooled: np.ndarray, classes: list[Defect | None] | None) -> None:
    """Calibrate one model's patch distances; heat maps for the alarms (or all); features; rows and messages."""
    det = model.detector
    mh, mw = model.inputs.image_size
    n, ph, pw = patches.shape
    verdict = model.calibrate(raw, None)
    alarms = verdict.is_anomaly
    # The worst patch of every frame as a (top, left, bottom, right) box at model resolution.
    worst = patches.reshape(n, -1).argmax(axis=1)
    pr, pc = np.divmod(worst, pw)
    cell_h, cell_w = mh / ph, mw / pw
    patch_boxes = np.stack([pr * cell_h, pc * cell_w, (pr + 1) * cell_h, (pc + 1) * cell_w], axis=1)

    # A shadow (challenger) model draws no heat maps: they are evidence for routed alerts, and its
    # frames' champion draws those; its verdicts go to shadow_scores only.
    drawn = np.arange(0) if is_shadow(model) else np.arange(n) if all_heatmaps else np.flatnonzero(alarms)
    heat = det.heatmap_from_patch_scores(patches[drawn], (mh, mw)) if drawn.size else None
    heat_row = {int(i): k for k, i in enumerate(drawn)}
    out.counts["heatmaps"] += int(drawn.size)
    raw_threshold = model.raw_threshold
    detector, version = model.detector_name, model.version
    raw_l = raw.tolist()
    heatmap_rows = out.tables[FrameHeatmapRow]
    explanations = []
    for i, (f, _) in enumerate(items):
        meta = f.meta
        sx, sy = meta.width / mw, meta.height / mh
        region_box = _scaled_box(patch_boxes[i], sx, sy, meta.width, meta.height)
        if heat is not None and i in heat_row:
            summary = summarize_heatmap(heat[heat_row[i]], threshold=raw_threshold, thumbnail_size=thumbnail_size)
            hot_box: tuple[int | None, ...] = (None, None, None, None)
            if summary["box"] is not None:
                region_box = _scaled_box(np.asarray(summary["box"]), sx, sy, meta.width, meta.height)
                hot_box = region_box
            peak_y, peak_x = summary["peak"]
            heatmap_rows.append((
                meta.ts, f.event_id, meta.asset_id, meta.camera, meta.sku, meta.part_id, detector, version,
                meta.width, meta.height, raw_l[i], summary["peak_value"], raw_threshold,
                min(meta.width - 1, int((peak_x + 0.5) * sx)), min(meta.height - 1, int((peak_y + 0.5) * sy)),
                *hot_box, summary["area_fraction"], _png(summary["thumbnail"]),
            ))
        x0, y0, x1, y1 = region_box
        explanations.append([{"name": f"region {x0},{y0}-{x1},{y1}", "value": raw_l[i], "share": 1.0}])
    events = [EventRef(f.event_id, f.meta.asset_id, f.meta.sku, f.meta.part_id, f.meta.ts, f.meta.machine_state)
              for f, _ in items]
    if not is_shadow(model):
        feature_rows = out.tables[FrameFeatureRow]
        alarm_l = alarms.tolist()
        for i, (f, _) in enumerate(items):
            if keeps_features(f.event_id, alarm_l[i]):
                feature_rows.append((f.meta.ts, f.event_id, f.meta.asset_id, f.meta.camera, f.meta.sku, detector,
                                     version, alarm_l[i], pooled[i].tolist()))
    out.add_scores(Modality.FRAMES, model, events, raw=raw, tail=verdict.tail_probability,
                   calibrated=verdict.calibrated, is_anomaly=alarms, ready=True, explanations=explanations,
                   scored_at=scored_at, defects=classes)
