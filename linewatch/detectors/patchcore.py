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
stays bounded however many good images a plant collects. ``bench/bench_images.py`` measures
the accuracy/speed trade-off behind the defaults.

Raw scores are in feature-distance units; :meth:`PatchCore.calibrate` maps them to tail
probabilities on held-out good frames with :mod:`linewatch.detectors.calibration`, so a
threshold reads as a false-alarm rate. An uncalibrated detector scores but never alerts.

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

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from scipy import ndimage
from threadpoolctl import ThreadpoolController

from linewatch.detectors.base import check_fitted, load_state, save_state
from linewatch.detectors.calibration import (
    MIN_EXCEEDANCES_FOR_EMPIRICAL,
    MIN_POT_EXCEEDANCES,
    Calibrator,
    PotCalibrator,
    calibrator_from_dict,
    make_calibrator,
)
from linewatch.detectors.image_backbone import (
    ImageBackbone,
    as_frames,
    frame_sizes,
    prepare_images,
)
from linewatch.detectors.image_base import Images, register_image
from linewatch.errors import ConfigError, DataError, NotFittedError

#: (stage, done, total): called during fit ("features", "coreset") and by the backtest ("scoring").
Progress = Callable[[str, int, int], None]

#: Side of the local neighbourhood each patch feature is averaged over (PatchCore's default).
NEIGHBOURHOOD = 3
#: Heat-map smoothing in pixels at the 224x224 model resolution (PatchCore's sigma = 4).
HEATMAP_SIGMA = 4.0
#: Below this many bank entries the bank no longer covers normal variation; the coreset never
#: goes smaller (unless there are fewer training patches than this).
MIN_BANK_SIZE = 1024
#: Working-set budget for one chunk of the query x bank distance matrix: large enough for BLAS
#: to run at full speed, small enough to stay in cache-friendly territory and bounded memory.
QUERY_CHUNK_BYTES = 16 << 20
#: Call the progress callback about this many times during coreset selection.
PROGRESS_STEPS = 100
#: Widest POT tail fraction accepted when held-out good frames are few (the GPD is then fitted
#: to the upper half of the scores; any wider and it would be fitting the body, not the tail).
MAX_POT_TAIL_FRACTION = 0.5
CALIBRATION_METHODS = ("auto", "empirical", "pot")


@cache
def _blas_controller() -> ThreadpoolController:
    """One threadpoolctl controller per process (building one scans the loaded libraries, ~0.5 ms)."""
    return ThreadpoolController()


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the enclosed numpy work with ``n`` BLAS threads (``None``: leave BLAS as configured).

    Why: on a 2-core line PC the backbone (onnxruntime) and the patch search (BLAS) alternate
    batch by batch; a multi-threaded BLAS keeps spinning threads after each product that steal
    the core onnxruntime needs next, which measured twice as slow end to end and erratic.
    """
    if n is None:
        yield
        return
    with _blas_controller().limit(limits=n, user_api="blas"):
        yield


@lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights, half-pixel centres (torch's align_corners=False)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - w)
    np.add.at(m, (np.arange(n_out), i1), w)
    m.setflags(write=False)
    return m


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(..., h, w)`` maps to ``(..., H, W)`` as two small matrix products."""
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    rows, cols = _interp_matrix(size[0], h), _interp_matrix(size[1], w)
    return rows @ maps @ cols.T


