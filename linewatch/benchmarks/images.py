"""Image detection benchmark: throughput, accuracy per defect type, memory-bank trade-off, faiss.

Prints figures; asserts nothing (timings are not tests). Sections:

- ``throughput``: frames/s at 224x224 and 256x256, batch 1 and 8, onnxruntime 1 and 2 intra-op
  threads, for the backbone alone and for the full detector (features, patch search, heat map);
- ``accuracy``: image and pixel AUROC per defect type on the frame simulator's datasets, through
  the same folder backtest users run (``run_images_backtest``);
- ``bank``: memory-bank size (and optional random projection) vs accuracy vs search time and
  coreset-selection time, features computed once;
- ``faiss``: the numpy/BLAS exact search against faiss-cpu (exact and HNSW), if faiss is installed.

Usage::

    linewatch bench images                       # everything, CPU (several minutes on 2 cores)
    linewatch bench images --sections throughput --provider cuda
    linewatch bench images --quick --json images.json
    python -m linewatch.benchmarks.images --quick   # the same, without the CLI
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.backtest.images import run_images_backtest
from linewatch.backtest.metrics import auroc
from linewatch.detectors import patchcore as pc
from linewatch.detectors.image_backbone import ImageBackbone, prepare_images
from linewatch.simulation.frames import DEFECT_TYPES, render_batch, write_dataset

PROG = "python -m linewatch.benchmarks.images"
SKUS = ("bracket-a", "washer-b", "fabric-c", "grain-d")


def _provider(args: argparse.Namespace) -> str:
    return "cuda" if args.provider == "cuda" else "cpu"


def _rate(fn: Any, n_frames: int, repeats: int) -> float:
    fn()  # warm-up: session start, allocations, caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_frames / best


def bench_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Backbone alone vs full detector, per size / batch / onnxruntime threads."""
    rows: list[dict[str, Any]] = []
    n = 16 if args.quick else 48
    for size in (224, 256):
        train, _ = render_batch("bracket-a", n=24 if args.quick else 60, size=size, seed=1)
        test, _ = render_batch("bracket-a", n=n, size=size, seed=1, split="test")
        # (onnxruntime intra-op threads, BLAS threads for search and heat map; None = BLAS default)
        for threads, blas in ((1, 1), (2, 1), (1, None)):
            det = pc.PatchCore(
                image_size=size,
                provider=_provider(args),
                intra_op_threads=threads,
                search_threads=blas,
                seed=0,
            )
            det.fit(train)
            backbone: ImageBackbone = det.backbone
            prepared = prepare_images(test, (size, size))
            for batch in (1, 8):

                def run_backbone(
                    b: int = batch, bb: ImageBackbone = backbone, x: np.ndarray = prepared
                ) -> None:
                    for s in range(0, n, b):
                        bb.features(x[s : s + b], batch_size=b)

                def run_detector(b: int = batch, d: pc.PatchCore = det, x: np.ndarray = test) -> None:
                    for s in range(0, n, b):
                        d.score_with_heatmap(x[s : s + b])

                def run_scores(b: int = batch, d: pc.PatchCore = det, x: np.ndarray = test) -> None:
                    for s in range(0, n, b):
                        d.score(x[s : s + b])

                row = {
                    "size": size,
                    "batch": batch,
                    "ort_threads": threads,
                    "blas_threads": blas or "default",
                    "backbone_fps": _rate(run_backbone, n, args.repeats),
                    "score_fps": _rate(run_scores, n, args.repeats),
                    "detector_fps": _rate(run_detector, n, args.repeats),
                    "bank_size": int(det.memory_bank_.shape[0]),
                    "providers": backbone.active_providers,
                }
                rows.append(row)
                print(
                    f"  {size}x{size} batch {batch} ort-threads {threads} blas {blas or 'default'}: "
                    f"backbone {row['backbone_fps']:6.1f} f/s   "
                    f"+search {row['score_fps']:6.1f} f/s   +heat map {row['detector_fps']:6.1f} f/s",
                    flush=True,
                )
    return rows


