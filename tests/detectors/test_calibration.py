from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.calibration import (
    EmpiricalCalibrator,
    PotCalibrator,
    calibrator_from_dict,
    make_calibrator,
    surprise,
)
from linewatch.errors import ConfigError, DataError, NotFittedError


def test_empirical_tail_probability_by_hand():
    cal = EmpiricalCalibrator(target_far=0.1).fit(np.arange(1.0, 101.0))  # 100 scores 1..100
    # P(score >= 91) = (10 + 1) / 101 ; above the max only the +1 smoothing remains.
    assert cal.tail_probability(np.array([91.0]))[0] == pytest.approx(11 / 101)
    assert cal.tail_probability(np.array([1000.0]))[0] == pytest.approx(1 / 101)
    assert cal.tail_probability(np.array([-5.0]))[0] == pytest.approx(1.0)
    assert cal.tail_probability(np.array([cal.threshold_ + 1e-9]))[0] <= 0.1


@pytest.mark.parametrize("cls", [EmpiricalCalibrator, PotCalibrator])
def test_false_alarm_rate_on_fresh_normal_data_meets_target(cls):
    rng = np.random.default_rng(3)
    cal = cls(target_far=0.01).fit(rng.standard_normal(20_000))
    far = cal.is_alarm(rng.standard_normal(200_000)).mean()
    assert 0.006 < far < 0.015


def test_pot_extrapolates_beyond_the_sample():
    rng = np.random.default_rng(4)
    scores = rng.exponential(size=5000)  # exact tail: P(X > t) = exp(-t)
    cal = PotCalibrator(target_far=1e-5).fit(scores)
    assert cal.threshold_ == pytest.approx(-np.log(1e-5), rel=0.15)
    assert cal.tail_probability(np.array([10.0]))[0] == pytest.approx(np.exp(-10), rel=0.6)
    with pytest.raises(ConfigError, match="needs at least"):
        EmpiricalCalibrator(target_far=1e-5).fit(scores)


def test_auto_picks_by_resolution_and_round_trips():
    assert isinstance(make_calibrator("auto", 1e-3, n_normal=50_000), EmpiricalCalibrator)
    assert isinstance(make_calibrator("auto", 1e-3, n_normal=500), PotCalibrator)
    rng = np.random.default_rng(5)
    for cal in (EmpiricalCalibrator(target_far=0.01).fit(rng.normal(size=3000)),
                PotCalibrator(target_far=0.001).fit(rng.normal(size=3000))):
        back = calibrator_from_dict(cal.to_dict())
        x = np.linspace(-3, 6, 50)
        assert np.array_equal(back.tail_probability(x), cal.tail_probability(x))
        assert back.threshold_ == cal.threshold_


def test_errors_are_clear():
    with pytest.raises(NotFittedError):
        EmpiricalCalibrator().tail_probability(np.zeros(1))
    with pytest.raises(NotFittedError):
        PotCalibrator().is_alarm(np.zeros(1))
    with pytest.raises(ConfigError, match="target_far"):
        EmpiricalCalibrator(target_far=0.0).fit(np.zeros(10))
    with pytest.raises(DataError, match="NaN"):
        PotCalibrator().fit(np.array([1.0, np.nan]))
    with pytest.raises(ConfigError, match="unknown calibration"):
        make_calibrator("magic", 0.01)


def test_surprise_scale():
    assert surprise(np.array([1.0, 0.1, 1e-3]))[2] == pytest.approx(3.0)
    assert np.isfinite(surprise(np.array([0.0]))).all()
