"""ModelBundle.with_threshold: a new alarm point on the same calibration curve, on record."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.bundle import ModelBundle
from linewatch.errors import ConfigError


@pytest.mark.parametrize("calibration", ["empirical", "pot"])
def test_the_new_threshold_alarms_where_its_tail_probability_says(calibration):
    X = np.random.default_rng(3).normal(size=(3000, 3))
    bundle = ModelBundle.fit("hotelling", X, feature_names=("a", "b", "c"), calibration=calibration,
                             target_far=1e-2)
    raised = bundle.with_threshold(2.6, reason="false alarms", dispositions=["d1"], actor="bob")
    assert raised.threshold == pytest.approx(2.6) and raised.version != bundle.version
    assert raised.raw_threshold > bundle.raw_threshold
    # Just above the raw threshold the calibrated score reaches the new threshold (the curve is the old one).
    p = raised.calibrator.tail_probability(np.array([raised.raw_threshold * (1 + 1e-9)]))[0]
    assert -np.log10(p) >= 2.6 - 0.05
    probe = np.array([(bundle.raw_threshold + raised.raw_threshold) / 2])
    assert bundle.calibrator.is_alarm(probe)[0] and not raised.calibrator.is_alarm(probe)[0]
    np.testing.assert_array_equal(raised.score(X[:50]).calibrated, bundle.score(X[:50]).calibrated)
    assert raised.meta["threshold_change"]["dispositions"] == ["d1"] and bundle.meta.get("threshold_change") is None
    # everything but the alarm point carries over: input drift keeps its training reference
    assert bundle.input_reference is not None and raised.input_reference is bundle.input_reference
    with pytest.raises(ConfigError, match="positive"):
        bundle.with_threshold(float("nan"), reason="x")