def bench_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Folder backtest on a generated dataset per SKU; image and pixel AUROC per defect type."""
    out: dict[str, Any] = {}
    n_train, n_good, n_def = (40, 20, 8) if args.quick else (150, 40, 16)
    with tempfile.TemporaryDirectory() as tmp:
        for sku in args.skus:
            root = Path(tmp) / sku
            write_dataset(
                root,
                sku=sku,
                n_train=n_train,
                n_test_good=n_good,
                n_test_per_defect=n_def,
                size=256,
                seed=args.seed,
            )
            res = run_images_backtest(
                root,
                target_far=0.1,
                calibration_fraction=0.3,
                seed=args.seed,
                image_size=args.image_size,
                provider=_provider(args),
            )
            out[sku] = res
            print(
                f"  {sku:10s} image AUROC {res['image_auroc']:.3f}  pixel AUROC {res['pixel_auroc']:.3f}  "
                f"F1 {res['f1']:.2f}  FAR(test good) {res['far']:.2f} (target 0.10)  "
                f"{res['fps']:.0f} f/s  bank {res['bank_size']}",
                flush=True,
            )
            for defect, d in res["per_defect"].items():
                print(
                    f"      {defect:16s} image {d['image_auroc']:.3f}  pixel {d['pixel_auroc']:.3f}  "
                    f"recall@thr {d['recall']:.2f}"
                )
    return out


def _features(det: pc.PatchCore, frames: np.ndarray) -> np.ndarray:
    return det._patch_features(prepare_images(frames, pc.as_size(det.image_size)))


def bench_bank(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Memory bank size and feature dimension vs image/pixel AUROC, search time and coreset time."""
    rows: list[dict[str, Any]] = []
    size = args.image_size
    n_train, n_good, n_def = (40, 20, 6) if args.quick else (150, 40, 12)
    sizes = (256, 1024, 4096) if args.quick else (256, 512, 1024, 2048, 4096, 8192)
    for sku in args.bank_skus:
        train, _ = render_batch(sku, n=n_train, size=256, seed=args.seed)
        goods, good_masks = render_batch(sku, n=n_good, size=256, seed=args.seed, split="test")
        bad = [
            render_batch(sku, n=n_def, defect=d, size=256, seed=args.seed, split="test") for d in DEFECT_TYPES
        ]
        test = np.concatenate([goods] + [b[0] for b in bad])
        masks = np.concatenate([good_masks] + [b[1] for b in bad])
        labels = np.concatenate([np.zeros(n_good, int)] + [np.ones(n_def, int)] * len(DEFECT_TYPES))
        masks_small = prepare_images(masks.astype(np.uint8) * 255, (size, size))[..., 0] > 127
        det = pc.PatchCore(image_size=size, provider=_provider(args), seed=args.seed)
        det._validate_params()
        f_train = _features(det, train)
        f_test = _features(det, test)
        n_patches = f_test.shape[1] * f_test.shape[2]
        for proj in (None, 64):
            if proj is None:
                tr, te = f_train.reshape(-1, f_train.shape[-1]), f_test.reshape(-1, f_test.shape[-1])
            else:
                p = pc.random_projection(f_train.shape[-1], proj, args.seed)
                tr, te = f_train.reshape(-1, f_train.shape[-1]) @ p, f_test.reshape(-1, f_test.shape[-1]) @ p
            for m in sizes:
                t0 = time.perf_counter()
                idx = pc.greedy_coreset(tr, m, seed=args.seed, selection_dim=64)
                coreset_s = time.perf_counter() - t0
                bank = pc.augment_bank(tr[idx])
                with pc.blas_threads(1):  # the detector's default (search_threads=1)
                    t0 = time.perf_counter()
                    d2 = pc.nearest_sq_distances(te, bank)
                    search_s = time.perf_counter() - t0
                patches = np.sqrt(d2).reshape(f_test.shape[:3])
                maps = det.heatmap_from_patch_scores(patches, (size, size))
                row = {
                    "sku": sku,
                    "bank_size": m,
                    "dim": tr.shape[1],
                    "n_train_patches": tr.shape[0],
                    "image_auroc": auroc(labels.astype(bool), patches.max(axis=(1, 2))),
                    "pixel_auroc": auroc(masks_small.ravel(), maps.ravel()),
                    "search_ms_per_frame": 1e3 * search_s / len(test),
                    "coreset_s": coreset_s,
                    "patches_per_frame": n_patches,
                }
                rows.append(row)
                print(
                    f"  {sku:10s} dim {row['dim']:3d} bank {m:5d}: image AUROC {row['image_auroc']:.3f}  "
                    f"pixel AUROC {row['pixel_auroc']:.3f}  "
                    f"search {row['search_ms_per_frame']:6.2f} ms/frame  "
                    f"coreset {coreset_s:5.1f} s (from {tr.shape[0]} patches)",
                    flush=True,
                )
    return rows


