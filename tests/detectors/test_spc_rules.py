"""Every Western Electric / Nelson rule on tiny hand-checked series, plus a brute-force cross-check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from linewatch.detectors.spc_rules import (
    NELSON_RULES,
    WESTERN_ELECTRIC_RULES,
    apply_rules,
    nelson,
    western_electric,
)
from linewatch.errors import ConfigError, DataError


def _we(z, rule: str) -> list[int]:
    m, names = western_electric(np.asarray(z, dtype=float))
    return m[:, names.index(rule)].astype(int).tolist()


def _nel(z, rule: int) -> list[int]:
    m, names = nelson(np.asarray(z, dtype=float))
    return m[:, names.index(f"nelson{rule}")].astype(int).tolist()


def test_shapes_and_names() -> None:
    m, names = nelson(np.zeros(5))
    assert m.shape == (5, 8) and m.dtype == bool and names == NELSON_RULES
    m, names = western_electric(np.zeros(3))
    assert m.shape == (3, 4) and names == WESTERN_ELECTRIC_RULES
    assert not m.any()


def test_rule1_beyond_three_sigma() -> None:
    assert _we([0.0, 3.0, 3.01, -3.5], "we1") == [0, 0, 1, 1]  # exactly on the limit is in control
    assert _nel([0.0, 3.0, 3.01, -3.5], 1) == [0, 0, 1, 1]


def test_two_of_three_beyond_two_sigma_same_side() -> None:
    assert _we([2.1, 0.0, 2.1], "we2") == [0, 0, 1]
    assert _we([2.1, 0.0, -2.1], "we2") == [0, 0, 0]  # opposite sides
    assert _we([2.1, 0.0, 0.0, 2.1], "we2") == [0, 0, 0, 0]  # not within 3 points
    assert _we([2.1, 2.1, 0.0], "we2") == [0, 1, 0]  # flag sits on the completing zone point
    assert _nel([-2.5, -2.2], 5) == [0, 1]


def test_four_of_five_beyond_one_sigma_same_side() -> None:
    assert _we([1.1, 1.1, 0.0, 1.1, 1.1], "we3") == [0, 0, 0, 0, 1]
    assert _we([1.1, 1.1, 0.0, 0.0, 1.1], "we3") == [0, 0, 0, 0, 0]
    assert _we([1.1, 1.1, -1.1, 1.1, 1.1], "we3") == [0, 0, 0, 0, 1]
    assert _nel([-1.5, -1.5, -1.5, -1.5], 6) == [0, 0, 0, 1]


def test_runs_on_one_side() -> None:
    assert _we([0.1] * 8, "we4") == [0] * 7 + [1]
    assert _we([0.1] * 7 + [0.0], "we4") == [0] * 8  # a point on the centre line breaks the run
    assert _we([-0.1] * 9, "we4") == [0] * 7 + [1, 1]
    assert _nel([0.1] * 9, 2) == [0] * 8 + [1]
    assert _nel([0.1] * 8, 2) == [0] * 8
    assert _nel([0.1] * 4 + [-0.1] + [0.1] * 8, 2) == [0] * 13


def test_nelson3_trend_of_six() -> None:
    assert _nel(np.arange(6.0), 3) == [0] * 5 + [1]
    assert _nel(-np.arange(6.0), 3) == [0] * 5 + [1]
    assert _nel(np.arange(5.0), 3) == [0] * 5
    assert _nel([0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 5.0], 3) == [0] * 7  # a tie breaks the trend


def test_nelson4_fourteen_alternating() -> None:
    assert _nel([0.0, 1.0] * 7, 4) == [0] * 13 + [1]
    assert _nel([0.0, 1.0] * 6 + [0.0], 4) == [0] * 13
    broken = [0.0, 1.0] * 7
    broken[6] = broken[5]  # a tie in the middle
    assert _nel(broken, 4) == [0] * 14


def test_nelson7_fifteen_within_one_sigma() -> None:
    assert _nel([0.5, -0.5] * 7 + [0.99], 7) == [0] * 14 + [1]
    assert _nel([0.5, -0.5] * 7 + [1.0], 7) == [0] * 15  # |z| = 1 is not "within"
    assert _nel([0.5] * 14, 7) == [0] * 14


def test_nelson8_eight_beyond_one_sigma_either_side() -> None:
    z = [1.5, -1.5] * 4
    assert _nel(z, 8) == [0] * 7 + [1]
    assert _nel(z, 4) == [0] * 8  # only 8 alternating points: test 4 stays quiet
    assert _nel([1.5, -1.5, 0.5, 1.5, -1.5, 1.5, -1.5, 1.5, -1.5], 8) == [0] * 9


def _reference(z: np.ndarray) -> np.ndarray:
    """Direct, loop-per-point reading of the rule text, for cross-checking the vectorised code."""
    n = len(z)
    out = np.zeros((n, 8), dtype=bool)
    def window(t: int, k: int):
        return z[t - k + 1 : t + 1] if t >= k - 1 else None

    for t in range(n):
        def last(k: int, t: int = t):
            return window(t, k)

        out[t, 0] = abs(z[t]) > 3
        w = last(9)
        out[t, 1] = w is not None and ((w > 0).all() or (w < 0).all())
        w = last(6)
        out[t, 2] = w is not None and ((np.diff(w) > 0).all() or (np.diff(w) < 0).all())
        w = last(14)
        if w is not None:
            d = np.diff(w)
            out[t, 3] = bool((d != 0).all() and (np.sign(d[1:]) != np.sign(d[:-1])).all())
        for col, (k, m, s) in ((4, (2, 3, 2.0)), (5, (4, 5, 1.0))):
            w = z[max(0, t - m + 1) : t + 1]  # the points seen so far count at the start
            out[t, col] = (z[t] > s and (w > s).sum() >= k) or (z[t] < -s and (w < -s).sum() >= k)
        w = last(15)
        out[t, 6] = w is not None and (np.abs(w) < 1).all()
        w = last(8)
        out[t, 7] = w is not None and (np.abs(w) > 1).all()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_rules_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Mix of regimes so every rule fires somewhere: noise, drift, alternation, stratification.
    z = np.concatenate(
        [
            [2.5, 2.5, 1.5],  # k-of-m rules at the very start of the series
            rng.normal(size=150),
            np.linspace(-1, 3, 20),
            np.tile([1.6, -1.6], 10),
            0.2 * rng.normal(size=30),
            rng.normal(size=80) + 1.5,
        ]
    )
    got, _ = nelson(z)
    ref = _reference(z)
    np.testing.assert_array_equal(got, ref)
    assert ref.any(axis=0).all()  # the series exercises all eight rules


def test_apply_rules_standardises_and_validates() -> None:
    m, names = apply_rules([10.0, 12.2, 12.3], center=10.0, sigma=1.0, rules="western_electric")
    assert names == WESTERN_ELECTRIC_RULES and m[:, 1].tolist() == [False, False, True]
    with pytest.raises(ConfigError, match="sigma"):
        apply_rules([1.0], center=0.0, sigma=0.0)
    with pytest.raises(ConfigError, match="rule set"):
        apply_rules([1.0], center=0.0, sigma=1.0, rules="aiag")
    with pytest.raises(DataError):
        nelson(np.zeros((3, 2, 2)))
    with pytest.raises(DataError):
        nelson(np.array([0.0, np.nan]))


@pytest.mark.parametrize("rules", [nelson, western_electric])
def test_columns_side_by_side_are_the_series_one_by_one(rules) -> None:
    """The live monitor scores every characteristic in one call: the flags must be each column's own."""
    z = np.random.default_rng(4).normal(scale=1.6, size=(40, 5))
    z[10:25, 2] = np.linspace(-0.5, 0.5, 15)  # a stratified stretch, a trend
    together, names = rules(z)
    assert together.shape == (40, 5, len(names))
    for j in range(5):
        assert np.array_equal(together[:, j], rules(z[:, j])[0])