def random_projection(n_in: int, n_out: int, seed: int) -> np.ndarray:
    """Seeded Gaussian projection (Johnson-Lindenstrauss): keeps pairwise distances within a few %."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_in, n_out)) / math.sqrt(n_out)).astype(np.float32)


def greedy_coreset(
    features: np.ndarray,
    n_select: int,
    *,
    seed: int = 0,
    selection_dim: int | None = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    """Indices of a greedy k-center coreset of ``features`` (``n_select`` rows).

    Each step adds the point farthest from everything chosen so far, which bounds the distance
    from any training patch to the bank by (at most twice) the optimum. One step is one
    matrix-vector product over all points; a seeded random projection to ``selection_dim``
    dimensions (as PatchCore does) makes that product cheaper while keeping the choice almost
    the same. The first centre is random (seeded).

    >>> pts = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [10.0, 0.0]], dtype=np.float32)
    >>> idx = greedy_coreset(pts, 3, seed=1, selection_dim=None)
    >>> sorted(idx.tolist())[1:], int(idx.min()) in (0, 1)   # both far points, one of the close pair
    ([2, 3], True)
    """
    n, d = features.shape
    if n_select >= n:
        return np.arange(n)
    if n_select < 1:
        raise ConfigError(f"n_select={n_select} must be at least 1")
    rng = np.random.default_rng(seed)
    z = features
    if selection_dim is not None and selection_dim < d:
        z = features @ random_projection(d, selection_dim, int(rng.integers(2**31)))
    z = np.ascontiguousarray(z, dtype=np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    chosen = np.empty(n_select, dtype=np.int64)
    chosen[0] = int(rng.integers(n))
    buf = np.empty(n, dtype=np.float32)
    np.dot(z, z[chosen[0]], out=buf)
    min_d = sq - 2.0 * buf + sq[chosen[0]]
    every = max(1, n_select // PROGRESS_STEPS)
    for k in range(1, n_select):
        i = int(np.argmax(min_d))
        chosen[k] = i
        np.dot(z, z[i], out=buf)
        buf *= -2.0
        buf += sq
        buf += sq[i]
        np.minimum(min_d, buf, out=min_d)
        if progress is not None and (k % every == 0 or k == n_select - 1):
            progress("coreset", k + 1, n_select)
    return chosen


def nearest_sq_distances(queries: np.ndarray, bank_t: np.ndarray) -> np.ndarray:
    """Squared distance from each query row to its nearest bank row.

    ``bank_t`` is the augmented, transposed bank ``[[-2 * bank.T], [|bank|^2]]`` from
    :func:`augment_bank`; with a column of ones appended to the queries one GEMM yields
    ``|b|^2 - 2 q.b`` for every pair, so BLAS does all the arithmetic and only the row minimum
    is left. Adding ``|q|^2`` gives the squared distance. Queries go in chunks so the distance
    block stays within :data:`QUERY_CHUNK_BYTES` however large the batch.

    >>> bank = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    >>> nearest_sq_distances(np.array([[0.0, 1.0], [3.0, 3.0]]), augment_bank(bank)).tolist()
    [1.0, 1.0]
    """
    d1, m = bank_t.shape
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != d1 - 1:
        raise DataError(f"queries of shape {q.shape} do not match a bank of {d1 - 1}-dimensional features")
    out = np.empty(q.shape[0], dtype=np.float32)
    chunk = max(64, QUERY_CHUNK_BYTES // (4 * m))
    q_aug = np.ones((min(chunk, q.shape[0]), d1), dtype=np.float32)
    for start in range(0, q.shape[0], chunk):
        qc = q[start : start + chunk]
        k = qc.shape[0]
        q_aug[:k, :-1] = qc
        block = q_aug[:k] @ bank_t
        out[start : start + k] = block.min(axis=1) + np.einsum("ij,ij->i", qc, qc)
    np.maximum(out, 0.0, out=out)
    return out


def augment_bank(bank: np.ndarray) -> np.ndarray:
    """The ``(d + 1, m)`` search form of an ``(m, d)`` bank: ``-2 * bank.T`` over a row of ``|bank|^2``."""
    bank = np.asarray(bank, dtype=np.float32)
    sq = np.einsum("ij,ij->i", bank, bank)
    return np.ascontiguousarray(np.vstack([-2.0 * bank.T, sq[None, :]]))


def as_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ConfigError(f"image_size={image_size!r}; give one int or (height, width)")
    return int(image_size[0]), int(image_size[1])


def _calibrator_for(method: str, target_far: float, n: int) -> Calibrator:
    """The shared calibrator for ``n`` held-out good scores, with POT's tail widened for small ``n``.

    Image datasets are small: 40 held-out good frames are typical where a signal detector has
    thousands of windows. ``make_calibrator`` picks the empirical calibrator when the sample can
    resolve ``target_far`` and POT otherwise; POT's default 5 % tail needs 400 scores, so with
    fewer the tail fraction grows until it holds :data:`MIN_POT_EXCEEDANCES` + 1 scores, up to
    :data:`MAX_POT_TAIL_FRACTION`. Below that the error says what would work.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    cal = make_calibrator(method, target_far, n)
    if isinstance(cal, PotCalibrator) and n * cal.tail_fraction < MIN_POT_EXCEEDANCES + 1:
        needed = (MIN_POT_EXCEEDANCES + 1) / n
        if needed > MAX_POT_TAIL_FRACTION:
            far_ok = MIN_EXCEEDANCES_FOR_EMPIRICAL / n
            raise ConfigError(
                f"{n} held-out good frames cannot calibrate target_far={target_far:g}: the empirical "
                f"calibrator needs {math.ceil(MIN_EXCEEDANCES_FOR_EMPIRICAL / target_far)} and POT at least "
                f"{math.ceil((MIN_POT_EXCEEDANCES + 1) / MAX_POT_TAIL_FRACTION)}; hold out more good frames"
                + (f" or raise target_far to {far_ok:.2g} or more" if far_ok < 1 else "")
            )
        cal = PotCalibrator(target_far=cal.target_far, tail_fraction=needed)
    return cal


