"""Detection quality per fault type at a fixed false-alarm rate, on the simulated machining line.

Prints figures; asserts nothing. Run::

    linewatch bench spc-quality            # full
    linewatch bench spc-quality --quick    # smaller, for a smoke check
    python -m linewatch.benchmarks.spc_quality --quick   # the same, without the CLI

Set-up
------
Data come from :func:`linewatch.simulation.spc.simulate_spc`: six correlated
characteristics, three fault kinds (``mean_shift``: +3σ on one characteristic;
``variance_growth``: 3x spread on one; ``correlation_break``: a 0.9-correlated pair stops
moving together while each member stays N(0, 1) on its own). Every detector is trained
on fault-free parts and calibrated through :class:`linewatch.detectors.bundle.ModelBundle`
to ``TARGET_FAR``; then one test stream per fault kind is replayed, each asset as its own
series (the agents keep chart state per asset) and online detectors prequentially, as live.

Columns
-------
- ``recall``/``far``: per-part recall on faulty parts and false-alarm rate on normal parts
  *with the calibrated threshold* (what production would see: calibration error included,
  and charts with memory pay for alarms that linger after an episode);
- ``rec@far``: recall with the threshold set on the test stream's own normal parts to
  exactly ``TARGET_FAR``: a calibration-free comparison of the detectors' ranking power;
- ``auroc``: threshold-free;
- ``episodes``: fault episodes with at least one alarm (per asset series), ``delay``: median
  parts of that asset from the episode's start to its first alarm.

Charts with memory (EWMA, CUSUM, MEWMA) restart from their in-control value after each
signal (``after_alarm="restart"``, the default; see ``docs/detectors-tabular.md``), so a
fault episode gives a few alarms, not one on every later part, and their per-part ``recall``
counts alarms per detection rather than parts flagged. ``episodes`` and ``delay`` are the
fairer SPC figures for them.

Univariate charts (``shewhart_imr``, ``ewma``, ``cusum``) chart each characteristic on its
own and alarm on the worst one. A correlation break leaves every marginal distribution
unchanged, so they must stay at their false-alarm rate on it; the multivariate detectors
must catch it. The summary line at the end says whether that held in this run.
"""

from __future__ import annotations

import os
import sys

# Only while numpy has not loaded its BLAS: afterwards the variables change nothing in this
# process and would only leak into its children (pytest imports this module for doctests).
if "numpy" not in sys.modules:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"  # the machine is shared: one thread is enough and keeps timings honest

import argparse
import time
from collections.abc import Sequence

import numpy as np

from linewatch.backtest.metrics import classification_metrics, detection_delays
from linewatch.backtest.tabular import replay
from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.table import TABULAR_DETECTORS
from linewatch.simulation.spc import FAULT_TYPES, simulate_spc

PROG = "python -m linewatch.benchmarks.spc_quality"
TARGET_FAR = 0.01
UNIVARIATE = ("shewhart_imr", "ewma", "cusum")
MULTIVARIATE = tuple(name for name in TABULAR_DETECTORS if name not in UNIVARIATE)
#: A detector "catches" a fault when its calibration-free recall is this many times the FAR.
CATCH_FACTOR = 10.0


def recall_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """Recall with the threshold at the (1 - far) quantile of the normal rows' scores."""
    threshold = np.quantile(scores[~labels], 1.0 - far)
    return float((scores[labels] > threshold).mean())


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run, print; ``prog`` names the command in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller streams")
    args = parser.parse_args(argv)
    n_train = 6_000 if args.quick else 20_000
    n_test = 4_000 if args.quick else 12_000
    train = simulate_spc(n_parts=n_train, seed=0, fault_fraction=0.0)
    streams = {
        kind: simulate_spc(n_parts=n_test, seed=10 + i, fault_fraction=0.3, fault_types=(kind,))
        for i, kind in enumerate(FAULT_TYPES)
    }
    print(
        f"simulated line: {train.X.shape[1]} characteristics, train {n_train} fault-free parts, "
        f"one test stream of {n_test} parts per fault kind (about 30 % faulty); target FAR {TARGET_FAR:g}\n"
    )
    results: dict[str, dict[str, dict]] = {kind: {} for kind in FAULT_TYPES}
    table: dict[str, dict[str, float]] = {}
    for name in UNIVARIATE + MULTIVARIATE:
        t0 = time.perf_counter()
        names = list(train.feature_names)
        bundle = ModelBundle.fit(name, train.X, feature_names=names, target_far=TARGET_FAR)
        table[name] = {}
        for kind, sim in streams.items():
            labels = sim.fault != "none"
            # One series per asset, as the agents keep state per asset; online models learn on a copy.
            raw, _ = replay(bundle.detector, sim.X, sim.asset_id)
            alarms = bundle.calibrator.is_alarm(raw)
            m = classification_metrics(labels, alarms, raw)
            delays: list[int | None] = []
            for asset in np.unique(sim.asset_id):  # episodes live in one asset's own series
                rows = sim.asset_id == asset
                delays += detection_delays(labels[rows], alarms[rows])
            hit = [d for d in delays if d is not None]
            m["episodes"] = f"{len(hit)}/{len(delays)}"
            m["delay"] = float(np.median(hit)) if hit else float("nan")
            m["rec_at_far"] = table[name][kind] = recall_at_far(raw, labels, TARGET_FAR)
            m["seconds"] = time.perf_counter() - t0
            results[kind][name] = m

    for kind in FAULT_TYPES:
        print(f"fault: {kind}")
        header = (
            f"  {'detector':20s} {'family':6s} {'recall':>7s} {'far':>7s} {'rec@far':>8s} {'auroc':>6s} "
            f"{'episodes':>9s} {'delay':>6s}"
        )
        print(header)
        print("  " + "-" * (len(header) - 2))
        for name, m in results[kind].items():
            family = "uni" if name in UNIVARIATE else "multi"
            print(
                f"  {name:20s} {family:6s} {m['recall']:7.3f} {m['far']:7.3f} {m['rec_at_far']:8.3f} "
                f"{m['auroc']:6.3f} {m['episodes']:>9s} {m['delay']:6.1f}"
            )
        print()

    caught = CATCH_FACTOR * TARGET_FAR
    uni_missed = all(table[n]["correlation_break"] < caught for n in UNIVARIATE)
    multi_caught = [n for n in MULTIVARIATE if table[n]["correlation_break"] >= caught]
    print(
        f"correlation break (caught = rec@far >= {caught:.2f}): "
        f"missed by every univariate chart: {uni_missed}; "
        f"caught by {len(multi_caught)}/{len(MULTIVARIATE)} multivariate detectors: {', '.join(multi_caught)}"
    )
    best_uni = max(table[n]["correlation_break"] for n in UNIVARIATE)
    print(f"best univariate rec@far on the correlation break: {best_uni:.3f} (chance: {TARGET_FAR:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
