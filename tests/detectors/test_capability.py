"""Capability indices on hand-computable data."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.capability import capability, sigma_within
from linewatch.detectors.chart_math import chart_constants
from linewatch.errors import ConfigError, DataError

X = np.array([9.0, 11.0, 9.0, 11.0])  # mean 10, MR̄ = 2, s = sqrt(4/3)
SW = 2.0 / chart_constants(2).d2
SO = np.sqrt(4.0 / 3.0)


def test_two_sided_by_hand() -> None:
    r = capability(X, lsl=4.0, usl=16.0)
    assert r.mean == 10.0 and r.n == 4
    assert r.sigma_within == pytest.approx(SW) and r.sigma_overall == pytest.approx(SO)
    assert r.cp == pytest.approx(12 / (6 * SW))
    assert r.cpk == pytest.approx(6 / (3 * SW)) == r.cp  # centred: Cpk = Cp
    assert r.pp == pytest.approx(12 / (6 * SO))
    assert r.ppk == pytest.approx(r.pp)


def test_off_centre_cpk_takes_the_nearer_limit() -> None:
    r = capability(X, lsl=7.0, usl=16.0)
    assert r.cpl == pytest.approx(3 / (3 * SW)) and r.cpu == pytest.approx(6 / (3 * SW))
    assert r.cpk == r.cpl
    assert r.ppk == pytest.approx(3 / (3 * SO))
    assert r.cpk < r.cp


def test_one_sided() -> None:
    lo = capability(X, lsl=7.0)
    assert lo.cp is None and lo.pp is None and lo.cpu is None
    assert lo.cpk == pytest.approx(1 / SW) and lo.ppk == pytest.approx(1 / SO)
    hi = capability(X, usl=13.0)
    assert hi.cpk == hi.cpu == pytest.approx(1 / SW)
    assert set(hi.to_dict()) >= {"cp", "cpk", "pp", "ppk"}


def test_subgroups_use_s_bar_over_c4() -> None:
    sub = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0]])
    s_bar = (1.0 + np.sqrt(3.0)) / 2
    assert sigma_within(sub) == pytest.approx(s_bar / chart_constants(3).c4)
    r = capability(sub, lsl=-10.0, usl=15.0)
    assert r.mean == 2.5 and r.n == 6
    assert r.sigma_overall == pytest.approx(np.std(sub, ddof=1))


def test_drift_shows_as_ppk_below_cpk() -> None:
    # A slow drift inflates the overall σ but not the short-term one.
    x = np.linspace(0, 6, 200) + np.random.default_rng(0).normal(scale=0.2, size=200)
    r = capability(x, lsl=-5.0, usl=11.0)
    assert r.ppk < 0.5 * r.cpk


def test_errors() -> None:
    with pytest.raises(ConfigError, match="spec limit"):
        capability(X)
    with pytest.raises(ConfigError, match="below"):
        capability(X, lsl=5.0, usl=5.0)
    with pytest.raises(DataError):
        capability(np.array([1.0, np.nan]), usl=3.0)
    with pytest.raises(DataError):
        sigma_within(np.zeros((3, 30)))
