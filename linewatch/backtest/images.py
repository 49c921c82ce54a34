"""Backtest an image detector on a folder in the MVTec AD layout: how a user evaluates linewatch.

Why: before a camera goes live, a quality engineer wants to know how well a model trained on
*their* good parts finds *their* defects, and how many good parts it would flag. The folder
layout is MVTec AD's, the de-facto standard, so the same command runs on MVTec itself, on the
frame simulator's datasets (:func:`linewatch.simulation.frames.write_dataset`) and on a
plant's images sorted by hand::

    DIR/train/good/*.png                    known-good frames (the only training data)
    DIR/test/good/*.png                     good frames the model never saw
    DIR/test/<defect>/*.png                 defective frames, one folder per defect type
    DIR/ground_truth/<defect>/<name>_mask.png   optional pixel masks (non-zero = defect)

What it does: fits :class:`~linewatch.detectors.patchcore.PatchCore` (its ``preset``, ``fast`` by
default) through :meth:`ModelBundle.fit <linewatch.detectors.bundle.ModelBundle.fit>` on
``train/good``, which calibrates the way every model is calibrated (blocked cross-fitting, so
every good frame gets an out-of-fold score; an explicit ``calibration_fraction`` holds out the
last share instead; the backtest has no split of its own), sets the threshold at ``target_far``,
scores every test frame with its heat map, and reports

- ``image_auroc`` (good vs any defect) and per defect type;
- ``pixel_auroc`` over test frames whose masks exist (good frames count as all-normal), at the
  model's resolution (masks resized with nearest neighbour), or ``None`` without masks;
- ``f1`` / precision / recall at the calibrated threshold, and the false-alarm rate ``far``
  observed on ``test/good`` next to the ``target_far`` it was calibrated for (all from
  :func:`linewatch.backtest.metrics.classification_metrics`, the definitions every modality
  shares; ``image_auroc`` is its ``auroc``);
- ``fps``: frames per second through the detector (backbone, patch search and heat map; file
  decoding excluded and reported separately), ``n_train``, ``n_test`` and timings.

Frames are decoded with Pillow and resized to the model size while loading (the model decides
it, keeping the aspect ratio with ``resize="aspect"``), so a folder of 1024x1024 frames does not
have to fit in memory at full size. Whether the held-out share can calibrate ``target_far`` is
checked from the file count before any frame is read (:func:`check_calibration_budget`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from linewatch.backtest.metrics import auroc, classification_metrics
from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.calibration import (
    MAX_POT_TAIL_FRACTION,
    MIN_EXCEEDANCES_FOR_EMPIRICAL,
    MIN_POT_EXCEEDANCES,
)
from linewatch.detectors.patchcore import PatchCore, Progress, as_size
from linewatch.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
#: Frames scored per detector call in the test pass.
SCORE_BATCH = 16
#: What a frame is resized to while loading: a fixed (H, W), or a function of the file's (H, W).
FrameSize = tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]]


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_frame(path: Path, size: FrameSize) -> np.ndarray:
    """Decode one image file to uint8 at ``size``: grayscale stays ``(H, W)``, everything else RGB.

    ``size`` may be a function of the file's own ``(H, W)`` (e.g. ``PatchCore.model_size``).
    """
    try:
        with Image.open(path) as img:
            img.load()
            if callable(size):
                size = size((img.size[1], img.size[0]))
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit industrial cameras
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                img = Image.fromarray(np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8))
            elif img.mode not in ("L", "RGB"):
                img = img.convert("RGB")
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(img)
    except OSError as e:
        raise DataError(f"cannot decode image {path}: {e}") from e


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as bool at ``size`` (nearest neighbour keeps it binary)."""
    with Image.open(path) as img:
        m = img.convert("L")
        if m.size != (size[1], size[0]):
            m = m.resize((size[1], size[0]), Image.Resampling.NEAREST)
        return np.asarray(m) > 0


def scan_dataset(data_dir: str | Path) -> dict[str, Any]:
    """Find the train/test files and masks of an MVTec-layout folder, with clear errors when it is not one."""
    root = Path(data_dir)
    train_dir = root / "train" / GOOD
    test_dir = root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise ConfigError(
            f"{root} is not in the MVTec AD layout: it needs train/good/ and test/<label>/ folders "
            "(e.g. `linewatch simulate frames --out DIR` writes one)"
        )
    train = _list_images(train_dir)
    if not train:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {train_dir}")
    test: list[tuple[Path, str, Path | None]] = []
    for label_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        label = label_dir.name
        for img in _list_images(label_dir):
            mask = root / "ground_truth" / label / f"{img.stem}_mask.png"
            test.append((img, label, mask if label != GOOD and mask.exists() else None))
    if not test:
        raise DataError(f"no test images under {test_dir}")
    return {"root": root, "train": train, "test": test}


