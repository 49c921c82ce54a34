"""What raises PatchCore's accuracy on real sets: resize mode, resolution, layers, bank, re-weighting, image score.

Prints figures; asserts nothing. Each data set is embedded once per (resolution, resize mode)
with the detector's own code (:class:`~linewatch.detectors.patchcore.PatchCore`), then every
variant below is scored from those features, so a grid costs one backbone pass per input
setting instead of one per variant:

- ``layers``: both backbone outputs (stride 8 + stride 16) or one of them;
- ``bank``: ``coreset_ratio`` / ``max_bank_size`` (the fast preset's 1 % capped at 4096, or 10 %
  capped at 16384);
- ``score``: image score ``max`` (worst patch), ``smoothed_max`` (heat-map peak) or ``topk``
  (mean of the hottest 1 % of heat-map pixels), each without and with PatchCore's k-NN
  re-weighting (``reweight_k=3``);
- ``fps``: frames/s end to end (backbone, search, image score, heat map) at 256x256 for each preset.

Sets: MVTec-layout folders under ``--eval-dir`` (the four public sets by default) plus the
frame simulator's textured SKUs, generated on the fly. One setting per preset is meant to be
read off the *mean* over all sets, never tuned per set.

Usage::

    linewatch bench image-sota --sets mvtec_bottle,sim:fabric-c --json sota.json
    python -m linewatch.benchmarks.image_sota --quick
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from linewatch.backtest.images import GOOD, load_mask, scan_dataset
from linewatch.backtest.metrics import auroc
from linewatch.detectors import patchcore as pc
from linewatch.detectors.coreset import augment_bank, blas_threads, nearest_sq_distances
from linewatch.eval_data import IMAGES_DIR
from linewatch.simulation.frames import render_batch, write_dataset

PROG = "python -m linewatch.benchmarks.image_sota"
EVAL_DIR = IMAGES_DIR
DEFAULT_SETS = ("mvtec3d_tire_rgb", "mvtec_bottle", "elpv_mono", "deeppcb_g20085", "sim:fabric-c", "sim:grain-d")
#: Side at which heat maps and masks are compared (both resized to it).
PIXEL_EVAL_SIDE = 224
BANKS = {"1%<=4096": (0.01, 4096), "10%<=16384": (0.10, 16384)}


@dataclass
class EvalSet:
    """One data set, decoded at native size: frames, labels and masks (``None`` where absent)."""

    name: str
    train: list[np.ndarray]
    test: list[np.ndarray]
    is_defect: np.ndarray
    masks: list[np.ndarray | None]


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return np.asarray(img if img.mode in ("L", "RGB") else img.convert("RGB"))


def load_set(name: str, root: Path, *, limit_train: int | None = None) -> EvalSet:
    """An MVTec-layout folder at native resolution (masks at :data:`PIXEL_EVAL_SIDE`)."""
    ds = scan_dataset(root)
    train_files = ds["train"][:limit_train] if limit_train else ds["train"]
    side = (PIXEL_EVAL_SIDE, PIXEL_EVAL_SIDE)
    return EvalSet(
        name=name,
        train=[_decode(p) for p in train_files],
        test=[_decode(p) for p, _, _ in ds["test"]],
        is_defect=np.array([label != GOOD for _, label, _ in ds["test"]]),
        masks=[load_mask(m, side) if m is not None else None for _, _, m in ds["test"]],
    )


def _simulated(sku: str, tmp: Path, quick: bool, seed: int) -> EvalSet:
    root = tmp / sku
    n_train, n_good, n_def = (40, 16, 6) if quick else (120, 30, 10)
    write_dataset(root, sku=sku, n_train=n_train, n_test_good=n_good, n_test_per_defect=n_def, size=256, seed=seed)
    return load_set(f"sim:{sku}", root)


def _select(flat: np.ndarray, ratio: float, cap: int, seed: int) -> np.ndarray:
    det = pc.PatchCore(coreset_ratio=ratio, max_bank_size=cap, seed=seed)
    return det._select_bank(flat)


def _score_variants(det: pc.PatchCore, feats: list[np.ndarray], bank: np.ndarray, ds: EvalSet) -> dict[str, Any]:
    """Image AUROC per image score x re-weighting, pixel AUROC per image-score map, from one search."""
    aug = augment_bank(bank)
    out: dict[str, Any] = {}
    side = (PIXEL_EVAL_SIDE, PIXEL_EVAL_SIDE)
    per_frame: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for f in feats:
        flat = f.reshape(-1, f.shape[-1])
        d2, nn = nearest_sq_distances(flat, aug, return_index=True)
        per_frame.append((flat, np.sqrt(d2).reshape(f.shape[:2]), nn))
    weights = np.array([
        pc._reweighting(flat, p.reshape(1, -1), nn.reshape(1, -1), bank, 3)[0] for flat, p, nn in per_frame
    ])
    for score in pc.IMAGE_SCORES:
        det.image_score, det.reweight_k = score, 0
        s = np.array([det.image_scores_from_patch_scores(p[None])[0] for _, p, _ in per_frame])
        out[f"{score}"] = auroc(ds.is_defect, s)
        out[f"{score}+rw3"] = auroc(ds.is_defect, s * weights)
    masked = [i for i, m in enumerate(ds.masks) if m is not None]
    if masked:
        rows = masked + [int(i) for i in np.flatnonzero(~ds.is_defect)]
        truth = np.stack([ds.masks[i] if ds.masks[i] is not None else np.zeros(side, bool) for i in rows])
        maps = np.stack([det.heatmap_from_patch_scores(per_frame[i][1][None], side)[0] for i in rows])
        out["pixel"] = auroc(truth.ravel(), maps.ravel())
    return out


def _layer_slices(det: pc.PatchCore, standardize: bool) -> dict[str, slice | str]:
    """Channel slices of the concatenated feature per layer choice, plus a standardised variant."""
    c8 = det.backbone.spec.channels[0]
    out: dict[str, slice | str] = {"s8+s16": slice(None)}
    if standardize:
        out["s8+s16/std"] = "std"
    out.update({"s8": slice(0, c8), "s16": slice(c8, None)})
    return out


def _standardized(f_train: list[np.ndarray], f_test: list[np.ndarray]) -> tuple[list, list]:
    """Per-channel z-scores with the training patches' mean and spread (a variant, not the detector's)."""
    flat = np.concatenate([f.reshape(-1, f.shape[-1]) for f in f_train])
    mu, sd = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    return [(f - mu) / sd for f in f_train], [np.ascontiguousarray((f - mu) / sd, dtype=np.float32) for f in f_test]


def bench_set(ds: EvalSet, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every variant on one set; rows of figures."""
    rows: list[dict[str, Any]] = []
    shapes = {f.shape[:2] for f in ds.train + ds.test}
    resizes = tuple(args.resizes) if any(h != w for h, w in shapes) else ("aspect",)
    for backbone in args.backbones:
        path = None if backbone == "lite0" else backbone
        tag = "lite0" if path is None else Path(backbone).stem.split("_")[1]
        for size in args.sizes:
            for resize in resizes:
                rows.extend(_bench_input(ds, args, path, tag, size, resize, first=(
                    size == args.sizes[0] and resize == resizes[-1] and backbone == args.backbones[0])))
    return rows


