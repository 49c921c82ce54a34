"""Patch features from the shipped EfficientNet-Lite0 ONNX graph, with onnxruntime only.

Why: PatchCore-style detectors compare mid-level CNN features of image patches. The network
was exported once with torch (:mod:`linewatch.export.efficientnet_backbone`) and the ONNX file
ships in ``linewatch/models/`` with a JSON sidecar (checksum, input format, output strides), so
a line PC needs onnxruntime and numpy, never torch.

The graph takes ``uint8`` NHWC RGB frames and does its own scaling, so this module's job is
only to bring frames of any size and channel count into that shape, in batches:

- grayscale ``(n, H, W)`` / ``(n, H, W, 1)`` frames are repeated to three channels (the
  network was trained on colour; a gray frame is a colour frame with equal channels);
- frames of another size are resized with Pillow's antialiased bilinear filter to the model
  size, which must be a multiple of the deepest stride (16) for the baked TF "SAME" padding;
- ``CUDAExecutionProvider`` is used automatically when the installed onnxruntime offers it,
  CPU otherwise; one intra-op thread by default, because on small line PCs (2 cores) more
  threads were slower and erratic while the rest of the worker competes for the cores.

>>> import numpy as np
>>> frames = np.zeros((2, 40, 50), dtype=np.uint8)          # two grayscale frames, odd size
>>> prepare_images(frames, (32, 32)).shape
(2, 32, 32, 3)
>>> backbone = ImageBackbone()
>>> s8, s16 = backbone.features(prepare_images(frames, (64, 96)))
>>> s8.shape, s16.shape, s8.dtype
((2, 40, 8, 12), (2, 112, 4, 6), dtype('float32'))
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from linewatch.errors import ConfigError, DataError

#: The backbone shipped with linewatch (exported by linewatch.export.efficientnet_backbone).
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "efficientnet_lite0_patch.onnx"
#: The sidecar format this module understands.
SIDECAR_FORMAT = "linewatch-image-backbone/1"
#: Frames smaller than this on a side carry no usable patch structure (and usually mean an
#: (H, W, C) frame was passed where a batch was expected).
MIN_SIDE = 8
PROVIDERS = ("auto", "cpu", "cuda")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BackboneSpec:
    """What the sidecar says about an exported backbone; the detector keys its memory bank on it."""

    path: Path
    sha256: str
    input_name: str
    output_names: tuple[str, ...]
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    size_multiple: int
    native_size: tuple[int, int]

    @classmethod
    def from_sidecar(cls, model_path: str | Path | None = None) -> BackboneSpec:
        """Read ``<model>.json`` next to the ONNX file, refusing a format this code does not know."""
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        sidecar = path.with_suffix(".json")
        if not path.exists() or not sidecar.exists():
            raise ConfigError(
                f"image backbone {path} or its sidecar {sidecar.name} is missing; reinstall linewatch or "
                "re-export it with `python -m linewatch.export.efficientnet_backbone --out PATH`"
            )
        meta = json.loads(sidecar.read_text())
        if meta.get("format") != SIDECAR_FORMAT:
            raise ConfigError(f"{sidecar} has format {meta.get('format')!r}; expected {SIDECAR_FORMAT!r}")
        inp = meta["input"]
        if inp["dtype"] != "uint8" or inp["layout"] != "NHWC" or not inp["scaling_in_graph"]:
            raise ConfigError(
                f"{sidecar}: this run time feeds uint8 NHWC frames with scaling inside the graph"
            )
        outs = meta["outputs"]
        return cls(
            path=path,
            sha256=meta["sha256"],
            input_name=inp["name"],
            output_names=tuple(o["name"] for o in outs),
            strides=tuple(int(o["stride"]) for o in outs),
            channels=tuple(int(o["channels"]) for o in outs),
            size_multiple=int(inp["size_multiple"]),
            native_size=(int(inp["native_size"][0]), int(inp["native_size"][1])),
        )

    def check_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Return ``size`` if the graph can take it, else raise naming the nearest valid sizes."""
        h, w = int(size[0]), int(size[1])
        m = self.size_multiple
        if h < m or w < m or h % m or w % m:
            raise ConfigError(
                f"image_size {h}x{w} must be a positive multiple of {m} on both sides "
                f"(the backbone's deepest stride); e.g. {max(m, round(h / m) * m)}x{max(m, round(w / m) * m)}"
            )
        return h, w