def check_calibration_budget(n_good: int, calibration_fraction: float | None, target_far: float,
                             calibration: str = "auto") -> int:
    """Refuse, before any frame is read, too few calibration frames to place a threshold at ``target_far``.

    Why: the bundle calibrates only after the expensive feature extraction and coreset; finding
    out then that 41 frames cannot resolve 5 % wastes minutes and says nothing about which option
    to change. The rule is the shared calibrators' (empirical needs ``10 / target_far`` scores,
    POT ``(20 + 1) / 0.5``); ``auto`` takes whichever suffices. With cross-fitting
    (``calibration_fraction=None``, the default) every good frame is scored out of fold; with a
    hold-out only ``calibration_fraction`` of them. Returns the number of calibration frames.
    """
    if calibration_fraction is not None and not 0.0 < calibration_fraction < 1.0:
        raise ConfigError(
            f"--calibration-fraction (calibration_fraction=) {calibration_fraction!r} must be in (0, 1), e.g. 0.25"
        )
    n_cal = n_good if calibration_fraction is None else round(calibration_fraction * n_good)
    empirical = math.ceil(MIN_EXCEEDANCES_FOR_EMPIRICAL / target_far)
    pot = math.ceil((MIN_POT_EXCEEDANCES + 1) / MAX_POT_TAIL_FRACTION)
    needed = {"empirical": empirical, "pot": pot}.get(calibration, min(empirical, pot))
    if n_cal >= needed:
        return n_cal
    hints = []
    if calibration_fraction is not None and needed <= n_good:
        hints.append("leave out --calibration-fraction (cross-fitting scores every good frame)")
    if calibration != "pot" and n_cal > MIN_EXCEEDANCES_FOR_EMPIRICAL:
        hints.append(f"raise --target-far (target_far=) to {MIN_EXCEEDANCES_FOR_EMPIRICAL / n_cal:.2g}")
    if calibration == "empirical" and n_cal >= pot:
        hints.append("use --calibration auto")
    hints.append(f"add known-good images (at least {math.ceil(needed / (calibration_fraction or 1.0))} "
                 "in train/good)")
    what = (f"{n_cal} held-out good frames ({calibration_fraction:.0%} of {n_good})" if calibration_fraction
            else f"{n_cal} good frames")
    raise ConfigError(
        f"{what} cannot calibrate target_far={target_far:g} with calibration={calibration!r}, which needs at "
        f"least {needed}; " + "; or ".join(hints)
    )


