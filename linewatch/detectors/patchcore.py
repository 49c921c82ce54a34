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
   trick, chunked) and draws a heat map by upsampling the patch distances to the frame and
   smoothing them (Gaussian, sigma 4 px at 224x224, as in the paper); an image scores its worst
   patch (``image_score="max"``) or the mean of the hottest 1 % of that map (``"topk"``;
   **high = anomalous**), optionally re-weighted as in the paper's eq. 7 (``reweight_k``).

Two presets hold one setting each for every data set, chosen with ``linewatch bench
image-sota`` on four public MVTec-layout sets and the simulator's textured SKUs: ``fast`` (the
default; 224, >= 50 frames/s at 256x256 on two cores) and ``accurate`` (448, aspect ratio kept;
higher resolution was the one lever that paid off everywhere). See :data:`PRESETS`.

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
frames of any sizes; each is resized to ``image_size`` (a multiple of 16) or, with
``resize="aspect"``, to the same area at its own aspect ratio (:func:`aspect_size`).

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
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from scipy import ndimage

from linewatch.detectors.base import METADATA_FILE, ParamsMixin, check_fitted, load_state
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
from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.errors import ConfigError, DataError

__all__ = ["PRESETS", "THUMBNAIL_SIZE", "PatchCore", "Progress", "as_size", "aspect_size", "summarize_heatmap"]

#: Side of the local neighbourhood each patch feature is averaged over (PatchCore's default).
NEIGHBOURHOOD = 3
#: Heat-map smoothing in pixels at the 224x224 model resolution (PatchCore's sigma = 4).
HEATMAP_SIGMA = 4.0
#: Below this many bank entries the bank no longer covers normal variation; the coreset never
#: goes smaller (unless there are fewer training patches than this).
MIN_BANK_SIZE = 1024
#: ``image_score="topk"`` averages this share of the hottest heat-map pixels.
TOPK_FRACTION = 0.01
RESIZE_MODES = ("stretch", "aspect", "short")
IMAGE_SCORES = ("max", "smoothed_max", "topk")

#: One setting per preset for every data set (chosen by ``linewatch bench image-sota``, never per
#: set). ``fast`` keeps >= 50 frames/s end to end at 256x256 on two cores; ``accurate`` trades
#: speed for accuracy. A parameter given explicitly always wins over its preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "image_size": 224,
        "resize": "stretch",
        "layers": ("s8", "s16"),
        "coreset_ratio": 0.01,
        "max_bank_size": 4096,
        "reweight_k": 0,
        "image_score": "max",
    },
    "accurate": {
        "image_size": 448,
        "resize": "aspect",
        "layers": ("s8", "s16"),
        "coreset_ratio": 0.01,
        "max_bank_size": 4096,
        "reweight_k": 0,
        "image_score": "topk",
    },
}
DEFAULT_PRESET = "fast"
#: What a model saved before presets existed did: its frames must keep being read that way.
LEGACY_SCORING = {"resize": "stretch", "layers": ("s8", "s16"), "reweight_k": 0, "image_score": "max"}


def as_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ConfigError(f"image_size={image_size!r}; give one int or (height, width)")
    return int(image_size[0]), int(image_size[1])


def aspect_size(frame: tuple[int, int], nominal: tuple[int, int], multiple: int = 16, *,
                keep: str = "area") -> tuple[int, int]:
    """Model size for a ``frame`` (H, W) with the frame's aspect ratio and sides a ``multiple``.

    Why: stretching a 300x400 frame to a square distorts every defect differently along the two
    axes. ``keep="area"`` keeps the nominal area (the cost of a frame stays that of the nominal
    size); ``keep="short"`` gives the short side the nominal short side (no detail lost on it,
    more patches on the long side).

    >>> aspect_size((300, 400), (224, 224)), aspect_size((300, 400), (224, 224), keep="short")
    ((192, 256), (224, 304))
    >>> aspect_size((640, 640), (224, 224))
    (224, 224)
    """
    h, w = frame
    scale = min(nominal) / min(h, w) if keep == "short" else math.sqrt(nominal[0] * nominal[1] / (h * w))
    return (max(multiple, round(h * scale / multiple) * multiple),
            max(multiple, round(w * scale / multiple) * multiple))


