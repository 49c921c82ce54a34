"""Control-chart constants, limits, Phase I and the chart detectors, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.chart_math import (
    chart_constants,
    cusum_statistic,
    ewma_sigma_factor,
    ewma_statistic,
    imr_limits,
    imr_phase1,
    subgroup_limits,
    subgroup_out_of_control,
    subgroup_phase1,
)
from linewatch.detectors.spc_charts import CUSUMChart, EWMAChart, ShewhartIMR
from linewatch.errors import ConfigError, DataError, NotFittedError

# Published table (Montgomery, Appendix VI): n: (d2, d3, c4, A2, A3, B3, B4, D3, D4)
TABLE = {
    2: (1.128, 0.853, 0.7979, 1.880, 2.659, 0.0, 3.267, 0.0, 3.267),
    3: (1.693, 0.888, 0.8862, 1.023, 1.954, 0.0, 2.568, 0.0, 2.574),
    5: (2.326, 0.864, 0.9400, 0.577, 1.427, 0.0, 2.089, 0.0, 2.114),
    6: (2.534, 0.848, 0.9515, 0.483, 1.287, 0.030, 1.970, 0.0, 2.004),
    7: (2.704, 0.833, 0.9594, 0.419, 1.182, 0.118, 1.882, 0.076, 1.924),
    10: (3.078, 0.797, 0.9727, 0.308, 0.975, 0.284, 1.716, 0.223, 1.777),
    25: (3.931, 0.708, 0.9896, 0.153, 0.606, 0.565, 1.435, 0.459, 1.541),
}


@pytest.mark.parametrize("n", sorted(TABLE))
def test_constants_match_published_table(n: int) -> None:
    k = chart_constants(n)
    got = (k.d2, k.d3, k.c4, k.A2, k.A3, k.B3, k.B4, k.D3, k.D4)
    np.testing.assert_allclose(got, TABLE[n], atol=1.5e-3)


def test_constants_outside_table_refused() -> None:
    with pytest.raises(ConfigError, match="subgroup size 26"):
        chart_constants(26)
    with pytest.raises(ConfigError):
        chart_constants(1)


def test_imr_limits_by_hand() -> None:
    # MR = 2, 1, 2 -> MR̄ = 5/3; σ = MR̄ / 1.1284; centre = 2.5
    lim = imr_limits([1.0, 3.0, 2.0, 4.0])
    sigma = (5 / 3) / chart_constants(2).d2
    assert lim.center == 2.5
    assert lim.sigma == pytest.approx(sigma)
    assert lim.i_ucl == pytest.approx(2.5 + 3 * sigma)
    assert lim.i_lcl == pytest.approx(2.5 - 3 * sigma)
    assert lim.mr_ucl == pytest.approx(5 / 3 * chart_constants(2).D4)
    # Excluding point 1 (value 3.0) keeps only the range 2 -> 4: MR̄ = 2, centre = 7/3.
    lim = imr_limits([1.0, 3.0, 2.0, 4.0], keep=np.array([True, False, True, True]))
    assert lim.mr_bar == 2.0 and lim.center == pytest.approx(7 / 3)


def test_imr_refuses_flat_or_tiny_series() -> None:
    with pytest.raises(DataError, match="MR̄ = 0"):
        imr_limits([5.0, 5.0, 5.0])
    with pytest.raises(DataError):
        imr_limits([1.0, 2.0])


def test_phase1_drops_spike_only() -> None:
    x = np.array([10.0, 10.1, 9.9, 10.0, 14.0, 10.1, 9.9, 10.0, 10.2, 9.8])
    lim, kept = imr_phase1(x)
    assert kept.tolist() == [True] * 4 + [False] + [True] * 5
    assert lim.center == pytest.approx(10.0)
    # MR̄ from the 7 ranges that do not touch the spike: .1 .2 .1 .2 .1 .2 .4 -> 1.3 / 7
    assert lim.mr_bar == pytest.approx(1.3 / 7)


def test_phase1_without_special_causes_keeps_everything() -> None:
    x = np.array([10.0, 10.2, 9.9, 10.1, 9.8, 10.0, 10.1, 9.9])
    lim, kept = imr_phase1(x)
    assert kept.all()
    assert lim == imr_limits(x)


def test_phase1_reaches_a_fixed_point() -> None:
    x = np.random.default_rng(0).normal(size=400)
    x[[50, 51, 300]] += np.array([5.0, 5.0, -6.0])
    lim, kept = imr_phase1(x)
    assert not kept[[50, 51, 300]].any()
    inside = (x >= lim.i_lcl) & (x <= lim.i_ucl)
    assert inside[kept].all()  # nothing kept lies outside the final limits
    assert lim.sigma == pytest.approx(1.0, rel=0.1)


def test_subgroup_limits_by_hand() -> None:
    sub = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0]])
    k = chart_constants(3)
    r = subgroup_limits(sub, kind="range")  # ranges 2, 3 -> R̄ = 2.5; means 2, 3 -> 2.5
    assert (r.center, r.disp_center) == (2.5, 2.5)
    assert r.xbar_ucl == pytest.approx(2.5 + k.A2 * 2.5)
    assert r.disp_ucl == pytest.approx(k.D4 * 2.5) and r.disp_lcl == 0.0
    assert r.sigma == pytest.approx(2.5 / k.d2)
    s = subgroup_limits(sub, kind="stdev")  # s = 1 and sqrt(3) -> s̄ = (1 + 1.732) / 2
    s_bar = (1.0 + np.sqrt(3.0)) / 2
    assert s.disp_center == pytest.approx(s_bar)
    assert s.xbar_lcl == pytest.approx(2.5 - k.A3 * s_bar)
    assert s.disp_ucl == pytest.approx(k.B4 * s_bar)
    assert s.sigma == pytest.approx(s_bar / k.c4)
    with pytest.raises(ConfigError):
        subgroup_limits(sub, kind="mad")


def test_subgroup_phase1_and_phase2() -> None:
    rng = np.random.default_rng(1)
    sub = rng.normal(size=(30, 5))
    sub[7] += 4.0  # mean shift in one subgroup
    sub[20] *= 6.0  # dispersion blow-up in another
    lim, kept = subgroup_phase1(sub, kind="stdev")
    assert not kept[7] and not kept[20]
    assert kept.sum() >= 26  # re-estimated, tighter limits may catch one borderline subgroup
    ooc = subgroup_out_of_control(sub, lim)
    assert ooc[7] and ooc[20]
    np.testing.assert_array_equal(ooc, ~kept)  # Phase I ended at a fixed point
    with pytest.raises(DataError, match="subgroups of 5"):
        subgroup_out_of_control(sub[:, :4], lim)


def test_ewma_statistic_and_limits_match_recursion() -> None:
    x = np.random.default_rng(2).normal(size=(25, 2))
    lam, z, expect = 0.3, np.array([1.0, -1.0]), []
    for row in x:
        z = lam * row + (1 - lam) * z
        expect.append(z)
    np.testing.assert_allclose(ewma_statistic(x, lam=lam, start=[1.0, -1.0]), np.array(expect))
    assert ewma_sigma_factor(1, lam=0.3) == pytest.approx(0.3)  # sqrt(λ/(2-λ)(1-(1-λ)²)) = λ
    assert ewma_sigma_factor(10_000, lam=0.3) == pytest.approx(np.sqrt(0.3 / 1.7))


def test_cusum_statistic_matches_recursion() -> None:
    y = np.random.default_rng(3).normal(size=(40, 3))
    start = np.array([0.0, 2.0, 7.0])
    c, expect = start.copy(), []
    for row in y:
        c = np.maximum(0.0, c + row)
        expect.append(c)
    np.testing.assert_allclose(cusum_statistic(y, start=start), np.array(expect), atol=1e-12)


def _set(det, center: float = 0.0, sigma: float = 1.0):
    """Give a chart detector known limits so its statistic can be checked by hand."""
    det.center_ = np.array([center])
    det.sigma_ = np.array([sigma])
    det.mr_bar_ = np.array([sigma * chart_constants(2).d2])
    det.state_ = det._initial_state()
    return det


def test_shewhart_score_is_one_on_the_limit() -> None:
    det = _set(ShewhartIMR(), center=10.0, sigma=2.0)
    # First row: individuals only, 16 = 10 + 3*2 sits on the UCL.
    assert det.score(np.array([[16.0]]))[0] == pytest.approx(1.0)
    # Second row: a jump of exactly MR_UCL = D4 * MR̄ = 3.267 * 2.257 is also 1.0.
    jump = chart_constants(2).D4 * 2.0 * chart_constants(2).d2
    s = det.score(np.array([[10.0], [10.0 + jump]]))
    assert s[0] == 0.0 and s[1] == pytest.approx(max(1.0, jump / 6.0))


def test_ewma_detector_by_hand() -> None:
    det = _set(EWMAChart(lam=0.5, L=3.0, after_alarm="hold"))
    # z1 = 0.5 * 6 = 3, σ_z(1) = 0.5 -> 3 / (3*0.5) = 2; z2 = 1.5, σ_z(2) = 0.5*sqrt(1-0.0625)/... exact:
    s = det.score(np.array([[6.0], [0.0]]))
    sz2 = np.sqrt(0.5 / 1.5 * (1 - 0.5**4))
    np.testing.assert_allclose(s, [2.0, 1.5 / (3 * sz2)])
    # Restart: the signal at row 1 puts z back on the centre with t = 0, so row 2 (x = 0) is a first
    # point again (z = 0) and row 3 the second one: z = 3, charted against σ_z(2).
    restart = _set(EWMAChart(lam=0.5, L=3.0))
    np.testing.assert_allclose(restart.score(np.array([[6.0], [0.0], [6.0]])), [2.0, 0.0, 3.0 / (3 * sz2)])


def test_cusum_detector_by_hand() -> None:
    det = _set(CUSUMChart(k=0.5, h=5.0, after_alarm="hold"))
    s = det.score(np.full((12, 1), 1.0))  # C+ grows by 0.5 a step: 5 = h at step 10
    np.testing.assert_allclose(s, 0.5 * np.arange(1, 13) / 5.0)
    head = _set(CUSUMChart(k=0.5, h=5.0, headstart=0.5, after_alarm="hold"))
    assert head.score(np.array([[1.0]]))[0] == pytest.approx((2.5 + 0.5) / 5.0)
    # Restart: step 11 (C+ = 5.5 > h) signals, then C+ starts again from 0 (0.5 at step 12).
    restart = _set(CUSUMChart(k=0.5, h=5.0))
    np.testing.assert_allclose(restart.score(np.full((12, 1), 1.0)),
                               np.r_[0.5 * np.arange(1, 12), 0.5] / 5.0)
    # ... and from the headstart h/2 when the chart has one (Lucas & Crosier's FIR after a restart).
    fir = _set(CUSUMChart(k=0.5, h=5.0, headstart=0.5))
    np.testing.assert_allclose(fir.score(np.array([[9.0], [1.0]])), [(2.5 + 8.5) / 5.0, (2.5 + 0.5) / 5.0])


def test_shewhart_has_no_memory_to_restart() -> None:
    # A spike out and back: the jump back is a moving-range signal of its own, as on a paper chart.
    spike = np.array([[0.0], [8.0], [0.0], [0.1]])
    assert (_set(ShewhartIMR()).score(spike) > 1.0).tolist() == [False, True, True, False]
    assert "after_alarm" not in ShewhartIMR().get_params()


def _alarm_rows(det, X: np.ndarray, limit: float = 1.0) -> np.ndarray:
    """Rows at which the live stream (``update`` in batches of 7) is beyond ``limit``."""
    out = np.concatenate([det.update(X[i:i + 7]) for i in range(0, len(X), 7)])
    return np.flatnonzero(out > limit)


@pytest.mark.parametrize("cls", [EWMAChart, CUSUMChart])
def test_restart_ends_the_alarm_episode_when_the_process_returns(cls) -> None:
    # 200 good parts, a 2σ shift for 30 parts, then back to normal for 200 parts.
    rng = np.random.default_rng(11)
    train = rng.normal(size=(500, 1))
    calm = rng.normal(size=(430, 1))
    X = calm.copy()
    X[200:230] += 2.0
    restart = _alarm_rows(cls().fit(train), X)
    baseline = _alarm_rows(cls().fit(train), calm)  # the chart's own false alarms on this noise
    hold = _alarm_rows(cls(after_alarm="hold").fit(train), X)
    # Found in the shift, re-detected while it lasts (several separate signals), ...
    assert restart.min() < 210 and np.count_nonzero((restart >= 200) & (restart < 230)) >= 3
    # ... and, a few parts after the return, no more alarms than the same noise without the shift gets.
    assert np.count_nonzero(restart >= 234) <= np.count_nonzero(baseline >= 234) + 1
    # Holding the memory keeps flagging normal parts after the return (the problem being fixed).
    assert np.count_nonzero(hold >= 230) > np.count_nonzero(restart >= 230)


def test_persistent_shift_keeps_alarming_periodically() -> None:
    rng = np.random.default_rng(12)
    det = CUSUMChart().fit(rng.normal(size=(500, 1)))
    alarms = _alarm_rows(det, rng.normal(size=(300, 1)) + 1.5)
    gaps = np.diff(alarms)
    # Re-detected over and over (a 1.5σ shift on k = 0.5, h = 5: about every 5-6 parts) ...
    assert len(alarms) > 30 and gaps.max() < 20
    # ... but not on every part: each detection is one signal, then the chart starts over.
    assert len(alarms) < 150


def test_after_alarm_policy_is_saved_and_checked(tmp_path) -> None:
    det = EWMAChart(after_alarm="hold").fit(np.random.default_rng(0).normal(size=(50, 1)))
    det.save(tmp_path / "m")
    assert EWMAChart.load(tmp_path / "m").after_alarm == "hold"
    with pytest.raises(ConfigError, match="after_alarm"):
        CUSUMChart(after_alarm="reset").fit(np.zeros((20, 1)) + np.arange(20)[:, None] % 3)


def test_ewma_state_saved_before_per_column_restarts_still_loads(tmp_path) -> None:
    rng = np.random.default_rng(13)
    det = EWMAChart().fit(rng.normal(size=(100, 2)))
    det.update(rng.normal(size=(5, 2)))
    z, t = det.state_[:2].copy(), det.state_[2]
    det.state_ = np.concatenate([z, [t]])  # the old layout: [z..., shared t]
    det.save(tmp_path / "old")
    back = EWMAChart.load(tmp_path / "old")
    np.testing.assert_allclose(back.state_, [*z, t, t])


@pytest.mark.parametrize("cls", [ShewhartIMR, EWMAChart, CUSUMChart])
def test_update_continues_the_series(cls, tmp_path) -> None:
    rng = np.random.default_rng(4)
    det = cls().fit(rng.normal(size=(200, 3)))
    X = rng.normal(size=(30, 3)) + 0.5
    whole = det.score(X)
    first = det.update(X[:12])
    det.save(tmp_path / "m")  # the carried state travels with the model
    back = cls.load(tmp_path / "m")
    np.testing.assert_allclose(np.concatenate([first, back.update(X[12:])]), whole)
    back.reset()
    np.testing.assert_allclose(back.update(X), whole)


def test_phase1_in_detector_ignores_bad_history() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 1))
    X[::50] += 12.0  # six gross outliers in "known-good" history
    det = ShewhartIMR().fit(X)
    assert det.center_[0] == pytest.approx(0.0, abs=0.15)
    assert det.sigma_[0] == pytest.approx(1.0, rel=0.15)


def test_ewma_and_cusum_beat_shewhart_on_small_shift() -> None:
    # 40 independent replicates as columns: first-alarm time after a sustained 1σ shift.
    rng = np.random.default_rng(6)
    train = rng.normal(size=(500, 40))
    shifted = rng.normal(size=(200, 40)) + 1.0

    def mean_first_alarm(det) -> float:
        alarms = det.fit(train).explain(shifted) > 1.0
        return float(np.where(alarms.any(axis=0), alarms.argmax(axis=0), len(shifted)).mean())

    shewhart = mean_first_alarm(ShewhartIMR())
    assert mean_first_alarm(EWMAChart()) < shewhart / 2
    assert mean_first_alarm(CUSUMChart()) < shewhart / 2


def test_chart_errors() -> None:
    with pytest.raises(NotFittedError):
        EWMAChart().score(np.zeros((3, 1)))
    with pytest.raises(NotFittedError):
        CUSUMChart().reset()
    with pytest.raises(ConfigError, match="lam"):
        EWMAChart(lam=0.0).fit(np.random.default_rng(0).normal(size=(20, 1)))
    with pytest.raises(ConfigError, match="headstart"):
        CUSUMChart(headstart=1.0).fit(np.random.default_rng(0).normal(size=(20, 1)))
    with pytest.raises(DataError, match="1-D"):
        imr_limits(np.zeros((3, 2)))


def test_rule_violations_per_column() -> None:
    det = _set(ShewhartIMR(), center=10.0, sigma=1.0)
    det.center_, det.sigma_ = np.array([10.0, 0.0]), np.array([1.0, 2.0])
    det.mr_bar_ = det.sigma_ * chart_constants(2).d2
    X = np.column_stack([np.full(9, 10.5), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.5]])
    m, names = det.rule_violations(X, rules="nelson")
    assert m.shape == (9, 2, 8)
    assert m[8, 0, names.index("nelson2")] and not m[7, 0, names.index("nelson2")]  # 9 above centre
    assert m[8, 1, names.index("nelson1")] and m[:, 1, :].sum() == 1  # 6.5 / 2 = 3.25σ, nothing else
    with pytest.raises(ConfigError, match="rule set"):
        det.rule_violations(X, rules="aiag")
