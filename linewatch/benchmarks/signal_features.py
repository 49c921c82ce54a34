"""Throughput of the signal path on one core: features, quality gate, detectors, slot framing.

Prints figures; asserts nothing (timings are not tests). Run::

    linewatch bench signal-features            # full
    linewatch bench signal-features --quick    # smaller, for a smoke check
    python -m linewatch.benchmarks.signal_features --quick   # the same, without the CLI

What is measured (best of ``--repeats`` runs, so a noisy neighbour on a shared machine inflates nothing)
-----------------------------------------------------------------------------------------------------
- vibration windows of 1 s at 10 kHz from the simulator (healthy and faulty machines mixed);
- ``features``: :func:`~linewatch.signals.features.extract_features` with octave bands, 3 peaks
  and the Hilbert envelope at the four bearing defect frequencies, in batches of B windows;
- ``quality``: the data-quality gate on the same windows;
- ``<detector>``: scoring the feature vectors (fitted beforehand on healthy windows);
- ``pipeline``: features + quality + the detector, reported as **samples per second per core**
  (raw vibration samples in, scores out) and windows per second;
- ``framing``: windows/s through features, quality gate and slot alignment (the live framing path).

BLAS, FFT and onnxruntime are pinned to one thread so the figure is per core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Only while numpy has not loaded its BLAS: afterwards the variables change nothing in this
# process and would only leak into its children (pytest imports this module for doctests).
if "numpy" not in sys.modules:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

from threadpoolctl import threadpool_limits

from linewatch.detectors.autoencoder import WindowAutoencoder
from linewatch.detectors.dynamic_pca import DynamicPCA
from linewatch.detectors.online_hst import OnlineHalfSpaceTrees
from linewatch.detectors.online_signal import OnlineResidual
from linewatch.signals.features import FeatureConfig, extract_features, feature_names
from linewatch.signals.framing import training_frames
from linewatch.signals.quality import QualityGate, SensorLimits
from linewatch.simulation.signals import Fault, simulate_signals

PROG = "python -m linewatch.benchmarks.signal_features"
FS = 10_000.0


def _best(fn: Any, repeats: int) -> float:
    fn()  # warm-up: allocations, FFT plans, onnxruntime session
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    n_windows = 64 if args.quick else 256
    duration = n_windows * 60.0
    faults = [Fault(machine=1, kind="outer_race", onset_s=duration / 3, growth_s=duration / 3)]
    sim = simulate_signals(n_machines=2, duration_s=duration, snapshot_interval_s=60.0, faults=faults, seed=0)
    vib = sim.vibration.reshape(-1, sim.vibration.shape[-1])
    shaft = sim.shaft_hz.reshape(-1)
    cfg = FeatureConfig(sample_rate=FS, bearing=sim.bearing, envelope_band=(2000.0, 4500.0), log_power=True)
    names = feature_names(cfg)
    n, m = vib.shape
    print(f"{n} vibration windows of {m} samples ({m / FS:g} s at {FS:g} Hz), {len(names)} features each")
    healthy = ~sim.labels.reshape(-1)
    F_all = extract_features(vib, cfg, shaft_hz=shaft)
    train = F_all[healthy]
    detectors = {
        "autoencoder": WindowAutoencoder(hidden=(16,), max_iter=100, seed=0).fit(train),
        "dynamic_pca": DynamicPCA(lags=1).fit(train),
        "online_residual": OnlineResidual(warmup=10).fit(train),
        "half_space_trees": OnlineHalfSpaceTrees(window_size=50, seed=0).fit(train),
    }
    gate = QualityGate(limits={"vibration": SensorLimits(low=-50, high=50)})
    results: dict[str, Any] = {"windows": n, "samples_per_window": m, "rows": []}
    with threadpool_limits(1):
        for batch in args.batches:
            x, sp = vib[:batch], shaft[:batch]
            f = extract_features(x, cfg, shaft_hz=sp)
            t_feat = _best(lambda x=x, sp=sp: extract_features(x, cfg, shaft_hz=sp), args.repeats)
            t_q = _best(lambda x=x: gate.check(x, sensors="vibration"), args.repeats)
            row = {"batch": batch, "features_s": t_feat / batch, "quality_s": t_q / batch}
            for name, det in detectors.items():
                t_det = _best(lambda det=det, f=f: det.score(f), args.repeats)
                total = t_feat + t_q + t_det
                row[f"{name}_s"] = t_det / batch
                row[f"{name}_samples_per_s"] = batch * x.shape[1] / total
            row["features_only_samples_per_s"] = batch * x.shape[1] / t_feat
            results["rows"].append(row)
            print(f"\nbatch {batch:4d} windows (per window: features {t_feat / batch * 1e3:.2f} ms, "
                  f"quality {t_q / batch * 1e3:.3f} ms)")
            rate = row["features_only_samples_per_s"]
            print(f"  {'features only':<34s} {rate / 1e6:6.2f} M samples/s per core")
            for name in detectors:
                rate = row[f"{name}_samples_per_s"]
                label = f"features+quality+{name}"
                print(
                    f"  {label:<34s} {rate / 1e6:6.2f} M samples/s per core ({m / rate * 1e3:.2f} ms/window; "
                    f"detector {row[f'{name}_s'] * 1e6:.1f} µs/window)"
                )
        messages = sim.signal_messages()

        def frame() -> None:
            training_frames(messages, drop_constant=False, include_flagged=True)

        t_frame = _best(frame, max(1, args.repeats // 2))
        results["framing_windows_per_s"] = len(messages) / t_frame
        print(f"\nframing: {len(messages) / t_frame:,.0f} windows/s (vibration 10 kHz + current 2 kHz + "
              "temperature 1 Hz: features, quality gate and slot alignment, as the live agent does)")
    return results


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run, print; ``prog`` names the command in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and repeats")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timing rounds per figure, the best one counts (default 5; 2 with --quick)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="windows per call")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.batches = args.batches or ([1, 32] if args.quick else [1, 16, 64])
    res = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
