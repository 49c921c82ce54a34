"""Does a threshold keep its promise? Target vs realised false-alarm rate, per detector family.

Run as ``linewatch bench calibration`` (``--quick`` for a shorter run, ``--json OUT``).

The promise every detector makes is "calibrated score 3 = one false alarm per thousand normal
events". It is only tested where normal data looks like a plant's, so every scenario here is
autocorrelated and drifts between regimes:

- ``spc``: the SPC simulator with AR(1) parts (lag-1 correlation 0.6) and three lots per asset
  one sigma apart (:func:`linewatch.simulation.spc.simulate_spc`), one asset; stateless
  detectors, control charts with memory and the online half-space trees;
- ``signals``: one healthy simulated machine with load steps, thermal lag and a slowly
  wandering vibration level, framed exactly as the live agent frames it; the windowed
  detectors;
- ``nab``: NAB's machine temperature, its normal stretches only (rows outside the labelled
  windows): fit on the first part, count alarms on the later normal rows; and, on the whole
  series, which of the four labelled windows the detector catches at that threshold;
- ``frames``: simulated good parts of a textured SKU through PatchCore (image family).

Each model is fitted exactly as ``linewatch train`` fits it (:meth:`ModelBundle.fit`: blocked
cross-fitting in time order), then scores later normal data the way the live agent does
(:func:`linewatch.detectors.cross_fit.score_as_live`). Next to it, the first release's
calibration (a seeded random 70/30 split) on the same data, so the effect is measured, not
assumed. ``tests/detectors/test_far_promise.py`` runs the same scenarios, smaller, and fails if
a family's realised rate leaves [0.5x, 2x] of its target.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.cross_fit import score_as_live, take_rows
from linewatch.eval_data import NAB_DIR

PROG = "python -m linewatch.benchmarks.calibration"
#: Where --nab-dir points by default: ``shared/eval/nab`` beside the checkout (or under LINEWATCH_EVAL_DIR).
DEFAULT_NAB_DIR = NAB_DIR

FAMILIES: dict[str, tuple[str, ...]] = {
    "stateless": ("hotelling", "robust_mahalanobis", "pca_monitor", "isolation_forest", "ecod"),
    "chart": ("shewhart_imr", "ewma", "cusum", "mewma"),
    "online": ("half_space_trees",),
    "windowed": ("dynamic_pca", "autoencoder", "online_residual"),
    "image": ("patchcore",),
}
#: The detectors each scenario runs (NAB is one temperature: univariate charts and the forest).
SCENARIO_DETECTORS: dict[str, tuple[str, ...]] = {
    "spc": FAMILIES["stateless"] + FAMILIES["chart"] + FAMILIES["online"],
    "signals": FAMILIES["windowed"],
    "nab": ("shewhart_imr", "ewma", "cusum", "isolation_forest", "ecod"),
    "frames": FAMILIES["image"],
}


def family_of(detector: str) -> str:
    return next(f for f, names in FAMILIES.items() if detector in names)


@dataclass
class Scenario:
    """Known-good training data and later known-good data to count false alarms on, both in time order."""

    name: str
    train: Any
    test: Any
    feature_names: tuple[str, ...]
    target_far: float
    #: NAB only: the whole series and its labelled windows, to count windows caught.
    series: np.ndarray | None = None
    windows: list[np.ndarray] | None = None
    detector_params: dict[str, dict[str, Any]] | None = None


def spc_scenario(*, n_train: int, n_test: int, target_far: float, seed: int = 0) -> Scenario:
    """One asset's parts with autocorrelation and lots: the test is the continuation of the training run."""
    from linewatch.simulation.spc import simulate_spc

    sim = simulate_spc(n_parts=n_train + n_test, assets=("press-1",), seed=seed, fault_fraction=0.0,
                       autocorrelation=0.6, regime_shift_sigma=1.0)
    return Scenario("spc", sim.X[:n_train], sim.X[n_train:], sim.feature_names, target_far)


def signals_scenario(*, hours_train: float, hours_test: float, target_far: float, seed: int = 0) -> Scenario:
    """One healthy machine's frames, as the live agent builds them; the test follows the training period."""
    from linewatch.signals.framing import training_frames
    from linewatch.simulation.signals import simulate_signals

    sim = simulate_signals(n_machines=1, duration_s=(hours_train + hours_test) * 3600.0, snapshot_interval_s=30.0,
                           vibration_rate=4000.0, current_rate=1000.0, faults=(), seed=seed,
                           condition_wander=0.15)
    frames = training_frames(sim.signal_messages())
    n_train = round(len(frames.X) * hours_train / (hours_train + hours_test))
    return Scenario("signals", frames.X[:n_train], frames.X[n_train:], tuple(frames.feature_names), target_far)


def nab_scenario(nab_dir: Path, *, target_far: float, train_share: float = 0.4) -> Scenario | None:
    """NAB machine temperature: fit on the first ``train_share`` of its normal rows, test on the rest."""
    from linewatch.benchmarks.signal_quality import NAB_FILE, load_nab

    if not (nab_dir / "data" / NAB_FILE).exists():
        return None
    _, values, labels, _ = load_nab(nab_dir)
    normal = values[~labels, None]
    cut = round(train_share * len(normal))
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(np.int8), 0]))
    windows = [np.arange(lo, hi) for lo, hi in zip(edges[::2], edges[1::2], strict=True)]
    return Scenario("nab", normal[:cut], normal[cut:], ("temperature",), target_far, series=values[:, None],
                    windows=windows)


