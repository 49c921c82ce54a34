"""Produce camera frames onto the ``frames`` topic, as a camera gateway would, optionally at line pace.

A frame travels as one binary envelope (JSON :class:`~linewatch.schemas.messages.FrameMeta`
header + the encoded image, never base64), keyed by asset so one asset's frames stay in order
on one partition. PNG is lossless and what the simulator writes; JPEG is what most smart
cameras send (several times smaller, slightly lossy); ``raw`` is the camera buffer as is
(largest on the wire, nothing to decode).

>>> import numpy as np
>>> from datetime import UTC, datetime
>>> from linewatch.schemas.codec import decode_frame
>>> f = CameraFrame("press-1", "cam-1", "bracket-a", "P1", datetime(2026, 1, 1, tzinfo=UTC),
...                 np.zeros((16, 24, 3), dtype=np.uint8))
>>> meta, payload = decode_frame(encode_frame(f, "raw"))
>>> meta.width, meta.height, meta.channels, len(payload)
(24, 16, 3, 1152)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image

from linewatch.errors import ConfigError, DataError
from linewatch.producers.spc import publish_paced
from linewatch.schemas.codec import encode_envelope
from linewatch.schemas.messages import FrameMeta
from linewatch.schemas.topics import FRAMES

ENCODINGS = ("png", "jpeg", "raw")
#: Quality of simulated JPEG frames: what inspection cameras default to (artefacts stay below
#: the sensor noise the simulator draws).
JPEG_QUALITY = 92
#: zlib level for PNG frames: level 1 compresses these frames almost as well as 6 at a third of
#: the cost, which matters when one producer feeds a whole line.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class CameraFrame:
    """One frame as a camera gateway has it: who took it, of what, when, and the pixels."""

    asset_id: str
    camera: str
    sku: str
    part_id: str
    ts: datetime
    image: np.ndarray  # uint8 (H, W) grayscale or (H, W, 3) RGB
    #: The station's state when the frame was taken (``FrameMeta.machine_state``); None = not reported.
    machine_state: str | None = None


def encode_frame(frame: CameraFrame, encoding: str = "png", *, jpeg_quality: int = JPEG_QUALITY) -> bytes:
    """One ``frames`` message: the envelope header describes the image exactly as encoded."""
    if encoding not in ENCODINGS:
        raise ConfigError(f"encoding={encoding!r}; use one of {', '.join(ENCODINGS)}")
    img = np.asarray(frame.image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise DataError(f"frame image must be uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    meta = FrameMeta(
        asset_id=frame.asset_id, camera=frame.camera, sku=frame.sku, part_id=frame.part_id, ts=frame.ts,
        encoding=encoding, width=img.shape[1], height=img.shape[0], channels=1 if img.ndim == 2 else 3,  # type: ignore[arg-type]
        machine_state=frame.machine_state,
    )
    if encoding == "raw":
        payload = np.ascontiguousarray(img).tobytes()
    else:
        buf = io.BytesIO()
        if encoding == "png":
            Image.fromarray(img).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        else:
            Image.fromarray(img).save(buf, format="JPEG", quality=jpeg_quality)
        payload = buf.getvalue()
    return encode_envelope(meta, payload)


def simulated_camera(
    sku: str,
    *,
    asset_id: str,
    camera: str,
    n: int,
    size: int = 256,
    seed: int = 0,
    defect_rate: float = 0.05,
    start: datetime | None = None,
    interval_s: float = 1.0,
    labels: list[str] | None = None,
    defects: Sequence[str] | None = None,
) -> Iterator[CameraFrame]:
    """``n`` frames of simulated parts passing one camera, one every ``interval_s`` of event time.

    Part ids and timestamps are deterministic, so a re-run produces the same event ids (and the
    database keeps one copy). ``labels``, when given, receives each frame's ground truth
    (``good`` or the defect type) in order, for scoring the run afterwards. ``defects`` limits the
    defect types drawn (default: all of them).
    """
    from linewatch.simulation.frames import DEFECT_TYPES, stream_frames

    t0 = start or datetime(2026, 1, 1, tzinfo=UTC)
    for fr in stream_frames(sku, size=size, seed=seed, defect_rate=defect_rate, limit=n,
                            defects=DEFECT_TYPES if defects is None else defects):
        if labels is not None:
            labels.append(fr.label)
        yield CameraFrame(asset_id, camera, sku, f"{sku}-{seed}-{fr.index:06d}",
                          t0 + timedelta(seconds=fr.index * interval_s), fr.image)


def produce_frames(
    bootstrap: str,
    frames: Iterable[CameraFrame],
    *,
    encoding: str = "png",
    rate_per_s: float | None = None,
    extra: Iterable[bytes] = (),
    progress: Callable[[int], None] | None = None,
    chunk: int = 16,
    security: Mapping[str, str] | None = None,
) -> int:
    """Encode and send ``frames`` (keyed by asset) plus raw ``extra`` payloads; returns how many were sent.

    ``rate_per_s`` paces the stream like a line passing parts under the camera; None sends as
    fast as encoding allows. Frames go out in chunks of ``chunk`` so pacing stays smooth and a
    chunk's encoding overlaps the previous chunk's delivery.
    """
    if encoding not in ENCODINGS:
        raise ConfigError(f"encoding={encoding!r}; use one of {', '.join(ENCODINGS)}")
    return publish_paced(bootstrap, FRAMES.name,
                         ((frame.asset_id.encode(), encode_frame(frame, encoding)) for frame in frames),
                         rate_per_s=rate_per_s, chunk=chunk, progress=progress, extra=extra, security=security)
