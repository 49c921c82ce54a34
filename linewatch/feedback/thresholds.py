"""Threshold proposals from operators' dispositions: pure logic, no database.

For one detector on one asset the evidence is each dispositioned alert's (or event's) highest
calibrated score from that detector, split by verdict: *false alarms* (``false_alarm`` and
``acceptable_variation``: the process was fine) and *true defects* (``true_defect``).
``new_sku`` dispositions are counted but never move a threshold: a new product needs a model
trained on it, not a blunter old one.

The rule (:func:`propose_threshold`), on the calibrated scale (``-log10`` of the false-alarm rate):

1. No false alarm above the current threshold: keep it. A threshold is never *lowered* because
   of feedback; a defect the model missed says "retrain", and is reported as such.
2. Otherwise the candidate is the smallest threshold that silences every false alarm: the
   highest false-alarm score plus :data:`CLEARANCE` (scores are compared with ``>``).
3. If every confirmed defect still scores above the candidate, propose it.
4. If they overlap, no threshold clears both: among the current threshold and the points just
   above each false alarm, pick the one that minimises ``false alarms still raised + cost_ratio
   x defects missed`` (ties: the lower threshold, which misses fewer defects), and say so. A
   proposal that would miss a confirmed defect always carries that warning.

Fewer than :data:`MIN_EVIDENCE` dispositions make a proposal *thin*: shown, with a warning.

>>> p = propose_threshold(3.0, false_alarms=[3.5], true_defects=[])
>>> p.action, p.proposed_threshold, p.conflict
('raise', 3.55, False)
>>> p = propose_threshold(3.0, false_alarms=[3.5], true_defects=[3.2])
>>> p.action, p.proposed_threshold, p.conflict
('keep', 3.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: How far above the highest false alarm a proposal goes: 0.05 on the -log10 scale is a factor of
#: 1.12 in false-alarm rate, enough to absorb rounding of stored scores, small enough to stay tight.
CLEARANCE = 0.05
#: Below this many dispositions a proposal is shown with a "thin evidence" warning.
MIN_EVIDENCE = 5
#: Default price of one missed defect in false alarms (a missed defect reaches a customer).
DEFAULT_COST_RATIO = 10.0
#: Verdicts that say the process was fine (the alert should not have fired).
FALSE_ALARM_VERDICTS = ("false_alarm", "acceptable_variation")
TRUE_DEFECT_VERDICTS = ("true_defect",)
#: Proposals are rounded up to this many decimals, so they read well and still clear the evidence.
DECIMALS = 2


@dataclass(frozen=True)
class Evidence:
    """One disposition's verdict on one detector's highest calibrated score behind it."""

    detector: str
    asset_id: str
    modality: str
    model_version: str
    verdict: str
    calibrated_score: float
    threshold: float
    disposition_id: str


@dataclass
class ThresholdProposal:
    """What the rule says for one detector on one asset, and on what evidence."""

    detector: str
    asset_id: str
    current_threshold: float
    proposed_threshold: float
    action: str  # "raise" or "keep"
    n_false_alarms: int
    n_true_defects: int
    n_other: int = 0
    modality: str = ""
    model_versions: list[str] = field(default_factory=list)
    false_alarm_max: float | None = None
    true_defect_min: float | None = None
    false_alarms_still_raised: int = 0
    defects_missed: int = 0
    cost: float = 0.0
    cost_ratio: float = DEFAULT_COST_RATIO
    conflict: bool = False
    thin: bool = False
    warnings: list[str] = field(default_factory=list)
    disposition_ids: list[str] = field(default_factory=list)

    @property
    def target_far(self) -> float:
        """The false-alarm rate the proposed threshold implies (one per ``1/target_far`` normal events)."""
        return float(10.0 ** -self.proposed_threshold)

    @property
    def n_dispositions(self) -> int:
        return self.n_false_alarms + self.n_true_defects + self.n_other

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_far": self.target_far, "n_dispositions": self.n_dispositions}


def _round_up(x: float) -> float:
    scale = 10 ** DECIMALS
    return math.ceil(round(x * scale, 6)) / scale


def propose_threshold(current: float, *, false_alarms: Sequence[float], true_defects: Sequence[float],
                      n_other: int = 0, cost_ratio: float = DEFAULT_COST_RATIO) -> ThresholdProposal:
    """Apply the module's rule to one detector's scores on one asset (calibrated scale)."""
    if cost_ratio <= 0:
        raise ValueError(f"cost_ratio {cost_ratio!r} must be positive (the price of a missed defect in false alarms)")
    fa = np.asarray(false_alarms, dtype=np.float64)
    td = np.asarray(true_defects, dtype=np.float64)
    p = ThresholdProposal(detector="", asset_id="", current_threshold=current, proposed_threshold=current,
                          action="keep", n_false_alarms=int(fa.size), n_true_defects=int(td.size), n_other=n_other,
                          false_alarm_max=float(fa.max()) if fa.size else None,
                          true_defect_min=float(td.min()) if td.size else None, cost_ratio=cost_ratio)

    def cost(t: float) -> tuple[int, int, float]:
        raised, missed = int(np.count_nonzero(fa > t)), int(np.count_nonzero(td <= t))
        return raised, missed, raised + cost_ratio * missed

    if fa.size and fa.max() > current:
        clear = max(_round_up(float(fa.max()) + CLEARANCE), current)
        if td.size and td.min() <= clear:
            p.conflict = True
            # Each point just above a false alarm (or the current threshold) is where the cost changes.
            points = np.unique(np.concatenate([[current], [_round_up(x + CLEARANCE) for x in fa if x > current]]))
            costs = [cost(float(t))[2] for t in points]
            best = float(points[int(np.argmin(costs))])  # argmin takes the first: the lowest threshold on ties
            p.proposed_threshold = best
            p.warnings.append(
                f"cannot clear both: false alarms reach {fa.max():.2f} but a confirmed defect scored "
                f"{td.min():.2f}; at cost ratio {cost_ratio:g} the cheapest threshold is {best:.2f}")
        else:
            p.proposed_threshold = clear
    p.false_alarms_still_raised, p.defects_missed, p.cost = cost(p.proposed_threshold)
    if p.proposed_threshold > current:
        p.action = "raise"
    below = int(np.count_nonzero(td <= current))
    if p.defects_missed > below:
        p.warnings.append(f"raising to {p.proposed_threshold:.2f} would miss {p.defects_missed - below} confirmed "
                          "defect(s) the current threshold catches")
    if below:
        p.warnings.append(f"{below} confirmed defect(s) scored at or below the current threshold {current:.2f}: "
                          "thresholds are never lowered from feedback; retrain the model with those in mind")
    if p.n_dispositions < MIN_EVIDENCE:
        p.thin = True
        p.warnings.append(f"thin evidence: {p.n_dispositions} disposition(s), fewer than {MIN_EVIDENCE}")
    if n_other:
        p.warnings.append(f"{n_other} new_sku disposition(s) ignored: train a model for the new SKU instead")
    return p


def propose_all(evidence: Iterable[Evidence], *, cost_ratio: float = DEFAULT_COST_RATIO) -> list[ThresholdProposal]:
    """One proposal per (detector, asset), from the current threshold of its newest evidence.

    Evidence from several model versions of one detector is pooled: calibrated scores mean the
    same (a tail probability on normal data) whichever version produced them.
    """
    groups: dict[tuple[str, str], list[Evidence]] = {}
    for e in evidence:
        groups.setdefault((e.detector, e.asset_id), []).append(e)
    proposals = []
    for (detector, asset), items in sorted(groups.items()):
        current = items[-1].threshold  # evidence arrives oldest first
        p = propose_threshold(
            current,
            false_alarms=[e.calibrated_score for e in items if e.verdict in FALSE_ALARM_VERDICTS],
            true_defects=[e.calibrated_score for e in items if e.verdict in TRUE_DEFECT_VERDICTS],
            n_other=sum(e.verdict not in FALSE_ALARM_VERDICTS + TRUE_DEFECT_VERDICTS for e in items),
            cost_ratio=cost_ratio,
        )
        p.detector, p.asset_id, p.modality = detector, asset, items[-1].modality
        p.model_versions = sorted({e.model_version for e in items})
        p.disposition_ids = sorted({e.disposition_id for e in items})
        proposals.append(p)
    return proposals