def frames_scenario(*, n_train: int, n_test: int, target_far: float, size: int = 64, seed: int = 0) -> Scenario:
    """Good parts of a textured simulated SKU: train on some, count false alarms on others."""
    from linewatch.simulation.frames import render_batch

    good, _ = render_batch("fabric-c", n=n_train + n_test, size=size, seed=seed)
    return Scenario("frames", good[:n_train], good[n_train:], (), target_far,
                    detector_params={"patchcore": {"image_size": size}})


def random_split_bundle(detector: str, sc: Scenario, *, seed: int = 0) -> ModelBundle:
    """The first release's calibration: a seeded random 30 % of the rows, the detector fitted on the rest."""
    n = len(sc.train)
    order = np.random.default_rng(seed).permutation(n)
    n_cal = round(0.3 * n)
    fit_rows, cal_rows = np.sort(order[n_cal:]), np.sort(order[:n_cal])
    return ModelBundle.fit(detector, take_rows(sc.train, fit_rows), feature_names=sc.feature_names,
                           calibration_data=take_rows(sc.train, cal_rows),
                           target_far=sc.target_far, seed=seed, detector_params=_params(sc, detector))


def _params(sc: Scenario, detector: str) -> dict[str, Any] | None:
    return (sc.detector_params or {}).get(detector)


def realised_far(bundle: ModelBundle, X: Any) -> float:
    """Share of known-good rows (a fresh live stream) the bundle alarms on."""
    return float(bundle.calibrator.is_alarm(score_as_live(bundle.detector, X)).mean())


def evaluate(sc: Scenario, detector: str, *, compare: bool = True, seed: int = 0) -> dict[str, Any]:
    """Fit as ``linewatch train`` does, count false alarms on the later normal data; optionally the old way too."""
    t0 = time.perf_counter()
    bundle = ModelBundle.fit(detector, sc.train, feature_names=sc.feature_names, target_far=sc.target_far, seed=seed,
                             detector_params=_params(sc, detector))
    report = bundle.calibration_report
    out: dict[str, Any] = {
        "scenario": sc.name,
        "detector": detector,
        "family": family_of(detector),
        "target_far": sc.target_far,
        "realised_far": realised_far(bundle, sc.test),
        "far_interval_90": report["far_interval_90"],
        "effective_sample_size": report["effective_sample_size"],
        "n_train": len(sc.train),
        "n_test": len(sc.test),
        "provisional": bundle.provisional,
    }
    if sc.series is not None and sc.windows is not None:
        alarms = bundle.calibrator.is_alarm(score_as_live(bundle.detector, sc.series))
        out["windows_detected"] = f"{sum(bool(alarms[w].any()) for w in sc.windows)}/{len(sc.windows)}"
    if compare:
        out["realised_far_random_split"] = realised_far(random_split_bundle(detector, sc, seed=seed), sc.test)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def scenarios(args: argparse.Namespace) -> list[Callable[[], Scenario | None]]:
    q = args.quick
    chosen = {
        "spc": lambda: spc_scenario(n_train=10_000 if q else 20_000, n_test=20_000 if q else 60_000,
                                    target_far=args.target_far),
        "signals": lambda: signals_scenario(hours_train=12 if q else 24, hours_test=24 if q else 72,
                                            target_far=args.target_far),
        "nab": lambda: nab_scenario(args.nab_dir, target_far=args.target_far),
        "frames": lambda: frames_scenario(n_train=200, n_test=200 if q else 400, target_far=args.image_target_far),
    }
    return [chosen[name] for name in args.scenarios]


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run, print; ``prog`` names the command in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", choices=tuple(SCENARIO_DETECTORS), default=list(SCENARIO_DETECTORS),
                        help="which data to run on (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller scenarios")
    parser.add_argument("--target-far", type=float, default=1e-2, help="target for tables and signals")
    parser.add_argument("--image-target-far", type=float, default=5e-2, help="target for image models")
    parser.add_argument("--no-compare", action="store_true", help="skip the first release's random split")
    parser.add_argument("--nab-dir", type=Path, default=DEFAULT_NAB_DIR, help="NAB data (data/ and labels/)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    header = (f"{'scenario':8s} {'family':9s} {'detector':19s} {'target':>7s} {'realised':>9s} {'ratio':>6s} "
              f"{'90% interval':>17s} {'ess':>7s} {'random split':>12s} {'windows':>7s}")
    print(header)
    print("-" * len(header))
    for make in scenarios(args):
        sc = make()
        if sc is None:
            print("NAB data not found; pass --nab-dir (skipping)")
            continue
        for det in SCENARIO_DETECTORS[sc.name]:
            r = evaluate(sc, det, compare=not args.no_compare)
            rows.append(r)
            lo, hi = r["far_interval_90"]
            old = r.get("realised_far_random_split")
            print(f"{sc.name:8s} {r['family']:9s} {det:19s} {r['target_far']:7.3%} {r['realised_far']:9.3%} "
                  f"{r['realised_far'] / r['target_far']:6.2f} {f'[{lo:.2%}, {hi:.2%}]':>17s} "
                  f"{r['effective_sample_size']:7.0f} {'' if old is None else f'{old:.3%}':>12s} "
                  f"{r.get('windows_detected', ''):>7s}{'  provisional' if r['provisional'] else ''}", flush=True)
    if rows:
        inside = sum(0.5 <= r["realised_far"] / r["target_far"] <= 2.0 for r in rows)
        print(f"\nrealised within [0.5x, 2x] of target: {inside}/{len(rows)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