def _fingerprint(frames: Any) -> str:
    """SHA-256 over the frames' shapes and bytes: which frames a cached embedding belongs to."""
    h = hashlib.sha256()
    for f in frames:
        a = np.ascontiguousarray(f)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class PatchCore(ParamsMixin):
    """Memory bank of normal patch features; nearest-neighbour distance as the anomaly score.

    Parameters
    ----------
    preset:
        ``"fast"`` (default) or ``"accurate"``: values for every parameter below left at ``None``
        (see :data:`PRESETS`); a saved model records the preset and the values it resolved to.
    image_size:
        Nominal model size, (height, width) or square side, a multiple of 16. 224 is the backbone's
        native size; larger sizes see smaller defects at quadratic cost.
    resize:
        ``"stretch"`` resizes every frame to ``image_size``; ``"aspect"`` keeps the frame's aspect
        ratio at the same area (:func:`aspect_size`), so non-square frames are not distorted;
        ``"short"`` keeps the aspect ratio with the short side at ``image_size``'s (more patches).
    layers:
        Backbone outputs to use: ``("s8", "s16")`` (patches at stride 8), ``("s16",)`` (stride 16).
    coreset_ratio:
        Share of training patches kept in the memory bank (at least :data:`MIN_BANK_SIZE`).
    max_bank_size:
        Upper bound on the bank, so scoring cost does not grow with the training set (0: no bound).
    reweight_k:
        PatchCore's re-weighting of the image score (Roth et al., eq. 7) over this many bank
        neighbours of the worst patch's nearest entry: a patch far from a *dense* region of normal
        patches counts more than one at the edge of a sparse one. 0 turns it off.
    image_score:
        ``"max"`` (worst patch), ``"smoothed_max"`` (peak of the heat map) or ``"topk"`` (mean of
        the hottest :data:`TOPK_FRACTION` of heat-map pixels).
    projection_dim:
        Reduce the features to this many dimensions with a seeded random projection
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
        preset: str = DEFAULT_PRESET,
        image_size: int | tuple[int, int] | None = None,
        resize: str | None = None,
        layers: tuple[str, ...] | None = None,
        coreset_ratio: float | None = None,
        max_bank_size: int | None = None,
        reweight_k: int | None = None,
        image_score: str | None = None,
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
        if preset not in PRESETS:
            raise ConfigError(f"preset={preset!r}; use one of {', '.join(PRESETS)}")
        defaults = PRESETS[preset]
        self.preset = preset
        # Resolved here, so get_params (and every saved model) records concrete values.
        self.image_size = defaults["image_size"] if image_size is None else image_size
        self.resize = defaults["resize"] if resize is None else resize
        self.layers = tuple(defaults["layers"] if layers is None else layers)
        self.coreset_ratio = defaults["coreset_ratio"] if coreset_ratio is None else coreset_ratio
        self.max_bank_size = defaults["max_bank_size"] if max_bank_size is None else max_bank_size
        self.reweight_k = defaults["reweight_k"] if reweight_k is None else reweight_k
        self.image_score = defaults["image_score"] if image_score is None else image_score
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
        #: (key, per-frame features, training hash) left by out_of_fold_scores for the fit that follows.
        self._embedding_cache: tuple[str, list[np.ndarray], str] | None = None

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> tuple[int, int]:
        size = self.backbone.spec.check_size(as_size(self.image_size))
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize={self.resize!r}; use one of {', '.join(RESIZE_MODES)}")
        known = self.backbone.spec.output_names
        if not self.layers or any(layer not in known for layer in self.layers):
            raise ConfigError(f"layers={self.layers!r}; choose among the backbone's outputs {known}")
        if self.image_score not in IMAGE_SCORES:
            raise ConfigError(f"image_score={self.image_score!r}; use one of {', '.join(IMAGE_SCORES)}")
        if self.reweight_k < 0 or self.reweight_k == 1:
            raise ConfigError(f"reweight_k={self.reweight_k!r}; use 0 (off) or at least 2 neighbours, e.g. 3")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(f"coreset_ratio={self.coreset_ratio!r} must be in (0, 1], e.g. 0.01")
        if self.max_bank_size < 0:
            raise ConfigError(f"max_bank_size={self.max_bank_size!r} must be positive, or 0 for no bound")
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

    @property
    def stride(self) -> int:
        """Pixels per patch at model resolution (the finest chosen layer's stride)."""
        spec = self.backbone.spec
        return min(spec.strides[spec.output_names.index(layer)] for layer in self.layers)

    def model_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """The size a frame of ``frame_size`` (H, W) is read at: ``image_size``, or its aspect kept."""
        nominal = as_size(self.image_size)
        if self.resize == "stretch":
            return nominal
        keep = "short" if self.resize == "short" else "area"
        return aspect_size(frame_size, nominal, self.backbone.spec.size_multiple, keep=keep)

    # ------------------------------------------------------------------ features
    def _patch_features(self, frames: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Prepared ``(n, H, W, 3)`` frames -> ``(n, H/s, W/s, D)`` float32 patch features."""
        n = frames.shape[0]
        out: np.ndarray | None = None
        names = self.backbone.spec.output_names
        pick = [names.index(layer) for layer in self.layers]
        step = self.batch_size * 4  # a few backbone batches per aggregation call
        for start in range(0, n, step):
            maps = self.backbone.features(frames[start : start + step], batch_size=self.batch_size)
            feats = _aggregate([maps[i] for i in pick])
            if self.projection_ is not None:
                feats = rowwise_matmul(feats, self.projection_)
            if out is None:
                out = np.empty((n, *feats.shape[1:]), dtype=np.float32)
            out[start : start + step] = feats
            if progress is not None:
                progress("features", min(start + step, n), n)
        assert out is not None
        return out

    def _groups(self, frames: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """Validated frames -> ``[(indices, prepared (k, H, W, 3) batch)]``, one per model size."""
        sizes = [self.model_size(s) for s in frame_sizes(frames)]
        if len(set(sizes)) == 1:
            return [(np.arange(len(sizes)), prepare_images(frames, sizes[0]))]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(sizes):
            by_size.setdefault(s, []).append(i)
        return [(np.array(idx), prepare_images([frames[i] for i in idx], s)) for s, idx in by_size.items()]

    def _embed(self, frames: Any, progress: Progress | None = None) -> tuple[list[np.ndarray], str]:
        """Per-frame ``(h, w, D)`` patch features of validated frames, and the hash of what the network saw."""
        feats: list[np.ndarray] = [np.empty(0)] * len(frames)
        digest = hashlib.sha256()
        done, total = 0, len(frames)

        def step(stage: str, k: int, _n: int) -> None:
            if progress is not None:
                progress(stage, done + k, total)

        for idx, prepared in self._groups(frames):
            group = self._patch_features(prepared, step if progress is not None else None)
            for k, i in enumerate(idx):
                feats[int(i)] = group[k]
            digest.update(prepared.tobytes())
            done += len(idx)
        return feats, digest.hexdigest()

    def _cache_key(self, frames: Any) -> str:
        params = (self.image_size, self.resize, self.layers, self.projection_dim, self.seed, self.backbone.spec.sha256)
        return _fingerprint(frames) + repr(params)

    # ------------------------------------------------------------------ fit
    def fit(self, images: Images, *, progress: Progress | None = None) -> Self:
        """Learn normal patches from known-good frames (colour or grayscale, any size).

        Frames embedded by :meth:`out_of_fold_scores` just before are not run through the
        network again.
        """
        self._validate_params()
        frames = as_frames(images)
        with blas_threads(self.search_threads):
            self._set_projection()
            cached, self._embedding_cache = self._embedding_cache, None
            if cached is not None and cached[0] == self._cache_key(frames):
                feats, digest = cached[1], cached[2]
            else:
                feats, digest = self._embed(frames, progress)
            flat = np.concatenate([f.reshape(-1, f.shape[-1]) for f in feats])
            self.memory_bank_ = self._select_bank(flat, progress)
            self._bank_aug = augment_bank(self.memory_bank_)
            self.feature_dim_ = int(flat.shape[1])
            self.backbone_sha256_ = self.backbone.spec.sha256
            self.n_train_ = len(frames)
            self.n_train_patches_ = int(flat.shape[0])
            self.training_sha256_ = digest
        return self

    def _set_projection(self) -> None:
        self.projection_ = None
        spec = self.backbone.spec
        raw_dim = sum(spec.channels[spec.output_names.index(layer)] for layer in self.layers)
        if self.projection_dim is not None and self.projection_dim < raw_dim:
            self.projection_ = random_projection(raw_dim, self.projection_dim, self.seed)

    def _select_bank(self, flat: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """The coreset of ``flat`` training patches: ``coreset_ratio`` of them, floored and capped."""
        n_total = flat.shape[0]
        n_bank = min(n_total, max(round(self.coreset_ratio * n_total), MIN_BANK_SIZE))
        if self.max_bank_size:
            n_bank = min(n_bank, self.max_bank_size)
        idx = greedy_coreset(flat, n_bank, seed=self.seed, selection_dim=self.selection_dim, progress=progress)
        return np.ascontiguousarray(flat[np.sort(idx)])

    def out_of_fold_scores(self, images: Images, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Score every held-out frame with a bank built from the other folds' patches only.

        The bundle's cross-fitting hook: ``folds`` are ``(fit_idx, held_idx)`` index arrays into
        ``images``; entry ``i`` of the result is frame ``i``'s score from a bank that never saw
        its block (NaN for frames in no held-out block). Why it exists: the backbone is the
        expensive part and the same for every fold, so frames are embedded once here (not once
        per fold); the embeddings stay cached for the ``fit(images)`` the bundle calls next.
        """
        self._validate_params()
        frames = as_frames(images)
        n = len(frames)
        scores = np.full(n, np.nan, dtype=np.float64)
        with blas_threads(self.search_threads):
            self._set_projection()
            feats, digest = self._embed(frames)
            for fit_idx, held_idx in folds:
                fit_idx, held_idx = np.asarray(fit_idx, dtype=np.int64), np.asarray(held_idx, dtype=np.int64)
                if fit_idx.size == 0 or held_idx.size == 0:
                    raise DataError("every fold needs frames to fit on and frames to score")
                if np.intersect1d(fit_idx, held_idx).size:
                    raise DataError("a fold's fit and held-out indices overlap; its scores would be in-sample")
                flat = np.concatenate([feats[i].reshape(-1, feats[i].shape[-1]) for i in fit_idx])
                bank = self._select_bank(flat)
                bank_aug = augment_bank(bank)
                for _, rows in _same_shape_runs([feats[i] for i in held_idx]):
                    stack = np.stack([feats[held_idx[r]] for r in rows])
                    s, _ = self._score_features(stack, bank, bank_aug)
                    scores[held_idx[rows]] = s
        self._embedding_cache = (self._cache_key(frames), feats, digest)
        return scores

    # ------------------------------------------------------------------ scoring
    def _check_ready(self) -> None:
        check_fitted(self, "memory_bank_")

    def _score_features(
        self, feats: np.ndarray, bank: np.ndarray, bank_aug: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, h, w, D)`` features -> image scores ``(n,)`` and patch distances ``(n, h, w)``."""
        n, h, w, d = feats.shape
        flat = feats.reshape(-1, d)
        if self.reweight_k:
            d2, nn = nearest_sq_distances(flat, bank_aug, return_index=True)
        else:
            d2, nn = nearest_sq_distances(flat, bank_aug), None
        patches = np.sqrt(d2).reshape(n, h, w)
        if self.image_score == "max":
            scores = patches.max(axis=(1, 2)).astype(np.float64)
        else:
            size = (h * self.stride, w * self.stride)
            heat = self._smooth(patches, size).reshape(n, -1)
            if self.image_score == "smoothed_max":
                scores = heat.max(axis=1).astype(np.float64)
            else:
                k = max(1, round(TOPK_FRACTION * heat.shape[1]))
                scores = np.partition(heat, heat.shape[1] - k, axis=1)[:, -k:].mean(axis=1).astype(np.float64)
        if nn is not None:
            scores *= _reweighting(flat, patches.reshape(n, -1), nn.reshape(n, -1), bank, self.reweight_k)
        return scores, patches

    def _score_frames(self, frames: Any, *, pooled: bool = False
                      ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
        """Validated frames -> ``[(indices, image scores, patch distances, pooled features or None)]`` per size."""
        assert self._bank_aug is not None and self.memory_bank_ is not None
        out = []
        for idx, prepared in self._groups(frames):
            feats = self._patch_features(prepared)
            s, p = self._score_features(feats, self.memory_bank_, self._bank_aug)
            out.append((idx, s, p, pool_patch_features(feats, p) if pooled else None))
        return out

    def score_patches(self, images: Images) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(n,)`` and patch distances ``(n, h, w)`` from one pass (what the frames agent calls).

        All frames must map to one model size (always so with ``resize="stretch"`` or frames of one size).
        """
        scores, patches, _ = self._one_size(images, pooled=False)
        return scores, patches

    def score_patches_pooled(self, images: Images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`score_patches` plus each frame's pooled patch features ``(n, 2 D)`` from the same pass.

        The pooled vector is what a defect classifier reads (:func:`pool_patch_features`): the
        anomaly model already computed it, so classifying a frame costs no second backbone.
        """
        scores, patches, pooled = self._one_size(images, pooled=True)
        assert pooled is not None
        return scores, patches, pooled

    def pooled_features(self, images: Images) -> np.ndarray:
        """Pooled patch features ``(n, 2 D)`` of frames of any sizes (training a classifier on a folder)."""
        self._check_ready()
        frames = as_frames(images)
        out: np.ndarray | None = None
        with blas_threads(self.search_threads):
            for idx, _, _, pooled in self._score_frames(frames, pooled=True):
                assert pooled is not None
                if out is None:
                    out = np.empty((len(frames), pooled.shape[1]), dtype=np.float32)
                out[idx] = pooled
        return out if out is not None else np.empty((0, 2 * int(self.feature_dim_)), dtype=np.float32)

    def _one_size(self, images: Images, *, pooled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        self._check_ready()
        with blas_threads(self.search_threads):
            parts = self._score_frames(as_frames(images), pooled=pooled)
        if len(parts) != 1:
            raise DataError(
                f"these frames map to {len(parts)} model sizes (resize={self.resize!r} keeps each frame's aspect "
                "ratio); score frames of one size per call, or use resize='stretch'"
            )
        return parts[0][1], parts[0][2], parts[0][3]

    def patch_scores(self, images: Images) -> np.ndarray:
        """``(n, H/s, W/s)`` distance of every patch to its nearest normal patch."""
        return self.score_patches(images)[1]

    def score(self, images: Images) -> np.ndarray:
        """Raw image scores ``(n,)`` (high = anomalous); frames of any sizes."""
        self._check_ready()
        frames = as_frames(images)
        scores = np.empty(len(frames), dtype=np.float64)
        with blas_threads(self.search_threads):
            for idx, s, _, _ in self._score_frames(frames):
                scores[idx] = s
        return scores

    def image_scores_from_patch_scores(self, patches: np.ndarray) -> np.ndarray:
        """Image scores from :meth:`patch_scores` output when no re-weighting is configured.

        Re-weighting needs the patch features, so a model with ``reweight_k`` scores through
        :meth:`score_patches` instead.
        """
        if self.reweight_k:
            raise ConfigError("reweight_k needs the patch features; use score_patches() for image scores")
        patches = np.asarray(patches, dtype=np.float32)
        if self.image_score == "max":
            return patches.max(axis=(1, 2)).astype(np.float64)
        n, h, w = patches.shape
        heat = self._smooth(patches, (h * self.stride, w * self.stride)).reshape(n, -1)
        if self.image_score == "smoothed_max":
            return heat.max(axis=1).astype(np.float64)
        k = max(1, round(TOPK_FRACTION * heat.shape[1]))
        return np.partition(heat, heat.shape[1] - k, axis=1)[:, -k:].mean(axis=1).astype(np.float64)

    def _smooth(self, patches: np.ndarray, model: tuple[int, int]) -> np.ndarray:
        """Patch distances upsampled to ``model`` pixels and Gaussian-smoothed (sigma scaled from 224)."""
        up = resize_maps(patches, model)
        sigma = self.heatmap_sigma * model[0] / 224.0, self.heatmap_sigma * model[1] / 224.0
        return ndimage.gaussian_filter(up, sigma=(0.0, *sigma), mode="nearest")

    def heatmap_from_patch_scores(self, patches: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``(n, H, W)`` heat maps from :meth:`patch_scores` output, without running the network again.

        Why: a line scores every frame but needs a heat map only for the few that alarm; the
        agent calls :meth:`score_patches` and draws maps for alarms. Smoothing happens at the
        model resolution, so its cost does not grow with the frame size.
        """
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 3:
            raise DataError(f"patch scores must be (n, h, w), got shape {patches.shape}")
        stride = self.stride
        model = (patches.shape[1] * stride, patches.shape[2] * stride)
        with blas_threads(self.search_threads):
            smooth = self._smooth(patches, model)
            return np.ascontiguousarray(resize_maps(smooth, tuple(size)), dtype=np.float32)

    def score_with_heatmap(
        self, images: Images, *, size: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image scores and heat maps from one pass (what the backtest calls).

        ``size`` is the heat maps' ``(H, W)``; by default the frames' own size, which requires
        all frames in the batch to share one size.
        """
        self._check_ready()
        frames = as_frames(images)
        if size is None:
            sizes = set(frame_sizes(frames))
            if len(sizes) != 1:
                raise DataError(
                    f"frames of {len(sizes)} different sizes in one batch; pass size=(H, W) for the heat maps"
                )
            size = sizes.pop()
        scores = np.empty(len(frames), dtype=np.float64)
        maps = np.empty((len(frames), *size), dtype=np.float32)
        with blas_threads(self.search_threads):
            for idx, s, p, _ in self._score_frames(frames):
                scores[idx] = s
                maps[idx] = self.heatmap_from_patch_scores(p, size)
        return scores, maps

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
        """Restore a saved detector, refusing one built on a different backbone file.

        A model saved before presets existed has no ``preset`` in its parameters; it keeps the
        scoring it was fitted with (:data:`LEGACY_SCORING`), not today's defaults.
        """
        meta_file = Path(path) / METADATA_FILE
        if meta_file.exists():
            params = json.loads(meta_file.read_text()).get("params", {})
            if "preset" not in params:
                return cls._load_legacy(path, params)
        det = super().load(path)
        det._check_backbone(path)
        return det

    @classmethod
    def _load_legacy(cls, path: str | Path, params: dict[str, Any]) -> Self:
        _, arrays = load_state(path, kind=cls.name)
        values = params.pop(cls.fitted_key or "", {})
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        if params.get("max_bank_size", 0) is None:
            params["max_bank_size"] = 0  # "no bound" was None before presets
        det = cls(**{**LEGACY_SCORING, **params})
        det._restore(arrays, values)
        det._check_backbone(path)
        return det

    def _check_backbone(self, path: str | Path) -> None:
        shipped = self.backbone.spec.sha256
        if self.backbone_sha256_ != shipped:
            raise ConfigError(
                f"{path} was fitted on backbone sha256 {str(self.backbone_sha256_)[:12]}…, but the backbone "
                f"here is {shipped[:12]}…; its memory bank does not match these features — refit the model"
            )


#: Patches pooled as "where it is worst": the mean feature of this many most distant patches.
POOL_TOP_PATCHES = 8


def pool_patch_features(feats: np.ndarray, patches: np.ndarray, top: int = POOL_TOP_PATCHES) -> np.ndarray:
    """``(n, h, w, D)`` patch features, ``(n, h, w)`` distances -> ``(n, 2 D)`` float32: [whole frame, worst patches].

    A defect's class is in how its region looks, and a scratch is a few patches of a frame: the
    mean over the ``top`` patches farthest from the normal bank describes the defect, the mean over
    all patches the part and the lighting it was seen under; a classifier reads both.
    """
    n, h, w, d = feats.shape
    flat = feats.reshape(n, h * w, d)
    k = min(top, h * w)
    worst = np.argpartition(patches.reshape(n, -1), h * w - k, axis=1)[:, -k:]
    top_mean = np.take_along_axis(flat, worst[:, :, None], axis=1).mean(axis=1)
    return np.concatenate([flat.mean(axis=1), top_mean], axis=1).astype(np.float32)


def _same_shape_runs(feats: list[np.ndarray]) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Positions of equally shaped feature maps, grouped (frames of one size are scored together)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(feats):
        by_shape.setdefault(f.shape, []).append(i)
    return [(shape, np.array(rows)) for shape, rows in by_shape.items()]


def _reweighting(
    flat: np.ndarray, patches: np.ndarray, nn: np.ndarray, bank: np.ndarray, k: int
) -> np.ndarray:
    """PatchCore's eq. 7 weight per image: ``1 - softmax(distances to the k bank neighbours)[0]``.

    The worst patch ``q`` of an image has nearest bank entry ``m*``; with ``N_k(m*)`` the ``k``
    entries nearest to ``m*`` (``m*`` first), the weight is ``1 - exp|q - m*| / sum exp|q - m|``.
    """
    n = patches.shape[0]
    worst = patches.argmax(axis=1)
    per_frame = patches.shape[1]
    q = flat[np.arange(n) * per_frame + worst]
    centre = bank[nn[np.arange(n), worst]]
    k = min(k, bank.shape[0])
    weights = np.empty(n, dtype=np.float64)
    bank_sq = np.einsum("ij,ij->i", bank, bank)
    for i in range(n):
        d_centre = bank_sq - 2.0 * (bank @ centre[i]) + float(centre[i] @ centre[i])
        support = np.argpartition(d_centre, k - 1)[:k]
        support = support[np.argsort(d_centre[support])]
        d = np.sqrt(np.maximum(((bank[support] - q[i]) ** 2).sum(axis=1), 0.0)).astype(np.float64)
        e = np.exp(d - d.max())
        weights[i] = 1.0 - e[0] / e.sum()
    return weights


def _aggregate(maps: list[np.ndarray]) -> np.ndarray:
    """Locally aggregated patch features ``(n, h, w, sum of channels)`` at the finest map's stride."""
    size = (1, 1, NEIGHBOURHOOD, NEIGHBOURHOOD)
    target = maps[0].shape[-2:]
    parts = []
    for m in maps:
        a = ndimage.uniform_filter(m, size=size, mode="reflect")
        parts.append(a if a.shape[-2:] == target else resize_maps(a, target))
    feats = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return np.ascontiguousarray(feats.transpose(0, 2, 3, 1), dtype=np.float32)
