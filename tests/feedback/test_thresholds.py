"""The threshold rule on tiny lists of calibrated scores (no database)."""

from __future__ import annotations

import pytest

from linewatch.feedback.thresholds import (
    CLEARANCE,
    MIN_EVIDENCE,
    Evidence,
    propose_all,
    propose_threshold,
)


def test_false_alarms_above_the_threshold_raise_it_just_past_the_highest():
    p = propose_threshold(3.0, false_alarms=[3.5, 4.1, 3.2, 2.0, 3.3], true_defects=[6.0])
    assert p.action == "raise" and 4.1 < p.proposed_threshold <= 4.1 + CLEARANCE + 0.01
    assert p.false_alarms_still_raised == 0 and p.defects_missed == 0 and not p.conflict
    assert p.target_far == pytest.approx(10 ** -p.proposed_threshold)
    assert not p.thin and p.n_dispositions == 6 >= MIN_EVIDENCE


def test_feedback_never_lowers_a_threshold():
    quiet = propose_threshold(3.0, false_alarms=[1.2, 2.9], true_defects=[])
    assert quiet.action == "keep" and quiet.proposed_threshold == 3.0
    missed = propose_threshold(3.0, false_alarms=[], true_defects=[2.5, 5.0])
    assert missed.action == "keep" and missed.proposed_threshold == 3.0 and missed.defects_missed == 1
    assert any("never lowered" in w and "retrain" in w for w in missed.warnings)


def test_overlap_picks_the_cheapest_threshold_and_says_so():
    fa, td = [3.5, 3.6, 3.7, 3.8], [3.55]
    strict = propose_threshold(3.0, false_alarms=fa, true_defects=td, cost_ratio=10.0)
    assert strict.conflict and strict.action == "keep" and strict.cost == 4.0
    lenient = propose_threshold(3.0, false_alarms=fa, true_defects=td, cost_ratio=2.0)
    assert lenient.action == "raise" and lenient.proposed_threshold > 3.8 and lenient.cost == 2.0
    assert any("cannot clear both" in w for w in lenient.warnings)
    assert any("would miss 1 confirmed defect" in w for w in lenient.warnings)
    # In between: silencing the two false alarms below the defect costs nothing in defects.
    middle = propose_threshold(3.0, false_alarms=[3.1, 3.2, 3.7], true_defects=[3.5], cost_ratio=10.0)
    assert 3.2 < middle.proposed_threshold < 3.5 and middle.defects_missed == 0 and middle.cost == 1.0


def test_thin_evidence_and_new_skus_are_called_out():
    p = propose_threshold(3.0, false_alarms=[3.5], true_defects=[], n_other=2)
    assert p.thin and p.n_dispositions == 3
    assert any("new_sku" in w for w in p.warnings) and any("thin evidence" in w for w in p.warnings)
    with pytest.raises(ValueError, match="cost_ratio"):
        propose_threshold(3.0, false_alarms=[], true_defects=[], cost_ratio=0.0)


def test_proposals_are_per_detector_and_asset_from_the_newest_threshold():
    def ev(detector, asset, verdict, score, threshold, version="v1"):
        return Evidence(detector=detector, asset_id=asset, modality="spc", model_version=version, verdict=verdict,
                        calibrated_score=score, threshold=threshold, disposition_id=f"{asset}-{score}")

    proposals = propose_all([ev("hotelling", "a", "false_alarm", 3.4, 3.0),
                             ev("hotelling", "a", "acceptable_variation", 3.6, 3.3, "v2"),
                             ev("hotelling", "b", "true_defect", 5.0, 3.0),
                             ev("ecod", "a", "new_sku", 4.0, 3.0)])
    by_key = {(p.detector, p.asset_id): p for p in proposals}
    assert set(by_key) == {("hotelling", "a"), ("hotelling", "b"), ("ecod", "a")}
    ha = by_key["hotelling", "a"]
    assert ha.current_threshold == 3.3 and ha.proposed_threshold > 3.6 and ha.model_versions == ["v1", "v2"]
    assert ha.n_false_alarms == 2 and len(ha.disposition_ids) == 2
    assert by_key["hotelling", "b"].action == "keep"
    assert by_key["ecod", "a"].action == "keep" and by_key["ecod", "a"].n_other == 1