def run_images_backtest(
    data_dir: str | Path,
    *,
    preset: str = "fast",
    target_far: float = 0.05,
    coreset_ratio: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    image_size: int | tuple[int, int] | None = None,
    calibration_fraction: float | None = None,
    fold_order: str = "time",
    calibration: str = "auto",
    max_bank_size: int | None = None,
    projection_dim: int | None = None,
    provider: str = "auto",
    intra_op_threads: int = 1,
    model_out: str | Path | None = None,
    **detector_params: Any,
) -> dict[str, Any]:
    """Train on ``train/good`` (the bundle cross-fits its calibration scores), evaluate on ``test/``; return metrics.

    ``preset`` picks PatchCore's settings (:data:`~linewatch.detectors.patchcore.PRESETS`); any
    parameter given here (``image_size``, ``coreset_ratio``, ... or another PatchCore keyword in
    ``detector_params``) overrides it. The returned dict is JSON-serialisable; keys at least
    ``image_auroc``, ``pixel_auroc``, ``f1``, ``fps``, ``n_train`` and ``n_test``. ``model_out``
    also saves the fitted, calibrated model there as a
    :class:`~linewatch.detectors.bundle.ModelBundle`, ready for the frames agent.
    """
    det = PatchCore(
        preset=preset,
        image_size=image_size,
        coreset_ratio=coreset_ratio,
        max_bank_size=max_bank_size,
        projection_dim=projection_dim,
        provider=provider,
        intra_op_threads=intra_op_threads,
        seed=seed,
        **detector_params,
    )
    size = as_size(det.image_size)
    ds = scan_dataset(data_dir)
    check_calibration_budget(len(ds["train"]), calibration_fraction, target_far, calibration)
    det._validate_params()  # a bad parameter fails here, before any frame is read

    t0 = time.perf_counter()
    train_frames = [load_frame(p, det.model_size) for p in ds["train"]]
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    # The same fit and calibration every image model gets: the bundle holds out (or cross-fits)
    # the calibration frames itself.
    bundle = ModelBundle.fit(det, train_frames, modality="frames", calibration=calibration, target_far=target_far,
                             calibration_fraction=calibration_fraction, fold_order=fold_order, seed=seed,
                             progress=progress)
    fit_s = time.perf_counter() - t0
    del train_frames

    tests = ds["test"]
    n_test = len(tests)
    scores = np.empty(n_test, dtype=np.float64)
    maps = np.empty((n_test, *size), dtype=np.float32)
    score_s = 0.0
    for start in range(0, n_test, SCORE_BATCH):
        batch = tests[start : start + SCORE_BATCH]
        t0 = time.perf_counter()
        frames = [load_frame(p, det.model_size) for p, _, _ in batch]
        load_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        s, m = det.score_with_heatmap(frames, size=size)
        score_s += time.perf_counter() - t0
        scores[start : start + len(batch)] = s
        maps[start : start + len(batch)] = m
        if progress is not None:
            progress("scoring", min(start + SCORE_BATCH, n_test), n_test)

    labels = np.array([label for _, label, _ in tests])
    is_defect = labels != GOOD
    alarms = bundle.calibrate(scores, None).is_anomaly
    result: dict[str, Any] = classification_metrics(is_defect, alarms, scores)
    result.update(
        {
            "data_dir": str(ds["root"]),
            "image_auroc": result["auroc"],
            "target_far": target_far,
            "threshold": bundle.raw_threshold,
            "calibrator": bundle.calibrator.kind,
            "n_train": bundle.meta.get("n_fit", len(ds["train"])),
            "n_calibration": bundle.meta.get("n_calibration"),
            "n_train_good": len(ds["train"]),
            "preset": det.preset,
            "detector_params": det.get_params(),
            "n_test": n_test,
            "n_test_good": int(np.sum(~is_defect)),
            "n_test_defect": int(np.sum(is_defect)),
            "fps": n_test / score_s if score_s > 0 else None,
            "fit_seconds": fit_s,
            "score_seconds": score_s,
            "load_seconds": load_s,
            "image_size": list(size),
            "bank_size": int(det.memory_bank_.shape[0]) if det.memory_bank_ is not None else None,
            "n_train_patches": det.n_train_patches_,
            "feature_dim": det.feature_dim_,
            "coreset_ratio": det.coreset_ratio,
            "seed": seed,
            "providers": det.backbone.active_providers,
        }
    )

    # pixel level: frames with masks, plus good frames (all pixels normal)
    has_mask = np.array([m is not None for _, _, m in tests])
    pixel_rows = np.flatnonzero(has_mask | ~is_defect)
    pixel_auroc: float | None = None
    gt: dict[int, np.ndarray] = {}
    if has_mask.any():
        for i in np.flatnonzero(has_mask):
            gt[int(i)] = load_mask(tests[i][2], size)  # type: ignore[arg-type]
        truth = np.zeros((pixel_rows.size, *size), dtype=bool)
        for k, i in enumerate(pixel_rows):
            if int(i) in gt:
                truth[k] = gt[int(i)]
        pixel_auroc = auroc(truth.ravel(), maps[pixel_rows].ravel())
    result["pixel_auroc"] = pixel_auroc

    per_defect: dict[str, dict[str, Any]] = {}
    good_rows = np.flatnonzero(~is_defect)
    for defect in sorted(set(labels[is_defect].tolist())):
        rows = np.flatnonzero(labels == defect)
        both = np.concatenate([good_rows, rows])
        entry: dict[str, Any] = {
            "n": int(rows.size),
            "image_auroc": auroc(labels[both] != GOOD, scores[both]),
            "recall": float(alarms[rows].mean()),
            "pixel_auroc": None,
        }
        masked = [int(i) for i in rows if int(i) in gt]
        if masked:
            sel = np.array(masked + [int(i) for i in good_rows])
            truth = np.stack([gt.get(int(i), np.zeros(size, dtype=bool)) for i in sel])
            entry["pixel_auroc"] = auroc(truth.ravel(), maps[sel].ravel())
        per_defect[defect] = entry
    result["per_defect"] = per_defect
    if "calibration_report" in bundle.meta:  # the bundle's cross-fitting report, once it writes one
        result["calibration_report"] = bundle.meta["calibration_report"]

    if model_out is not None:
        bundle.save(model_out)
        result["model_path"] = str(model_out)
    return result
