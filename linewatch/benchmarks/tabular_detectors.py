"""Throughput of every tabular detector on one core, and ONNX Isolation Forest vs scikit-learn.

Prints figures; asserts nothing. Run::

    linewatch bench tabular-detectors            # full
    linewatch bench tabular-detectors --quick    # smaller, for a smoke check
    python -m linewatch.benchmarks.tabular_detectors --quick   # the same, without the CLI

What is measured
----------------
- ``fit_s``: fit time on ``n_train`` normal rows of the simulated 6-characteristic line.
- ``score rec/s @ batch B``: rows scored per second when the agent hands the detector
  batches of ``B`` rows (best of several repeats, so a noisy neighbour on a shared machine
  inflates nothing). Batch 1 is the per-message latency floor; 10,000 is replay/backtest.
- Isolation Forest: the fused single-TreeEnsemble ONNX graph (our default exporter), the
  stock skl2onnx graph, and scikit-learn's ``score_samples``, same forest, same rows; plus
  the export time of each graph.

BLAS and onnxruntime are held to one thread and the process is pinned to one CPU, so the
figures are per core; a worker scales by running more processes. (The thread limits are set
when this module is imported, before numpy starts its BLAS, which is why the imports below
come after them.)
"""

from __future__ import annotations

import os
import sys

# Only while numpy has not loaded its BLAS: afterwards the variables change nothing in this
# process and would only leak into its children (pytest imports this module for doctests).
if "numpy" not in sys.modules:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_var] = "1"  # before numpy is imported, or BLAS has already started its threads

import argparse
import inspect
import time
from collections.abc import Callable, Sequence

import numpy as np

from linewatch.detectors import table as catalog  # (TABULAR_DETECTORS lives in table.py now)
from linewatch.detectors.isolation_forest import IsolationForestONNX
from linewatch.detectors.table import get_detector
from linewatch.simulation.spc import simulate_spc

PROG = "python -m linewatch.benchmarks.tabular_detectors"


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this OS)"


def _best_seconds(fn: Callable[[], object], *, repeats: int, min_time: float = 0.2) -> float:
    """Best per-call time over ``repeats`` timing rounds, each looping until ``min_time`` has passed."""
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / calls)
    return best


def _make(name: str):
    cls = get_detector(name)
    return cls(seed=0) if "seed" in inspect.signature(cls).parameters else cls()


def bench_detectors(X_train: np.ndarray, X_test: np.ndarray, batches: list[int], repeats: int) -> None:
    header = f"{'detector':20s} {'fit_s':>7s}" + "".join(f" {'rec/s @' + str(b):>14s}" for b in batches)
    print(header)
    print("-" * len(header))
    for name in catalog.TABULAR_DETECTORS:
        det = _make(name)
        t0 = time.perf_counter()
        det.fit(X_train)
        fit_s = time.perf_counter() - t0
        cells = []
        for b in batches:
            batch = X_test[:b]
            per_call = _best_seconds(lambda det=det, batch=batch: det.score(batch), repeats=repeats)
            cells.append(f" {b / per_call:14,.0f}")
        print(f"{name:20s} {fit_s:7.2f}" + "".join(cells))


def bench_isolation_forest(X_train: np.ndarray, X_test: np.ndarray, repeats: int, n_estimators: int) -> None:
    print(f"\nIsolation Forest, {n_estimators} trees, {X_train.shape[1]} features")
    fused = IsolationForestONNX(n_estimators=n_estimators, seed=0)
    t0 = time.perf_counter()
    fused.fit(X_train)
    fused_fit = time.perf_counter() - t0
    stock = IsolationForestONNX(n_estimators=n_estimators, exporter="skl2onnx", seed=0)
    t0 = time.perf_counter()
    stock.fit(X_train)
    stock_fit = time.perf_counter() - t0
    sk = fused.estimator_
    same = np.abs(fused.score_samples(X_test) - sk.score_samples(X_test.astype(np.float32))).max()
    same_stock = np.abs(stock.score_samples(X_test) - stock.estimator_.score_samples(X_test)).max()
    print(f"fit + export: fused {fused_fit:.2f} s, skl2onnx {stock_fit:.2f} s")
    print(f"max |onnx - sklearn| score_samples: fused {same:.1e}, skl2onnx {same_stock:.1e}")
    print(f"{'batch':>7s} {'sklearn rec/s':>15s} {'fused rec/s':>13s} {'skl2onnx rec/s':>15s} "
          f"{'fused/sklearn':>14s} {'skl2onnx/sklearn':>17s}")  # fmt: skip
    for b in (1, 100, 10_000):
        batch = X_test[:b]
        t_sk = _best_seconds(lambda batch=batch: sk.score_samples(batch), repeats=repeats)
        t_fused = _best_seconds(lambda batch=batch: fused.score(batch), repeats=repeats)
        t_stock = _best_seconds(lambda batch=batch: stock.score(batch), repeats=repeats)
        print(f"{b:7d} {b / t_sk:15,.0f} {b / t_fused:13,.0f} {b / t_stock:15,.0f} "
              f"{t_sk / t_fused:13.1f}x {t_sk / t_stock:16.2f}x")  # fmt: skip


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run, print; ``prog`` names the command in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer repeats")
    args = parser.parse_args(argv)
    where = _pin_one_core()
    n_train = 2_000 if args.quick else 10_000
    repeats = 2 if args.quick else 5
    batches = [1, 100, 10_000]
    X_train = simulate_spc(n_parts=n_train, seed=0, fault_fraction=0.0).X
    X_test = simulate_spc(n_parts=10_000, seed=1, fault_fraction=0.15).X
    print(f"tabular detectors, {X_train.shape[1]} features, fit on {n_train} rows; one thread, {where}\n")
    bench_detectors(X_train, X_test, batches, repeats)
    bench_isolation_forest(X_train, X_test, repeats, n_estimators=30 if args.quick else 100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
