"""Notes the live SPC path adds to a score's explanation: run-rule violations and unseen context.

Why notes and not verdicts: a detector's calibrated score decides ``is_anomaly``; the Western
Electric / Nelson rules and the training-coverage check are what an SPC engineer reads next to
it ("bore_diameter_mm: 4 of 5 beyond 1σ", "shift=night never in training"). They travel as
``Contribution`` entries with ``share`` 0 after the score's own contributions (``kind="rule"``,
``kind="unseen_context"``), so the message, the ``scores`` row and the SQL views
(``spc_rule_violations``, ``scores_unseen_context``) carry the same facts, and consumers that only
read features are not disturbed (``top_feature`` is still the first contribution).

Everything here is per batch and vectorised: one rule pass per characteristic, one set lookup per
record and context dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from linewatch.coverage import Coverage
from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.spc_rules import DEFAULT_RULE_SET, RunRuleMonitor
from linewatch.schemas.messages import SpcRecord
from linewatch.schemas.score_encoder import Explanation

#: At most this many rule notes per score: the explanation holds 64 entries, and a part that
#: breaks more rules than this is plainly out of control already.
MAX_RULE_NOTES = 32


def rule_monitor_for(bundle: ModelBundle) -> RunRuleMonitor | None:
    """A fresh run-rule monitor for one asset's stream under ``bundle``, or ``None`` without a baseline.

    The baseline is the per-characteristic Phase I centre and within-σ that training stores
    (``meta["run_rules"]``); models trained before that was stored fall back to a chart detector's
    own centre and σ (EWMA, CUSUM, I-MR), and other old models get no run rules until retrained.
    """
    baseline = bundle.meta.get("run_rules")
    det = bundle.detector
    if baseline is None and getattr(det, "center_", None) is not None and getattr(det, "sigma_", None) is not None:
        baseline = {"rules": DEFAULT_RULE_SET, "center": np.asarray(det.center_).tolist(),
                    "sigma": np.asarray(det.sigma_).tolist()}
    if baseline is None or len(baseline["center"]) != len(bundle.feature_names):
        return None
    return RunRuleMonitor.from_baseline(baseline)


def rule_notes(monitor: RunRuleMonitor, X: np.ndarray, names: Sequence[str]) -> list[Explanation]:
    """Per row of ``X`` (one asset's rows, in order), a note for each rule a characteristic violated."""
    flags = monitor.update(X)
    notes: list[Explanation] = [[] for _ in range(X.shape[0])]
    rows, cols, rules = np.nonzero(flags)
    if rows.size == 0:
        return notes
    z = monitor.standardized(X)
    for i, j, k in zip(rows.tolist(), cols.tolist(), rules.tolist(), strict=True):  # violations are rare
        if len(notes[i]) < MAX_RULE_NOTES:
            notes[i].append({"name": names[j], "value": float(z[i, j]), "share": 0.0, "kind": "rule",
                             "detail": monitor.names[k]})
    return notes


def context_columns(recs: Sequence[SpcRecord]) -> dict[str, list[Any]]:
    """The coverage dimensions of each record, as columns (hour of day from the event time, UTC)."""
    return {
        "asset": [r.asset_id for r in recs],
        "sku": [r.sku for r in recs],
        "shift": [r.shift for r in recs],
        "lot": [r.lot for r in recs],
        "machine_state": [r.machine_state for r in recs],
        "hour": [r.ts.hour for r in recs],  # SpcRecord.ts is UTC by validation
    }


def unseen_notes(coverage: Coverage, columns: dict[str, list[Any]]) -> list[Explanation]:
    """Per record, a note for each context value the model's training data never contained."""
    return [[{"name": dim, "value": 0.0, "share": 0.0, "kind": "unseen_context", "detail": message}
             for dim, message in row] for row in coverage.unseen_batch(columns)]


def coverage_of(bundle: ModelBundle) -> Coverage | None:
    """The training coverage stored with ``bundle``, or ``None`` for models trained before it was recorded."""
    doc = bundle.meta.get("coverage")
    return Coverage.from_dict(doc) if doc else None
