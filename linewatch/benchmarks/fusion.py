"""Does fusion keep its promises? The fused false-alarm rate, false alerts per asset-day, power, throughput.

Run as ``linewatch bench fusion`` (``--quick`` for a shorter run, ``--json OUT``).

Fusion's inputs are calibrated tail probabilities, so its promises are measured on tails drawn
the way a normal plant produces them (:func:`linewatch.simulation.scores.normal_tails`):
uniform marginals, correlated between the part's modalities (``rho``) and autocorrelated from
part to part (``phi``: 0.8 is an EWMA chart's memory). For each setting:

- ``unit_far``: the share of parts the fusion calls anomalous, against the target
  ``10**-threshold`` (the fused score's calibration);
- ``false_alerts_per_asset_day``: alerts opened on that normal stream, at one part per 10 s
  (the demo's plant), the figure a maintenance engineer feels;
- the power on the cases fusion exists for: two modalities each at a tail of 0.0012 (under
  every detector's 1e-3 threshold) on ten consecutive parts, one modality alone at that level
  (must not alert), one strong modality alone (1e-6: must alert);
- ``scores_per_s``: the engine alone on the normal stream, next to pydantic decoding the same
  scores' JSON (what the agent does before fusing), in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.fusion.engine import FusionConfig, FusionEngine
from linewatch.schemas.codec import decode_batch
from linewatch.schemas.messages import Score
from linewatch.simulation.scores import normal_tails, plant_scores

PROG = "python -m linewatch.benchmarks.fusion"
PART_INTERVAL_S = 10.0
MODALITIES = ("spc", "frames", "signals")


def _run(scores: list[Score], config: FusionConfig) -> tuple[FusionEngine, Any, float]:
    engine = FusionEngine(config)
    t0 = time.perf_counter()
    out = engine.ingest(scores)
    out.extend(engine.flush())
    return engine, out, time.perf_counter() - t0


def normal_setting(n: int, phi: float, rho: float, config: FusionConfig, seed: int) -> dict[str, Any]:
    tails = normal_tails(n, phi=phi, rho=rho, seed=seed)
    scores = plant_scores("asset", {m: tails[:, j] for j, m in enumerate(MODALITIES)}, interval_s=PART_INTERVAL_S)
    _, out, seconds = _run(scores, config)
    parts = [v for v in out.verdicts if v.unit.stream == "parts"]
    opened = sum(a.message.state == "open" for a in out.alerts)
    days = n * PART_INTERVAL_S / 86_400
    payload = [s.model_dump_json().encode() for s in scores[:20_000]]
    t0 = time.perf_counter()
    decode_batch(payload, Score)
    decode_per_s = len(payload) / (time.perf_counter() - t0)
    return {"phi": phi, "rho": rho, "parts": n, "target_far": 10 ** -config.threshold,
            "unit_far": float(np.mean([v.anomalous for v in parts])), "alerts_opened": opened,
            "false_alerts_per_asset_day": opened / days, "scores_per_s": len(scores) / seconds,
            "decode_scores_per_s": decode_per_s}


def power(config: FusionConfig, seed: int, trials: int) -> dict[str, float]:
    """Share of trials in which each injected pattern opens an alert (10 parts out of 200)."""
    cases = {"two_moderate": (("spc", "frames"), 0.0012), "one_moderate": (("spc",), 0.0012),
             "one_strong": (("frames",), 1e-6)}
    result: dict[str, float] = {}
    for name, (where, level) in cases.items():
        hits = 0
        for t in range(trials):
            tails = normal_tails(200, phi=0.0, rho=0.1, seed=seed + t)
            cols = {m: tails[:, j].copy() for j, m in enumerate(MODALITIES)}
            for m in where:
                cols[m][100:110] = level
            _, out, _ = _run(plant_scores("asset", cols, interval_s=PART_INTERVAL_S), config)
            hits += any(a.message.state == "open" for a in out.alerts)
        result[name] = hits / trials
    return result


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer parts and trials")
    parser.add_argument("--threshold", type=float, default=FusionConfig().threshold,
                        help="fused calibrated score a unit counts from")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    config = FusionConfig(threshold=args.threshold)
    n = 20_000 if args.quick else 100_000
    header = (f"{'phi':>4s} {'rho':>4s} {'parts':>7s} {'target':>8s} {'unit FAR':>9s} {'ratio':>6s} "
              f"{'alerts':>6s} {'per asset-day':>13s} {'scores/s':>9s} {'decode/s':>9s}")
    print(header)
    print("-" * len(header))
    rows = []
    for phi in (0.0, 0.5, 0.8):
        for rho in (0.0, 0.1, 0.3):
            r = normal_setting(n, phi, rho, config, seed=int(100 * phi + 10 * rho))
            rows.append(r)
            print(f"{phi:4.1f} {rho:4.1f} {n:7d} {r['target_far']:8.2e} {r['unit_far']:9.2e} "
                  f"{r['unit_far'] / r['target_far']:6.2f} {r['alerts_opened']:6d} "
                  f"{r['false_alerts_per_asset_day']:13.2f} {r['scores_per_s']:9.0f} {r['decode_scores_per_s']:9.0f}",
                  flush=True)
    p = power(config, seed=1000, trials=10 if args.quick else 50)
    print(f"\nalert opened (share of trials, 10 of 200 parts injected): two modalities at 0.0012 each "
          f"{p['two_moderate']:.0%}, one at 0.0012 alone {p['one_moderate']:.0%}, one at 1e-6 alone "
          f"{p['one_strong']:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"threshold": args.threshold, "normal": rows, "power": p}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
