"""PatchCore-style image anomaly detection: a memory bank of normal patch features.

Why this design (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", 2022):
a defect is a *local* thing, so a good image is one whose every patch looks like some patch
seen on known-good parts. The detector therefore

1. runs frames through a small ImageNet-pretrained CNN (EfficientNet-Lite0 in ONNX Runtime,
   see :mod:`linewatch.detectors.image_backbone`) and takes two mid-level feature maps,
   40 channels at stride 8 and 112 at stride 16;
2. aggregates each map over a 3x3 neighbourhood (a patch sees a little context, which makes it
   robust to a pixel of misalignment), upsamples the stride-16 map to stride 8 (bilinear) and
   concatenates: one 152-dimensional feature per 8x8 patch;
3. optionally projects features to fewer dimensions (seeded Gaussian random projection);
4. keeps a greedy k-center **coreset** of the training patches as the memory bank: the subset
   that covers all normal patches with the smallest worst-case distance, so 1 % of the patches
   answers almost exactly like all of them, 100 times faster;
5. scores a patch by its Euclidean distance to the nearest bank entry (numpy/BLAS, squared-norm
   trick, chunked), an image by its worst patch (**high = anomalous**), and draws a heat map by
   upsampling the patch distances to the frame and smoothing them (Gaussian, sigma 4 px at
   224x224, as in the paper).

The nearest-neighbour search, not the network, dominates the cost as the bank grows; the bank
size is ``coreset_ratio`` of the training patches, capped at ``max_bank_size`` so scoring time
stays bounded however many good images a plant collects. ``linewatch bench images`` measures
the accuracy/speed trade-off behind the defaults.

PatchCore is a plain detector: raw scores in feature-distance units and heat maps. Like every
other detector it is calibrated by :class:`~linewatch.detectors.bundle.ModelBundle` on held-out
good frames with :mod:`linewatch.detectors.calibration`, so a threshold reads as a false-alarm
rate. The search lives in :mod:`~linewatch.detectors.coreset`, the map maths in
:mod:`~linewatch.detectors.heatmap`.

Frames may be colour ``(n, H, W, 3)``, grayscale ``(n, H, W)`` / ``(n, H, W, 1)``, or a list of
frames of any sizes; all are resized to ``image_size`` (a multiple of 16).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> good = rng.integers(100, 140, size=(6, 64, 64), dtype=np.uint8)   # six flat gray frames
>>> bad = good[:2].copy(); bad[:, 20:30, 20:30] = 255                  # a bright square
>>> det = PatchCore(image_size=64, coreset_ratio=0.5, seed=0).fit(good)
>>> s_good, s_bad = det.score(good[:2]), det.score(bad)
>>> bool((s_bad > s_good).all())
True
>>> heat = det.heatmap(bad)
>>> heat.shape, bool(heat[0, 20:30, 20:30].mean() > heat[0, 45:, 45:].mean())
((2, 64, 64), True)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from scipy import ndimage

from linewatch.detectors.base import ParamsMixin, check_fitted
from linewatch.detectors.coreset import (
    Progress,
    augment_bank,
    blas_threads,
    greedy_coreset,
    nearest_sq_distances,
    random_projection,
)
from linewatch.detectors.heatmap import THUMBNAIL_SIZE, resize_maps, summarize_heatmap
from linewatch.detectors.image_backbone import (
    ImageBackbone,
    as_frames,
    frame_sizes,
    prepare_images,
    shared_backbone,
)
from linewatch.detectors.image_base import Images
from linewatch.errors import ConfigError, DataError

__all__ = ["THUMBNAIL_SIZE", "PatchCore", "Progress", "as_size", "summarize_heatmap"]

#: Side of the local neighbourhood each patch feature is averaged over (PatchCore's default).
NEIGHBOURHOOD = 3
#: Heat-map smoothing in pixels at the 224x224 model resolution (PatchCore's sigma = 4).
HEATMAP_SIGMA = 4.0
#: Below this many bank entries the bank no longer covers normal variation; the coreset never
#: goes smaller (unless there are fewer training patches than this).
MIN_BANK_SIZE = 1024


def as_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ConfigError(f"image_size={image_size!r}; give one int or (height, width)")
    return int(image_size[0]), int(image_size[1])


class PatchCore(ParamsMixin):
    """Memory bank of normal patch features; nearest-neighbour distance as the anomaly score.

    Parameters
    ----------
    image_size:
        Frames are resized to this (height, width) or square side; a multiple of 16. 224 is the
        backbone's native size; larger sizes see smaller defects at quadratic cost.
    coreset_ratio:
        Share of training patches kept in the memory bank (at least :data:`MIN_BANK_SIZE`).
    max_bank_size:
        Upper bound on the bank, so scoring cost does not grow with the training set.
    projection_dim:
        Reduce the 152-dimensional features to this many with a seeded random projection
        (``None`` keeps them all): less search cost, a little less accuracy.
    selection_dim:
        Random-projection dimension used only while choosing the coreset (``None``: exact).
    heatmap_sigma:
        Gaussian smoothing of the heat map, in pixels at 224x224 (scaled with ``image_size``).
    batch_size:
        Frames per backbone call.
    backbone_path, provider, intra_op_threads:
        Passed to :class:`~linewatch.detectors.image_backbone.ImageBackbone`.
    search_threads:
        BLAS threads for the patch search and heat maps (see :func:`blas_threads`); 1 by default,
        ``None`` leaves BLAS as configured (more threads help on a many-core box with a big bank).
    seed:
        Seeds the projection and the coreset's first centre; same seed, same model.
    """

    name: ClassVar[str] = "patchcore"
    fitted_arrays = ("memory_bank_",)
    fitted_values = ("backbone_sha256_", "feature_dim_", "n_train_", "n_train_patches_", "training_sha256_")

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int] = 224,
        coreset_ratio: float = 0.01,
        max_bank_size: int | None = 4096,
        projection_dim: int | None = None,
        selection_dim: int | None = 64,
        heatmap_sigma: float = HEATMAP_SIGMA,
        batch_size: int = 8,
        backbone_path: str | None = None,
        provider: str = "auto",
        intra_op_threads: int = 1,
        search_threads: int | None = 1,
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.coreset_ratio = coreset_ratio
        self.max_bank_size = max_bank_size
        self.projection_dim = projection_dim
        self.selection_dim = selection_dim
        self.heatmap_sigma = heatmap_sigma
        self.batch_size = batch_size
        self.backbone_path = backbone_path
        self.provider = provider
        self.intra_op_threads = intra_op_threads
        self.search_threads = search_threads
        self.seed = seed
        self.memory_bank_: np.ndarray | None = None
        self.projection_: np.ndarray | None = None
        self.backbone_sha256_: str | None = None
        self.feature_dim_: int | None = None
        self.n_train_: int | None = None
        self.n_train_patches_: int | None = None
        self.training_sha256_: str | None = None
        self._bank_aug: np.ndarray | None = None
        self._backbone: ImageBackbone | None = None

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> tuple[int, int]:
        size = self.backbone.spec.check_size(as_size(self.image_size))
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(f"coreset_ratio={self.coreset_ratio!r} must be in (0, 1], e.g. 0.01")
        if self.max_bank_size is not None and self.max_bank_size < 1:
            raise ConfigError(f"max_bank_size={self.max_bank_size!r} must be positive or None")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ConfigError(f"projection_dim={self.projection_dim!r} must be positive or None")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size!r} must be at least 1")
        if self.search_threads is not None and self.search_threads < 1:
            raise ConfigError(f"search_threads={self.search_threads!r} must be at least 1 or None")
        return size

    @property
    def backbone(self) -> ImageBackbone:
        """The feature extractor, shared by every model on the same file (its session starts on first use)."""
        if self._backbone is None:
            self._backbone = shared_backbone(self.backbone_path, self.provider, self.intra_op_threads)
        return self._backbone

    def warm_up(self) -> None:
        """Open the backbone's session before the first frame (model caches call this on load)."""
        self.backbone.warm_up()

    # ------------------------------------------------------------------ features
    def _patch_features(self, frames: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Prepared ``(n, H, W, 3)`` frames -> ``(n, H/8, W/8, D)`` float32 patch features."""
        n = frames.shape[0]
        out: np.ndarray | None = None
        step = self.batch_size * 4  # a few backbone batches per aggregation call
        for start in range(0, n, step):
            s8, s16 = self.backbone.features(frames[start : start + step], batch_size=self.batch_size)
            feats = _aggregate(s8, s16)
            if self.projection_ is not None:
                feats = feats @ self.projection_
            if out is None:
                out = np.empty((n, *feats.shape[1:]), dtype=np.float32)
            out[start : start + step] = feats
            if progress is not None:
                progress("features", min(start + step, n), n)
        assert out is not None
        return out

    # ------------------------------------------------------------------ fit
    def fit(self, images: Images, *, progress: Progress | None = None) -> Self:
        """Learn normal patches from known-good frames (colour or grayscale, any size)."""
        size = self._validate_params()
        with blas_threads(self.search_threads):
            return self._fit(prepare_images(images, size), progress)

    def _fit(self, frames: np.ndarray, progress: Progress | None) -> Self:
        self.projection_ = None
        raw_dim = sum(self.backbone.spec.channels)
        if self.projection_dim is not None and self.projection_dim < raw_dim:
            self.projection_ = random_projection(raw_dim, self.projection_dim, self.seed)
        feats = self._patch_features(frames, progress)
        flat = feats.reshape(-1, feats.shape[-1])
        n_total = flat.shape[0]
        n_bank = min(n_total, max(round(self.coreset_ratio * n_total), MIN_BANK_SIZE))
        if self.max_bank_size is not None:
            n_bank = min(n_bank, self.max_bank_size)
        idx = greedy_coreset(
            flat, n_bank, seed=self.seed, selection_dim=self.selection_dim, progress=progress
        )
        self.memory_bank_ = np.ascontiguousarray(flat[np.sort(idx)])
        self._bank_aug = augment_bank(self.memory_bank_)
        self.feature_dim_ = int(flat.shape[1])
        self.backbone_sha256_ = self.backbone.spec.sha256
        self.n_train_ = int(frames.shape[0])
        self.n_train_patches_ = int(n_total)
        self.training_sha256_ = hashlib.sha256(frames.tobytes()).hexdigest()
        return self

    # ------------------------------------------------------------------ scoring
    def _check_ready(self) -> tuple[int, int]:
        check_fitted(self, "memory_bank_")
        return as_size(self.image_size)

    def patch_scores(self, images: Images) -> np.ndarray:
        """``(n, H/8, W/8)`` distance of every patch to its nearest normal patch."""
        size = self._check_ready()
        frames = prepare_images(images, size)
        with blas_threads(self.search_threads):
            return self._patch_scores_prepared(frames)

    def _patch_scores_prepared(self, frames: np.ndarray) -> np.ndarray:
        assert self._bank_aug is not None
        feats = self._patch_features(frames)
        n, h, w, d = feats.shape
        return np.sqrt(nearest_sq_distances(feats.reshape(-1, d), self._bank_aug)).reshape(n, h, w)

    def score(self, images: Images) -> np.ndarray:
        """Raw image scores ``(n,)``: the largest patch distance (high = anomalous)."""
        return self.patch_scores(images).max(axis=(1, 2)).astype(np.float64)

    def heatmap_from_patch_scores(self, patches: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``(n, H, W)`` heat maps from :meth:`patch_scores` output, without running the network again.

        Why: a line scores every frame but needs a heat map only for the few that alarm; the
        agent calls :meth:`patch_scores`, takes the max as the score, and draws maps for alarms.
        Smoothing happens at the model resolution, so its cost does not grow with the frame size.
        """
        model = as_size(self.image_size)
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 3:
            raise DataError(f"patch scores must be (n, h, w), got shape {patches.shape}")
        with blas_threads(self.search_threads):
            up = resize_maps(patches, model)
            sigma = self.heatmap_sigma * model[0] / 224.0, self.heatmap_sigma * model[1] / 224.0
            smooth = ndimage.gaussian_filter(up, sigma=(0.0, *sigma), mode="nearest")
            return np.ascontiguousarray(resize_maps(smooth, tuple(size)), dtype=np.float32)

    def score_with_heatmap(
        self, images: Images, *, size: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image scores and heat maps from one pass (what the frames agent and the backtest call).

        ``size`` is the heat maps' ``(H, W)``; by default the frames' own size, which requires
        all frames in the batch to share one size.
        """
        model = self._check_ready()
        frames = as_frames(images)
        if size is None:
            sizes = set(frame_sizes(frames))
            if len(sizes) != 1:
                raise DataError(
                    f"frames of {len(sizes)} different sizes in one batch; pass size=(H, W) for the heat maps"
                )
            size = sizes.pop()
        with blas_threads(self.search_threads):
            patches = self._patch_scores_prepared(prepare_images(frames, model))
            return patches.max(axis=(1, 2)).astype(np.float64), self.heatmap_from_patch_scores(patches, size)

    def heatmap(self, images: Images, *, size: tuple[int, int] | None = None) -> np.ndarray:
        """``(n, H, W)`` float32 anomaly maps in patch-distance units, upsampled and smoothed."""
        return self.score_with_heatmap(images, size=size)[1]

    # ------------------------------------------------------------------ persistence
    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The bank, the projection when there is one, and provenance (bank size for a reader's sake)."""
        arrays, values = super()._fitted_state()
        if self.projection_ is not None:
            arrays["projection"] = self.projection_
        assert self.memory_bank_ is not None
        values["bank_size"] = int(self.memory_bank_.shape[0])
        return arrays, values

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        super()._restore(arrays, values)
        self.memory_bank_ = np.ascontiguousarray(self.memory_bank_, dtype=np.float32)
        self.projection_ = arrays.get("projection")
        self._bank_aug = augment_bank(self.memory_bank_)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Restore a saved detector, refusing one built on a different backbone file."""
        det = super().load(path)
        shipped = det.backbone.spec.sha256
        if det.backbone_sha256_ != shipped:
            raise ConfigError(
                f"{path} was fitted on backbone sha256 {str(det.backbone_sha256_)[:12]}…, but the backbone "
                f"here is {shipped[:12]}…; its memory bank does not match these features — refit the model"
            )
        return det


def _aggregate(s8: np.ndarray, s16: np.ndarray) -> np.ndarray:
    """Locally aggregated, stride-8 patch features ``(n, h, w, 40 + 112)`` from the two maps."""
    size = (1, 1, NEIGHBOURHOOD, NEIGHBOURHOOD)
    a8 = ndimage.uniform_filter(s8, size=size, mode="reflect")
    a16 = ndimage.uniform_filter(s16, size=size, mode="reflect")
    up16 = resize_maps(a16, s8.shape[-2:])
    feats = np.concatenate([a8, up16], axis=1)
    return np.ascontiguousarray(feats.transpose(0, 2, 3, 1), dtype=np.float32)