def _one_frame(img: Any, index: int) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise DataError(
            f"frame {index} has dtype {arr.dtype}; image detectors take uint8 frames "
            "(decode with Pillow, or use np.clip(x, 0, 255).astype(np.uint8))"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise DataError(
            f"frame {index} has shape {arr.shape}; expected (H, W), (H, W, 1) or (H, W, 3) "
            "(drop an alpha channel with frame[..., :3])"
        )
    if min(arr.shape[:2]) < MIN_SIDE:
        raise DataError(
            f"frame {index} is {arr.shape[0]}x{arr.shape[1]} pixels; frames need at least {MIN_SIDE} a side"
        )
    return arr


def as_frames(images: Any) -> list[np.ndarray] | np.ndarray:
    """Validate a batch of frames; return a uint8 ``(n, H, W[, 3])`` array or a list of frames.

    One place decides what a frame batch is, so every image detector rejects the same bad input
    with the same message. A 3-D array whose last axis has 1, 3 or 4 entries is refused as
    ambiguous: it is almost always one colour frame passed without its batch axis.
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise DataError(
                f"frames have dtype {images.dtype}; image detectors take uint8 frames "
                "(use np.clip(x, 0, 255).astype(np.uint8))"
            )
        if images.ndim == 3 and images.shape[-1] <= 4:
            raise DataError(
                f"a 3-D array of shape {images.shape} is ambiguous; pass frame[None] for one colour frame, "
                "(n, H, W) for grayscale frames or (n, H, W, 3) for colour frames"
            )
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise DataError(
                f"frames of shape {images.shape}; expected (n, H, W), (n, H, W, 1) or (n, H, W, 3)"
            )
        if images.shape[0] == 0:
            raise DataError("no frames given")
        if min(images.shape[1:3]) < MIN_SIDE:
            raise DataError(
                f"frames are {images.shape[1]}x{images.shape[2]} pixels; need at least {MIN_SIDE} a side"
            )
        return images
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        raise DataError(f"expected a uint8 array of frames or a list of frames, got {type(images).__name__}")
    if len(images) == 0:
        raise DataError("no frames given")
    return [_one_frame(img, i) for i, img in enumerate(images)]


def frame_sizes(images: Any) -> list[tuple[int, int]]:
    """``(H, W)`` of every frame in a validated batch."""
    if isinstance(images, np.ndarray):
        return [(int(images.shape[1]), int(images.shape[2]))] * int(images.shape[0])
    return [(int(a.shape[0]), int(a.shape[1])) for a in images]


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frame.shape[:2] == size:
        return frame
    # Pillow's BILINEAR widens its kernel when shrinking, i.e. it antialiases (unlike cv2's default).
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def prepare_images(images: Any, size: tuple[int, int]) -> np.ndarray:
    """Frames of any size and 1 or 3 channels -> one contiguous ``(n, H, W, 3)`` uint8 batch at ``size``."""
    frames = as_frames(images)
    size = (int(size[0]), int(size[1]))
    n = len(frames)
    out = np.empty((n, size[0], size[1], 3), dtype=np.uint8)
    if isinstance(frames, np.ndarray) and frames.shape[1:3] == size:
        out[...] = frames if frames.ndim == 4 else frames[..., None]
        return out
    for i in range(n):
        small = _resize(frames[i], size)
        out[i] = small if small.ndim == 3 else small[..., None]
    return out


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (CUDA needs the ``onnxruntime-gpu`` wheel)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


class ImageBackbone:
    """An onnxruntime session over the exported feature extractor.

    The session is created on first use, not in ``__init__``, so constructing a detector (or
    loading one to inspect it) costs nothing and never touches the accelerator.

    Parameters
    ----------
    model_path:
        ONNX file with its ``.json`` sidecar; ``None`` uses the shipped EfficientNet-Lite0 graph.
    provider:
        ``"auto"`` (CUDA when onnxruntime offers it, CPU otherwise), ``"cuda"`` (fail if CUDA cannot be
        used) or ``"cpu"``.
    intra_op_threads:
        onnxruntime intra-op threads; 1 by default (see the module docstring for why).
    verify_checksum:
        Compare the file's SHA-256 with the sidecar before the first run, so a corrupted or
        swapped file cannot silently produce different features than the memory bank was built on.
    """

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        provider: str = "auto",
        intra_op_threads: int = 1,
        verify_checksum: bool = True,
    ) -> None:
        self.model_path = model_path
        self.provider = provider
        self.intra_op_threads = intra_op_threads
        self.verify_checksum = verify_checksum

    @cached_property
    def spec(self) -> BackboneSpec:
        """The sidecar of the model file."""
        return BackboneSpec.from_sidecar(self.model_path)

    @cached_property
    def session(self) -> Any:
        """The onnxruntime session (built once, on first use)."""
        import onnxruntime as ort

        if self.provider not in PROVIDERS:
            raise ConfigError(f"provider={self.provider!r}; use one of {', '.join(PROVIDERS)}")
        if self.intra_op_threads < 1:
            raise ConfigError(f"intra_op_threads={self.intra_op_threads!r} must be at least 1")
        spec = self.spec
        if self.verify_checksum and (actual := sha256_file(spec.path)) != spec.sha256:
            raise ConfigError(
                f"{spec.path} has sha256 {actual[:12]}…, its sidecar says {spec.sha256[:12]}…; "
                "the file is corrupted or was replaced — reinstall or re-export it"
            )
        offered = available_providers()
        want_cuda = self.provider == "cuda" or (
            self.provider == "auto" and "CUDAExecutionProvider" in offered
        )
        if self.provider == "cuda" and "CUDAExecutionProvider" not in offered:
            raise ConfigError(
                "provider='cuda' but this onnxruntime offers only "
                + ", ".join(offered)
                + "; install onnxruntime-gpu with a matching CUDA, or use provider='cpu'"
            )
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(spec.path), sess_options=opts, providers=providers)
        if self.provider == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
            raise ConfigError(
                "onnxruntime could not start its CUDA provider (driver, CUDA or cuDNN libraries missing?); "
                "use provider='cpu' or fix the GPU install"
            )
        return sess

    def warm_up(self) -> None:
        """Open the session now, under a lock: scoring threads then never race to create it."""
        with _SHARED_LOCK:
            _ = self.session

    @property
    def active_providers(self) -> list[str]:
        """Providers the session really uses (onnxruntime falls back to CPU when CUDA fails to load)."""
        return list(self.session.get_providers())

    def features(self, frames: np.ndarray, *, batch_size: int = 8) -> tuple[np.ndarray, ...]:
        """Run prepared ``(n, H, W, 3)`` uint8 frames through the graph in batches.

        Returns one float32 NCHW array per output (stride 8, then stride 16 for the shipped model).
        """
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise DataError(
                "backbone input must be prepared (n, H, W, 3) uint8 frames, "
                f"got {frames.dtype} {frames.shape}; use prepare_images() first"
            )
        self.spec.check_size(frames.shape[1:3])
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be at least 1")
        sess, spec = self.session, self.spec
        parts: list[list[np.ndarray]] = [[] for _ in spec.output_names]
        for start in range(0, frames.shape[0], batch_size):
            outs = sess.run(list(spec.output_names), {spec.input_name: frames[start : start + batch_size]})
            for acc, o in zip(parts, outs, strict=True):
                acc.append(o)
        return tuple(p[0] if len(p) == 1 else np.concatenate(p, axis=0) for p in parts)


_SHARED_LOCK = threading.Lock()
_SHARED: dict[tuple[str | None, str, int], ImageBackbone] = {}


def shared_backbone(model_path: str | Path | None = None, provider: str = "auto",
                    intra_op_threads: int = 1) -> ImageBackbone:
    """The process's one backbone for this file, provider and thread count.

    Why: the backbone is the same file for every SKU and camera, and an onnxruntime session per
    model would cost tens of MB each on a plant with dozens of SKU/camera pairs. The session is
    still opened on first use; :meth:`ImageBackbone.warm_up` opens it ahead of the first frame.
    """
    key = (None if model_path is None else str(model_path), provider, intra_op_threads)
    with _SHARED_LOCK:
        backbone = _SHARED.get(key)
        if backbone is None:
            backbone = _SHARED[key] = ImageBackbone(
                model_path=model_path, provider=provider, intra_op_threads=intra_op_threads)
        return backbone