@register_image("patchcore")
class PatchCore:
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

    name: ClassVar[str]

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
        self.calibrator_: Calibrator | None = None
        self.backbone_sha256_: str | None = None
        self.feature_dim_: int | None = None
        self.n_train_: int | None = None
        self.n_train_patches_: int | None = None
        self.training_sha256_: str | None = None
        self._bank_aug: np.ndarray | None = None
        self._backbone: ImageBackbone | None = None

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, JSON-serialisable (what :meth:`save` records)."""
        size = self.image_size
        return {
            "image_size": list(size) if isinstance(size, tuple | list) else size,
            "coreset_ratio": self.coreset_ratio,
            "max_bank_size": self.max_bank_size,
            "projection_dim": self.projection_dim,
            "selection_dim": self.selection_dim,
            "heatmap_sigma": self.heatmap_sigma,
            "batch_size": self.batch_size,
            "backbone_path": self.backbone_path,
            "provider": self.provider,
            "intra_op_threads": self.intra_op_threads,
            "search_threads": self.search_threads,
            "seed": self.seed,
        }

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
        """The feature extractor (its onnxruntime session starts on first use)."""
        if self._backbone is None:
            self._backbone = ImageBackbone(
                model_path=self.backbone_path, provider=self.provider, intra_op_threads=self.intra_op_threads
            )
        return self._backbone

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
        self.calibrator_ = None  # a new bank invalidates any earlier calibration
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

    # ------------------------------------------------------------------ calibration
    def calibrate(self, images: Images, *, target_far: float = 0.01, method: str = "auto") -> Self:
        """Fit the tail-probability calibrator on held-out good frames (never the training frames).

        Training frames score low against a bank built from them, so calibrating on them would
        put the threshold too low and flood the line with false alarms.
        """
        self._check_ready()
        scores = self.score(images)
        return self.calibrate_scores(scores, target_far=target_far, method=method)

    def calibrate_scores(self, scores: np.ndarray, *, target_far: float = 0.01, method: str = "auto") -> Self:
        """Same as :meth:`calibrate`, from raw scores of held-out good frames already computed."""
        self._check_ready()
        scores = np.asarray(scores, dtype=np.float64).ravel()
        self.calibrator_ = _calibrator_for(method, target_far, scores.size).fit(scores)
        return self

    def _calibrator(self) -> Calibrator:
        if self.calibrator_ is None:
            raise NotFittedError(
                "PatchCore is not calibrated; call calibrate() on held-out good frames "
                "(an uncalibrated detector scores but never alerts)"
            )
        return self.calibrator_

    @property
    def threshold_(self) -> float:
        """Raw-score threshold at the calibrated false-alarm rate."""
        threshold = self._calibrator().threshold_
        assert threshold is not None
        return float(threshold)

    def tail_probability(self, raw_scores: np.ndarray) -> np.ndarray:
        """P(a good frame scores at least this high), from the held-out good frames."""
        return self._calibrator().tail_probability(np.asarray(raw_scores, dtype=np.float64))

    def is_alarm(self, raw_scores: np.ndarray) -> np.ndarray:
        """Boolean alarms at the calibrated threshold."""
        return self._calibrator().is_alarm(np.asarray(raw_scores, dtype=np.float64))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write ``metadata.json`` (parameters, provenance, calibrator) and ``arrays.npz`` (bank)."""
        check_fitted(self, "memory_bank_")
        assert self.memory_bank_ is not None
        params = {
            **self.get_params(),
            "fitted": {
                "backbone_sha256": self.backbone_sha256_,
                "feature_dim": self.feature_dim_,
                "n_train": self.n_train_,
                "n_train_patches": self.n_train_patches_,
                "training_sha256": self.training_sha256_,
                "bank_size": int(self.memory_bank_.shape[0]),
                "calibrator": None if self.calibrator_ is None else self.calibrator_.to_dict(),
            },
        }
        arrays = {"memory_bank": self.memory_bank_}
        if self.projection_ is not None:
            arrays["projection"] = self.projection_
        save_state(path, kind=self.name, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Restore a saved detector, refusing one built on a different backbone file."""
        params, arrays = load_state(path, kind=cls.name)
        fitted = params.pop("fitted")
        if isinstance(params["image_size"], list):
            params["image_size"] = tuple(params["image_size"])
        det = cls(**params)
        shipped = det.backbone.spec.sha256
        if fitted["backbone_sha256"] != shipped:
            raise ConfigError(
                f"{path} was fitted on backbone sha256 {fitted['backbone_sha256'][:12]}…, but the backbone "
                f"here is {shipped[:12]}…; its memory bank does not match these features — refit the model"
            )
        det.memory_bank_ = np.ascontiguousarray(arrays["memory_bank"], dtype=np.float32)
        det.projection_ = arrays.get("projection")
        det._bank_aug = augment_bank(det.memory_bank_)
        det.backbone_sha256_ = fitted["backbone_sha256"]
        det.feature_dim_ = fitted["feature_dim"]
        det.n_train_ = fitted["n_train"]
        det.n_train_patches_ = fitted["n_train_patches"]
        det.training_sha256_ = fitted["training_sha256"]
        det.calibrator_ = None if fitted["calibrator"] is None else calibrator_from_dict(fitted["calibrator"])
        return det


#: Side of the heat-map thumbnail carried in a score message's explanation (32x32 = 1 KiB).
THUMBNAIL_SIZE = 32


def summarize_heatmap(
    heat: np.ndarray, *, threshold: float, thumbnail_size: int = THUMBNAIL_SIZE
) -> dict[str, Any]:
    """What a score message needs to say *where*: peak, hot region, and a small thumbnail.

    Why: a full-resolution float map per frame is too big for a Kafka message; an operator needs
    the location and extent of the defect, and a dashboard a small picture. ``box`` is the
    bounding box ``(top, left, bottom, right)`` of the connected region above ``threshold``
    that holds the peak (``None`` when nothing exceeds it); ``thumbnail`` is the map resized to
    ``thumbnail_size`` squared and scaled so 128 = threshold, 255 = twice it, as ``uint8``.

    >>> heat = np.zeros((40, 60), dtype=np.float32); heat[10:15, 20:30] = 5.0
    >>> s = summarize_heatmap(heat, threshold=1.0, thumbnail_size=8)
    >>> s["peak"], s["box"], s["thumbnail"].shape, round(s["area_fraction"], 4)
    ((10, 20), (10, 20, 15, 30), (8, 8), 0.0208)
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise DataError(f"summarize one (H, W) heat map at a time, got shape {heat.shape}")
    if not threshold > 0:
        raise ConfigError(f"threshold={threshold!r} must be positive (use the detector's threshold_)")
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    hot = heat > threshold
    box: tuple[int, int, int, int] | None = None
    if hot[peak]:
        labels, _ = ndimage.label(hot)
        rows, cols = np.nonzero(labels == labels[peak])
        box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    small = resize_maps(heat, (thumbnail_size, thumbnail_size))
    thumb = np.clip(np.rint(small / threshold * 128.0), 0, 255).astype(np.uint8)
    return {
        "peak": (int(peak[0]), int(peak[1])),
        "peak_value": float(heat[peak]),
        "box": box,
        "area_fraction": float(hot.mean()),
        "thumbnail": thumb,
    }


def _aggregate(s8: np.ndarray, s16: np.ndarray) -> np.ndarray:
    """Locally aggregated, stride-8 patch features ``(n, h, w, 40 + 112)`` from the two maps."""
    size = (1, 1, NEIGHBOURHOOD, NEIGHBOURHOOD)
    a8 = ndimage.uniform_filter(s8, size=size, mode="reflect")
    a16 = ndimage.uniform_filter(s16, size=size, mode="reflect")
    up16 = resize_maps(a16, s8.shape[-2:])
    feats = np.concatenate([a8, up16], axis=1)
    return np.ascontiguousarray(feats.transpose(0, 2, 3, 1), dtype=np.float32)
