"""Detection on waveform recordings: the simulator's bearing faults per severity, with and without shaft speed.

Prints figures; asserts nothing. Run::

    linewatch bench recordings                       # severities 0.1 0.2 0.3 0.5 (about a minute)
    linewatch bench recordings --severities 0.2 --format wav
    linewatch bench recordings --data DIR --sample-rate 25600 --speed-hz 24.75   # your own recordings

For each severity the simulator writes a folder in the images' layout
(:func:`~linewatch.simulation.signals.write_recording_dataset`: ``--train`` good recordings,
``--test-good`` good ones the model never sees, ``--per-condition`` of each bearing fault, each
``--seconds`` of vibration at 10 kHz), and :func:`~linewatch.backtest.recordings.run_recordings_backtest`
fits, calibrates and scores it twice: without a shaft speed (spectral features only) and with the
nominal speed (adds the envelope energies at BPFO/BPFI/BSF/FTF). Reported per run: window AUROC
and recall per condition, realized false-alarm rate on the good test windows next to the
target, recording-level AUROC, and the seconds it took (reading, framing, fitting, scoring).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from linewatch.backtest.recordings import DEFAULT_TARGET_FAR, run_recordings_backtest
from linewatch.simulation.signals import NOMINAL_SHAFT_HZ, RECORDING_FORMATS, write_recording_dataset

PROG = "python -m linewatch.benchmarks.recordings"
RATE = 10_000.0
CONDITIONS = ("outer_race", "inner_race")


def _row(label: str, r: dict[str, Any], seconds: float) -> dict[str, Any]:
    per = r["per_condition"]
    out: dict[str, Any] = {"run": label, "far": r["far"], "recording_far": r["recording_far"],
                           "auroc": r["auroc"], "recording_auroc": r["recording_auroc"], "n_features": r["n_features"],
                           "n_train": r["n_train"], "n_test": r["n_test"], "seconds": round(seconds, 2)}
    for c in r["conditions"]:
        out[f"{c}.auroc"], out[f"{c}.recall"] = per[c]["auroc"], per[c]["recall"]
    return out


def _print(rows: list[dict[str, Any]], target_far: float) -> None:
    conds = sorted({k.split(".")[0] for row in rows for k in row if "." in k})
    head = ["run", "far", "auroc", "rec.auroc", *[f"{c[:10]} auroc/recall" for c in conds], "feat", "s"]
    print(f"target_far {target_far:g} per good window; AUROC and recall per window")
    print("  ".join(f"{h:>24}" if i == 0 else f"{h:>12}" for i, h in enumerate(head)))
    for row in rows:
        cells = [f"{row['run']:>24}", f"{row['far']:>12.4f}", f"{_f(row['auroc']):>12}",
                 f"{_f(row['recording_auroc']):>12}"]
        cells += [f"{_f(row.get(f'{c}.auroc'))}/{_f(row.get(f'{c}.recall')):>5}".rjust(12) for c in conds]
        cells += [f"{row['n_features']:>12}", f"{row['seconds']:>12}"]
        print("  ".join(cells))


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--severities", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    p.add_argument("--train", type=int, default=60, help="good training recordings")
    p.add_argument("--test-good", type=int, default=30, help="good test recordings")
    p.add_argument("--per-condition", type=int, default=10, help="test recordings per fault")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per recording")
    p.add_argument("--window-s", type=float, default=1.0)
    p.add_argument("--format", choices=RECORDING_FORMATS, default="npy")
    p.add_argument("--detector", default="auto")
    p.add_argument("--target-far", type=float, default=DEFAULT_TARGET_FAR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, help="benchmark your own recordings instead of the simulator's")
    p.add_argument("--sample-rate", type=float, help="with --data: samples per second")
    p.add_argument("--speed-hz", type=float, help="with --data: shaft speed, for the envelope run")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    rows: list[dict[str, Any]] = []

    def run(label: str, data: Path, rate: float, speed: float | None) -> None:
        t0 = time.perf_counter()
        r = run_recordings_backtest(data, sample_rate=rate, window_s=a.window_s, detector=a.detector,
                                    target_far=a.target_far, speed_hz=speed, seed=a.seed)
        rows.append(_row(label, r, time.perf_counter() - t0))

    if a.data is not None:
        if a.sample_rate is None:
            p.error("--data needs --sample-rate")
        run("no speed", a.data, a.sample_rate, None)
        if a.speed_hz is not None:
            run(f"speed {a.speed_hz:g} Hz", a.data, a.sample_rate, a.speed_hz)
    else:
        with tempfile.TemporaryDirectory(prefix="linewatch-recordings-") as tmp:
            for sev in a.severities:
                root = Path(tmp) / f"sev{sev:g}"
                write_recording_dataset(root, n_train=a.train, n_test_good=a.test_good, conditions=CONDITIONS,
                                        n_test_per_condition=a.per_condition, seconds=a.seconds, rate=RATE,
                                        severity=sev, fmt=a.format, sensors=("vibration",), seed=a.seed)
                run(f"severity {sev:g}, no speed", root, RATE, None)
                run(f"severity {sev:g}, speed", root, RATE, NOMINAL_SHAFT_HZ)
    _print(rows, a.target_far)
    if a.json is not None:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