def test_monitor_catches_a_run_that_spans_two_batches() -> None:
    from linewatch.detectors.spc_rules import RunRuleMonitor

    rng = np.random.default_rng(21)
    z = rng.normal(size=300)
    z[100:112] = np.abs(z[100:112]) + 0.1  # 12 above the centre: nelson2 at the 9th of them
    x = 5.0 + 2.0 * z
    whole, names = nelson(z)
    mon = RunRuleMonitor(center=[5.0], sigma=[2.0], rules="nelson")
    cuts = [0, 104, 105, 200, 300]  # the run starts before the cut at 104 and goes on after it
    parts = [mon.update(x[a:b, None])[:, 0, :] for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(np.vstack(parts), whole)
    assert mon.names == names and np.vstack(parts)[108, names.index("nelson2")]
    # The second batch alone would not see the run at all.
    alone = RunRuleMonitor(center=[5.0], sigma=[2.0], rules="nelson").update(x[104:105, None])
    assert not alone.any()


def test_monitor_columns_and_baseline() -> None:
    from linewatch.detectors.spc_rules import RunRuleMonitor, rule_baseline

    rng = np.random.default_rng(22)
    good = np.column_stack([10.0 + rng.normal(size=400), np.full(400, 3.0)])  # second column is flat
    base = rule_baseline(good)
    assert base["sigma"][1] is None and abs(base["center"][0] - 10.0) < 0.2
    mon = RunRuleMonitor.from_baseline(base)
    flags = mon.update(np.array([[10.0, 3.0], [20.0, 99.0]]))
    assert flags.shape == (2, 2, 4)
    assert flags[1, 0, mon.names.index("we1")] and not flags[:, 1].any()  # the flat column is not checked
    with pytest.raises(ConfigError, match="positive sigma"):
        RunRuleMonitor(center=[0.0], sigma=[0.0])
    with pytest.raises(ConfigError, match="rule set"):
        rule_baseline(good, rules="aiag")