def _bench_input(ds: EvalSet, args: argparse.Namespace, path: str | None, tag: str, size: int, resize: str,
                 *, first: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    det = pc.PatchCore(image_size=size, resize=resize, provider=args.provider, seed=args.seed,
                       backbone_path=path)
    det._validate_params()
    det._set_projection()
    t0 = time.perf_counter()
    with blas_threads(1):
        f_train, _ = det._embed(ds.train)
        f_test, _ = det._embed(ds.test)
    embed_s = time.perf_counter() - t0
    for layers, cut in _layer_slices(det, args.standardize).items():
        if layers in ("s8", "s16") and not (first and args.layers):
            continue  # layer choice measured at one input setting
        if cut == "std":
            tr, te = _standardized(f_train, f_test)
        else:
            tr = [f[..., cut] for f in f_train]
            te = [np.ascontiguousarray(f[..., cut]) for f in f_test]
        flat = np.concatenate([f.reshape(-1, f.shape[-1]) for f in tr])
        for bank_name, (ratio, cap) in BANKS.items():
            if bank_name not in args.banks or (bank_name != "1%<=4096" and layers != "s8+s16"):
                continue
            t0 = time.perf_counter()
            with blas_threads(1):
                bank = _select(flat, ratio, cap, args.seed)
                select_s = time.perf_counter() - t0
                figures = _score_variants(det, te, bank, ds)
            row = {"set": ds.name, "backbone": tag, "size": size, "resize": resize, "layers": layers, "bank": bank_name,
                   "bank_size": len(bank), "embed_s": round(embed_s, 1), "coreset_s": round(select_s, 1),
                   **figures}
            rows.append(row)
            scores = "  ".join(f"{k} {v:.3f}" for k, v in figures.items())
            print(f"  {ds.name:16s} {tag} {size} {resize:7s} {layers:6s} bank {bank_name:10s} ({len(bank):5d}): "
                  f"{scores}", flush=True)
    return rows


def bench_fps(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Frames/s at 256x256 per preset: scores only (what the agent does for every frame) and with a heat map each."""
    rows = []
    train, _ = render_batch("fabric-c", n=40 if args.quick else 120, size=256, seed=args.seed)
    test, _ = render_batch("fabric-c", n=32, size=256, seed=args.seed, split="test")
    for preset in args.presets:
        for threads in (1, 2):
            det = pc.PatchCore(preset=preset, provider=args.provider, intra_op_threads=threads, seed=args.seed)
            det.fit(train)
            for batch in (1, 8):
                def scores(d: pc.PatchCore = det, b: int = batch) -> None:
                    for s in range(0, len(test), b):
                        d.score_patches(test[s : s + b])

                def with_maps(d: pc.PatchCore = det, b: int = batch) -> None:
                    for s in range(0, len(test), b):
                        _, patches = d.score_patches(test[s : s + b])
                        d.heatmap_from_patch_scores(patches, (256, 256))

                row = {"preset": preset, "ort_threads": threads, "batch": batch, "bank_size": len(det.memory_bank_)}
                for name, fn in (("score_fps", scores), ("heatmap_fps", with_maps)):
                    fn()  # warm-up
                    row[name] = len(test) / min(_timed(fn) for _ in range(args.repeats))
                rows.append(row)
                print(f"  {preset:8s} ort-threads {threads} batch {batch}: scores {row['score_fps']:6.1f} frames/s, "
                      f"with a heat map each {row['heatmap_fps']:6.1f} frames/s (bank {row['bank_size']})", flush=True)
    return rows


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv``, run the grid and the frame-rate section, print; ``prog`` names the command in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS),
                        help="comma-separated folder names under --eval-dir, or sim:<sku> for a simulated SKU")
    parser.add_argument("--eval-dir", type=Path, default=EVAL_DIR, help="where the MVTec-layout sets are")
    parser.add_argument("--sizes", default="224,320", help="comma-separated nominal model sides")
    parser.add_argument("--backbones", default="lite0",
                        help="comma-separated: lite0 (shipped) or paths of exported ONNX backbones with sidecars")
    parser.add_argument("--resizes", default="stretch,aspect,short",
                        help="comma-separated resize modes tried on sets with non-square frames")
    parser.add_argument("--banks", default=",".join(BANKS),
                        help="comma-separated, among " + ", ".join(BANKS).replace("%", "%%"))
    parser.add_argument("--standardize", action="store_true", help="also try per-channel standardised features")
    parser.add_argument("--no-layers", dest="layers", action="store_false", help="skip the single-layer variants")
    parser.add_argument("--sections", default="grid,fps", help="grid, fps, or both")
    parser.add_argument("--presets", default=",".join(pc.PRESETS), help="comma-separated presets for fps")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--limit-train", type=int, default=None, help="use at most this many train/good frames")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds for fps; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smaller simulated sets and fewer frames")
    parser.add_argument("--json", type=Path, help="also write every figure here (rewritten after each set)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.backbones = [s for s in args.backbones.split(",") if s]
    args.banks = [s for s in args.banks.split(",") if s]
    args.resizes = [s for s in args.resizes.split(",") if s]
    args.presets = [s for s in args.presets.split(",") if s]
    sections = [s for s in args.sections.split(",") if s]
    print(f"linewatch image SOTA bench: provider {args.provider}, {os.cpu_count()} CPUs visible", flush=True)
    results: dict[str, Any] = {"grid": [], "fps": []}
    with tempfile.TemporaryDirectory() as tmp:
        if "grid" in sections:
            for name in (s for s in args.sets.split(",") if s):
                t0 = time.perf_counter()
                if name.startswith("sim:"):
                    ds = _simulated(name[4:], Path(tmp), args.quick, args.seed)
                else:
                    ds = load_set(name, args.eval_dir / name, limit_train=args.limit_train)
                print(f"\n== {name}: {len(ds.train)} train, {len(ds.test)} test "
                      f"({int(ds.is_defect.sum())} defective)", flush=True)
                results["grid"].extend(bench_set(ds, args))
                print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
                _write(args.json, results)
        if "fps" in sections:
            print("\n== fps at 256x256", flush=True)
            results["fps"] = bench_fps(args)
    _write(args.json, results)
    return 0


def _write(path: Path | None, results: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