def bench_faiss(args: argparse.Namespace) -> list[dict[str, Any]]:
    """numpy/BLAS exact search vs faiss-cpu IndexFlatL2 and IndexHNSWFlat on real patch features."""
    try:
        import faiss
    except ImportError:
        print("  faiss-cpu is not installed (pip install faiss-cpu); section skipped")
        return []
    rows: list[dict[str, Any]] = []
    faiss.omp_set_num_threads(1)  # like for like: the detector searches with one BLAS thread
    size = args.image_size
    train, _ = render_batch("fabric-c", n=40 if args.quick else 100, size=256, seed=args.seed)
    test, _ = render_batch("fabric-c", n=16 if args.quick else 32, size=256, seed=args.seed, split="test")
    det = pc.PatchCore(image_size=size, provider=_provider(args), seed=args.seed)
    det._validate_params()
    tr = _features(det, train).reshape(-1, 152)
    te = _features(det, test).reshape(-1, 152)
    nf = len(test)
    for m in (1024, 4096, 16384):
        bank = np.ascontiguousarray(tr[pc.greedy_coreset(tr, m, seed=0, selection_dim=64)])
        aug = pc.augment_bank(bank)
        with pc.blas_threads(1):
            t0 = time.perf_counter()
            exact = pc.nearest_sq_distances(te, aug)
            t_np = time.perf_counter() - t0
        flat = faiss.IndexFlatL2(bank.shape[1])
        flat.add(bank)
        t0 = time.perf_counter()
        d_flat, _ = flat.search(te, 1)
        t_flat = time.perf_counter() - t0
        hnsw = faiss.IndexHNSWFlat(bank.shape[1], 32)
        t0 = time.perf_counter()
        hnsw.add(bank)
        t_build = time.perf_counter() - t0
        hnsw.hnsw.efSearch = 64
        t0 = time.perf_counter()
        d_hnsw, _ = hnsw.search(te, 1)
        t_hnsw = time.perf_counter() - t0
        rel_flat = float(np.max(np.abs(np.sqrt(d_flat[:, 0]) - np.sqrt(exact)) / (np.sqrt(exact) + 1e-6)))
        miss = float(np.mean(d_hnsw[:, 0] > exact * (1 + 1e-4) + 1e-4))
        row = {
            "bank_size": m,
            "numpy_ms_per_frame": 1e3 * t_np / nf,
            "faiss_flat_ms_per_frame": 1e3 * t_flat / nf,
            "faiss_hnsw_ms_per_frame": 1e3 * t_hnsw / nf,
            "hnsw_build_s": t_build,
            "flat_max_rel_diff": rel_flat,
            "hnsw_share_not_exact_nn": miss,
            "faiss_threads": faiss.omp_get_max_threads(),
        }
        rows.append(row)
        print(
            f"  bank {m:5d}: numpy {row['numpy_ms_per_frame']:6.2f}  "
            f"faiss flat {row['faiss_flat_ms_per_frame']:6.2f}"
            f"  faiss HNSW {row['faiss_hnsw_ms_per_frame']:6.2f} ms/frame (build {t_build:.1f} s, "
            f"{100 * miss:.1f} % patches not exact NN)",
            flush=True,
        )
    return rows


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run, print; ``prog`` names the command in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="onnxruntime execution provider")
    parser.add_argument("--sections", default="throughput,accuracy,bank,faiss",
                        help="comma-separated, in this order by default: throughput, accuracy, bank, faiss")
    parser.add_argument("--skus", default=",".join(SKUS), help="comma-separated simulated SKUs for accuracy")
    parser.add_argument("--bank-skus", default="fabric-c,grain-d", help="comma-separated SKUs for the bank section")
    parser.add_argument("--image-size", type=int, default=224, help="model input side for accuracy, bank and faiss")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds per figure, the best one counts")
    parser.add_argument("--seed", type=int, default=0, help="seeds the simulated frames and the detectors")
    parser.add_argument("--quick", action="store_true", help="fewer frames and configurations")
    parser.add_argument("--json", type=Path, help="also write all figures here")
    args = parser.parse_args(argv)
    args.skus = [s for s in args.skus.split(",") if s]
    args.bank_skus = [s for s in args.bank_skus.split(",") if s]
    print(
        f"linewatch image bench: provider {args.provider}, {os.cpu_count()} CPUs visible, "
        f"image size {args.image_size} for accuracy/bank",
        flush=True,
    )
    results: dict[str, Any] = {}
    sections = {
        "throughput": bench_throughput,
        "accuracy": bench_accuracy,
        "bank": bench_bank,
        "faiss": bench_faiss,
    }
    for name in args.sections.split(","):
        if name not in sections:
            parser.error(f"unknown section {name!r}; choose from {', '.join(sections)}")
        print(f"\n== {name}", flush=True)
        t0 = time.perf_counter()
        results[name] = sections[name](args)
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
