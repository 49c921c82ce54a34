"""Detection quality of the signal path: the machine simulator per fault, and NAB's machine temperature.

Prints figures; asserts nothing. Run::

    linewatch bench signal-quality                 # both sections (a few minutes)
    linewatch bench signal-quality --quick         # shorter simulation
    linewatch bench signal-quality --sections nab --nab-dir PATH
    python -m linewatch.benchmarks.signal_quality --quick   # the same, without the CLI

Simulator
---------
One machine per fault kind plus a healthy one, ``--hours`` of 1 s snapshots (vibration 10 kHz,
current 2 kHz, temperature 1 Hz). Each snapshot becomes one row of features: vibration (octave
bands, peaks, envelope at the bearing defect frequencies, log powers), current (RMS, crest,
kurtosis, line band and its neighbours) and temperature. Detectors fit on the first half of each
machine's history (always healthy: faults start at 60 %), calibrate at ``--target-far``, then
replay the second half through :func:`~linewatch.backtest.signals.run_signals_backtest` with
``window=1`` (one snapshot per row). Reported per fault: detected, delay from onset (hours),
fault severity when first flagged (0 = invisible, 1 = full), the feature blamed, and false
alarms per hour over all healthy test rows of all machines.

NAB machine temperature
-----------------------
``realKnownCause/machine_temperature_system_failure.csv`` (5-minute samples of an industrial
machine's temperature, four labelled anomaly windows, the second of them a catastrophic
failure). Train on the rows before the first labelled window (about a week), windows of 12
rows (1 h) every row; per detector: AUROC, far, false alarms per hour, and per labelled window
whether and when it alarmed, in hours after the window opens and relative to NAB's labelled
anomaly instant (negative = before it).
"""

from __future__ import annotations

import argparse
import csv
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
        os.environ.setdefault(_var, "1")

import numpy as np

from linewatch.backtest.signals import run_signals_backtest
from linewatch.eval_data import NAB_DIR
from linewatch.signals.features import FeatureConfig, extract_features, feature_names
from linewatch.signals.quality import QualityGate, SensorLimits
from linewatch.simulation.signals import FAULT_KINDS, Fault, simulate_signals

PROG = "python -m linewatch.benchmarks.signal_quality"
NAB_FILE = "realKnownCause/machine_temperature_system_failure.csv"
#: Where --nab-dir points by default: ``shared/eval/nab`` beside the checkout (or under LINEWATCH_EVAL_DIR).
DEFAULT_NAB_DIR = NAB_DIR
SIM_DETECTORS = ("dynamic_pca", "autoencoder", "online_residual", "robust_mahalanobis")
NAB_DETECTORS = ("dynamic_pca", "autoencoder", "online_residual", "half_space_trees")
#: Faults start here (share of the run); detectors train on the first TRAIN_SHARE, always healthy.
ONSET_SHARE, GROWTH_SHARE, TRAIN_SHARE = 0.6, 0.3, 0.5


def _snapshot_features(sim: Any) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One row per snapshot of machine 0: vibration, current and temperature features; and quality flags."""
    vcfg = FeatureConfig(
        sample_rate=sim.rates["vibration"], bearing=sim.bearing, envelope_band=(2000.0, 4500.0),
        n_peaks=2, log_power=True,
    )
    ccfg = FeatureConfig(
        sample_rate=sim.rates["current"], bands=((0.0, 45.0), (45.0, 55.0), (55.0, 200.0)), n_peaks=0,
        log_power=True,
    )
    Fv = extract_features(sim.vibration[0], vcfg, shaft_hz=sim.shaft_hz[0])
    # Current: level and spectrum only. Switching spikes are part of normal motor life; impulse
    # statistics (crest factor, kurtosis) of the current would make every spike an "anomaly".
    cnames = feature_names(ccfg)
    keep = [i for i, n in enumerate(cnames) if n == "rms" or n.startswith("band_")]
    Fc = extract_features(sim.current[0], ccfg)[:, keep]
    Ft = sim.temperature[0].astype(np.float64).mean(axis=1, keepdims=True)
    names = feature_names(vcfg, prefix="vib.") + [f"cur.{cnames[i]}" for i in keep] + ["temp"]
    limits = {"vibration": SensorLimits(low=-100, high=100), "current": SensorLimits(low=-200, high=200)}
    gate = QualityGate(limits=limits)
    bad = ~gate.check(sim.vibration[0], sensors="vibration").ok
    bad |= ~gate.check(sim.current[0], sensors="current").ok
    return np.hstack([Fv, Fc, Ft]), names, bad


def bench_simulator(args: argparse.Namespace) -> dict[str, Any]:
    duration = args.hours * 3600.0
    interval = args.interval
    machines: list[tuple[str, list[Fault]]] = [
        (k, [Fault(machine=0, kind=k, onset_s=ONSET_SHARE * duration, growth_s=GROWTH_SHARE * duration)])
        for k in FAULT_KINDS
    ]
    machines.append(("healthy", []))
    data = []
    t0 = time.perf_counter()
    for i, (kind, faults) in enumerate(machines):
        sim = simulate_signals(
            n_machines=1, duration_s=duration, snapshot_interval_s=interval, faults=faults, seed=100 + i
        )
        F, names, bad = _snapshot_features(sim)
        data.append((kind, sim, F, bad))
    n_rows = data[0][2].shape[0]
    took = time.perf_counter() - t0
    print(
        f"simulated and featurised {len(machines)} machines x {args.hours:g} h, one snapshot every "
        f"{interval:g} s ({n_rows} rows of {data[0][2].shape[1]} features) in {took:.1f} s"
    )
    print(f"quality gate flagged {sum(int(b.sum()) for *_, b in data)} of {n_rows * len(data)} snapshots")
    out: dict[str, Any] = {}
    for det in SIM_DETECTORS:
        rows, fa, normal_hours = [], 0, 0.0
        for kind, sim, F, _ in data:
            n_tr = int(TRAIN_SHARE * F.shape[0])
            ts = sim.starts.astype("datetime64[s]")
            r = run_signals_backtest(
                F[:n_tr], F[n_tr:], sim.labels[0, n_tr:], names, window=1, stride=1,
                detector=det, target_far=args.target_far, timestamps=ts[n_tr:],
            )
            normal = (~sim.labels[0, n_tr:]).sum() * interval / 3600.0
            fa += r["false_alarm_episodes"]
            normal_hours += normal
            if r["events"]:
                ev = r["events"][0]
                hit = n_tr + ev["start_row"] + round(ev["delay"] / interval) if ev["detected"] else None
                rows.append(
                    {
                        "fault": kind,
                        "detected": ev["detected"],
                        "delay_h": ev["delay"] / 3600.0 if ev["detected"] else None,
                        "severity_at_alarm": float(sim.severity[0, hit]) if hit is not None else None,
                        "blamed": (ev["blamed_feature"] or "-").removesuffix(".mean"),
                        "auroc": r["auroc"],
                    }
                )
        out[det] = {"faults": rows, "false_alarms_per_hour": fa / normal_hours if normal_hours else None}
        fph = out[det]["false_alarms_per_hour"]
        print(f"\n{det}: false alarms per hour on healthy rows {fph:.3f} ({fa} in {normal_hours:.1f} h)")
        print(f"  {'fault':<12s} {'detected':>8s} {'delay h':>8s} {'severity':>9s} {'auroc':>6s}  blamed")
        for row in rows:
            delay = f"{row['delay_h']:.2f}" if row["delay_h"] is not None else "-"
            sev = f"{row['severity_at_alarm']:.3f}" if row["severity_at_alarm"] is not None else "-"
            auc = f"{row['auroc']:.3f}" if row["auroc"] is not None else "-"
            found = str(row["detected"])
            print(f"  {row['fault']:<12s} {found:>8s} {delay:>8s} {sev:>9s} {auc:>6s}  {row['blamed']}")
    return out


def load_nab(nab_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.datetime64]]:
    """Timestamps, values, window labels and the labelled anomaly instants of the machine series."""
    with (nab_dir / "data" / NAB_FILE).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    ts = np.array([r["timestamp"].replace(" ", "T") for r in rows], dtype="datetime64[s]")
    values = np.array([float(r["value"]) for r in rows])
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())[NAB_FILE]
    points = json.loads((nab_dir / "labels" / "combined_labels.json").read_text())[NAB_FILE]
    labels = np.zeros(ts.size, dtype=bool)
    for lo, hi in windows:
        lo64, hi64 = (np.datetime64(v[:19].replace(" ", "T"), "s") for v in (lo, hi))
        labels |= (ts >= lo64) & (ts <= hi64)
    return ts, values, labels, [np.datetime64(p.replace(" ", "T"), "s") for p in points]


def bench_nab(args: argparse.Namespace) -> dict[str, Any]:
    nab_dir = args.nab_dir
    if not (nab_dir / "data" / NAB_FILE).exists():
        print(f"\nNAB data not found under {nab_dir}; pass --nab-dir (skipping)")
        return {}
    ts, values, labels, points = load_nab(nab_dir)
    first = int(np.argmax(labels))
    print(
        f"\nNAB {NAB_FILE}: {values.size} rows, train on the first {first} (before the first labelled "
        f"window), window {args.nab_window} rows, stride 1, target far {args.target_far:g}"
    )
    out: dict[str, Any] = {}
    for det in NAB_DETECTORS:
        t0 = time.perf_counter()
        r = run_signals_backtest(
            values[:first, None], values[first:, None], labels[first:], ["temperature"],
            window=args.nab_window, stride=1, detector=det, target_far=args.target_far, timestamps=ts[first:],
        )
        events = []
        for ev, point in zip(r["events"], points, strict=True):
            vs_point = None
            if ev["detected"]:
                alarm = ts[first + ev["start_row"]] + np.timedelta64(int(ev["delay"]), "s")
                vs_point = float((alarm - point) / np.timedelta64(1, "s")) / 3600.0
            events.append(
                {
                    "detected": ev["detected"],
                    "hours_after_window_opens": ev["delay"] / 3600.0 if ev["detected"] else None,
                    "hours_vs_labelled_instant": vs_point,
                }
            )
        keys = ("auroc", "far", "precision", "recall", "false_alarms_per_hour", "n_detected")
        out[det] = {k: r[k] for k in keys}
        out[det]["events"] = events
        fph = r["false_alarms_per_hour"]
        print(
            f"\n{det}: auroc {r['auroc']:.3f}, far {r['far']:.4f}, {r['false_alarm_episodes']} false-alarm "
            f"episodes ({fph:.4f}/h), {r['n_detected']}/{r['n_events']} windows detected "
            f"[{time.perf_counter() - t0:.1f} s]"
        )
        for i, ev in enumerate(events, 1):
            if ev["detected"]:
                print(f"  window {i}: alarm {ev['hours_after_window_opens']:6.1f} h after it opens, "
                      f"{ev['hours_vs_labelled_instant']:+6.1f} h vs the labelled instant")
            else:
                print(f"  window {i}: missed")
    return out


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run, print; ``prog`` names the command in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=("sim", "nab"), default=["sim", "nab"],
                        help="which parts to run: the machine simulator, NAB (default: both)")
    parser.add_argument("--quick", action="store_true", help="a shorter simulation")
    parser.add_argument("--hours", type=float, default=None, help="simulated hours per machine")
    parser.add_argument("--interval", type=float, default=None, help="seconds between snapshots")
    parser.add_argument("--target-far", type=float, default=1e-3, help="false alarms per normal row")
    parser.add_argument("--nab-dir", type=Path, default=DEFAULT_NAB_DIR,
                        help="NAB checkout (data/ and labels/); the nab section is skipped without it")
    parser.add_argument("--nab-window", type=int, default=12, help="rows per window (12 = 1 h)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    args.hours = args.hours or (12.0 if args.quick else 48.0)
    args.interval = args.interval or (15.0 if args.quick else 60.0)
    res: dict[str, Any] = {}
    if "sim" in args.sections:
        res["simulator"] = bench_simulator(args)
    if "nab" in args.sections:
        res["nab"] = bench_nab(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
