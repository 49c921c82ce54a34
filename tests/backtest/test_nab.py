"""The NAB score against NAB's own test cases (numenta/NAB ``tests/``), figure for figure.

Each case names the NAB test it comes from. NAB builds its fixtures with
``nab/test_helpers.py``: five-minute timestamps and ``generateWindows(timestamps, k, size)``,
whose window ``j`` starts at row ``round((n - k*size) / (k+1)) * (j+1) + size*j``; :func:`nab_windows`
rebuilds exactly those rows. NAB's integration tests run with ``probationPercent=0`` and their
own cost matrices (``tpWeight = fnWeight = fpWeight = 1`` unless a test says otherwise), so
these do too; NAB compares scores with ``assertEqual`` where we use ``==`` and with
``assertAlmostEquals(..., 4)`` where we use ``abs(...) < 5e-5``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from linewatch.backtest.nab import (
    PROFILES,
    NabProfile,
    corpus_score,
    nab_score,
    nab_scores,
    probationary_length,
    row_weights,
    scaled_sigmoid,
    window_rows,
)
from linewatch.errors import ConfigError, DataError

ONES = NabProfile(tp=1.0, fp=1.0, fn=1.0)  # the cost matrix of NAB's integration tests


def stamps(n: int) -> np.ndarray:
    """NAB's ``generateTimestamps``: ``n`` times five minutes apart."""
    return np.datetime64("2026-01-01T00:00", "us") + np.arange(n) * np.timedelta64(5, "m")


def nab_windows(t: np.ndarray, k: int, size: int) -> list[tuple[np.datetime64, np.datetime64]]:
    """NAB's ``generateWindows``: ``k`` windows of ``size`` rows, evenly spaced."""
    gap = math.floor((len(t) - k * size) / (k + 1) + 0.5)  # Python 2 round, as NAB ran it
    firsts = [gap * (j + 1) + size * j for j in range(k)]
    return [(t[f], t[f + size - 1]) for f in firsts]


def fire(n: int, *rows: int) -> np.ndarray:
    d = np.zeros(n, dtype=bool)
    d[list(rows)] = True
    return d


def score(n: int, k: int, size: int, rows: tuple[int, ...], profile: NabProfile = ONES):
    t = stamps(n)
    return nab_score(t, fire(n, *rows), nab_windows(t, k, size), profile, probationary_percent=0.0)


def counts(r) -> tuple[int, int, int, int]:
    return r.tn, r.tp, r.fp, r.fn  # NAB's _checkCounts order


def sigma(x: float) -> float:
    """The scaled sigmoid written out once more, for the hand arithmetic below."""
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


# --- tests/integration/scorer_test.py -------------------------------------------------------------

def test_null_case():
    """scorer_test.testNullCase: no windows, no detections -> 0.0; tn 10."""
    r = score(10, 0, 0, ())
    assert r.raw == 0.0 and counts(r) == (10, 0, 0, 0)
    assert r.normalized is None  # no window: NAB's normalisation has nothing to divide by


def test_false_positive_scaling():
    """scorer_test.testFalsePositiveScaling: fp weight 0.11, 20 random sets of 10 detections average in [-1.5, 0.5].

    NAB draws with ``random.sample`` unseeded; we seed, so this run is repeatable.
    """
    rng = np.random.default_rng(12)
    prof = NabProfile(tp=1.0, fp=0.11, fn=1.0)
    raws = [score(100, 1, 10, tuple(rng.choice(100, size=10, replace=False)), prof).raw for _ in range(20)]
    assert -1.5 <= float(np.mean(raws)) <= 0.5


def test_reward_low_false_negatives():
    """scorer_test.testRewardLowFalseNegatives: a missed window scores half under fn=1 of what it does under fn=2."""
    standard = score(100, 1, 10, ())
    low_fn = score(100, 1, 10, (), NabProfile(tp=1.0, fp=0.055, fn=2.0))
    assert standard.raw == 0.5 * low_fn.raw == -1.0
    assert counts(standard) == counts(low_fn) == (90, 0, 0, 10)


def test_reward_low_false_positives():
    """scorer_test.testRewardLowFalsePositives: one FP, no windows: -1 under fp=1, -2 under fp=2."""
    standard = score(100, 0, 10, (0,))
    low_fp = score(100, 0, 10, (0,), NabProfile(tp=1.0, fp=2.0, fn=0.5))
    assert standard.raw == 0.5 * low_fp.raw == -1.0
    assert counts(standard) == counts(low_fp) == (99, 0, 1, 0)


def test_scoring_all_metrics():
    """scorer_test.testScoringAllMetrics: TP, second TP and FP in two windows of 5 in 100 rows -> -0.9540.

    Windows are rows 30-34 and 65-69. Row 30 earns 1.0 (first row), row 31 nothing more (only
    the best detection counts), window 2 is missed (-1), and row 37 is 3 rows past a 5-row
    window: sigma(3/4) = 2/(1+e^3.75) - 1 = -0.95405.
    """
    r = score(100, 2, 5, (30, 31, 37))
    assert abs(r.raw - (1.0 - 1.0 + sigma(0.75))) < 1e-12
    assert abs(r.raw - -0.9540) < 5e-5
    assert counts(r) == (89, 2, 1, 8)


# --- tests/integration/true_positive_test.py -----------------------------------------------------

def test_first_true_positive_within_window():
    """true_positive_test.testFirstTruePositiveWithinWindow: a hit on a window's first row scores exactly tpWeight."""
    r = score(10, 1, 2, (4,))
    assert r.raw == 1.0
    assert counts(r) == (8, 1, 0, 1)


def test_earlier_true_positive_is_better():
    """true_positive_test.testEarlierTruePositiveIsBetter: row 4 (window start) beats row 5 (its last row).

    Row 5: x = -(5 - 5 + 1)/2 = -0.5, so sigma(-0.5)/sigma(-1) = 0.848284/0.986614 = 0.859793.
    """
    early, late = score(10, 1, 2, (4,)), score(10, 1, 2, (5,))
    assert early.raw > late.raw
    assert abs(late.raw - sigma(-0.5) / sigma(-1.0)) < 1e-12 and abs(late.raw - 0.859793) < 5e-7
    assert counts(early) == counts(late) == (8, 1, 0, 1)


def test_only_first_true_positive_within_window_counts():
    """true_positive_test.testOnlyScoreFirstTruePositiveWithinWindow: a second hit in the window adds nothing."""
    one, two = score(10, 1, 2, (4,)), score(10, 1, 2, (4, 5))
    assert one.raw == two.raw == 1.0
    assert counts(one) == (8, 1, 0, 1) and counts(two) == (8, 2, 0, 0)


def test_true_positives_with_different_window_sizes():
    """true_positive_test.testTruePositivesWithDifferentWindowSizes: a first-row hit scores alike for 2 and 3 rows."""
    two, three = score(10, 1, 2, (4,)), score(10, 1, 3, (4,))
    assert two.raw == three.raw == 1.0
    assert counts(two) == (8, 1, 0, 1) and counts(three) == (7, 1, 0, 2)


def test_true_positive_at_right_edge_of_window():
    """true_positive_test.testTruePositiveAtRightEdgeOfWindow: last row of a 100-row window and the row after sum to ~0.

    Window rows 450-549 in 1000. Row 549: sigma(-1/100)/sigma(-1) = +0.025334; row 550 (an FP
    one row past a 100-row window): sigma(1/99) - 1 (the then missed window) = -1.025247.
    NAB: ``score1 + score2 + 1`` is 0 to 3 places; here 8.7e-5.
    """
    tp, fp = score(1000, 1, 100, (549,)), score(1000, 1, 100, (550,))
    assert abs(tp.raw - sigma(-0.01) / sigma(-1.0)) < 1e-12
    assert abs(fp.raw - (sigma(1 / 99) - 1.0)) < 1e-12
    assert abs(tp.raw + fp.raw + 1.0) < 5e-4
    assert counts(tp) == (900, 1, 0, 99) and counts(fp) == (899, 0, 1, 100)


# --- tests/integration/false_positive_test.py ----------------------------------------------------

def test_false_positive_means_negative_score():
    """false_positive_test.testFalsePositiveMeansNegativeScore: an FP before the window: -1 (FP) - 1 (missed) = -2."""
    r = score(1000, 1, 10, (0,))
    assert r.raw < 0 and r.raw == -2.0
    assert counts(r) == (989, 0, 1, 10)


def test_two_false_positives_are_worse_than_one():
    """false_positive_test.testTwoFalsePositivesIsWorseThanOne: -2 with one FP, -3 with two."""
    one, two = score(1000, 1, 10, (0,)), score(1000, 1, 10, (0, 1))
    assert two.raw < one.raw and (one.raw, two.raw) == (-2.0, -3.0)
    assert counts(one) == (989, 0, 1, 10) and counts(two) == (988, 0, 2, 10)


def test_one_false_positive_no_window():
    """false_positive_test.testOneFalsePositiveNoWindow: without windows an FP costs exactly -fpWeight."""
    r = score(1000, 0, 10, (0,))
    assert r.raw == -1.0 and counts(r) == (999, 0, 1, 0)


def test_earlier_false_positive_after_window_is_better():
    """false_positive_test.testEarlierFalsePositiveAfterWindowIsBetter: 1 row after a 2-row window beats 2 rows after.

    Window rows 4-5: row 6 is x = 1/(2-1) = 1, sigma(1) = -0.986614; row 7 is x = 2, sigma(2) =
    -0.999909; each also misses the window (-1).
    """
    near, far = score(10, 1, 2, (6,)), score(10, 1, 2, (7,))
    assert near.raw > far.raw
    assert abs(near.raw - (sigma(1.0) - 1.0)) < 1e-12 and abs(far.raw - (sigma(2.0) - 1.0)) < 1e-12
    assert abs(near.raw - -1.986614) < 5e-7 and abs(far.raw - -1.999909) < 5e-7
    assert counts(near) == counts(far) == (7, 0, 1, 2)


# --- tests/integration/false_negative_test.py ----------------------------------------------------

def test_false_negative_causes_negative_score():
    """false_negative_test.testFalseNegativeCausesNegativeScore: one missed window costs exactly -fnWeight."""
    r = score(1000, 1, 10, ())
    assert r.raw == -1.0 and counts(r) == (990, 0, 0, 10)


def test_four_false_negatives():
    """false_negative_test.testFourFalseNegatives: four missed windows cost -4 fnWeight."""
    r = score(2000, 4, 10, ())
    assert r.raw == -4.0 and counts(r) == (1960, 0, 0, 40)
    assert r.windows_scored == 4 and r.windows_detected == 0


# --- tests/integration/sweeper_test.py -----------------------------------------------------------

@pytest.mark.parametrize(("n", "pct", "expected"), [
    (100, 0.0, 0), (100, 1.0, 100), (100, 0.1, 10), (100, 0.15, 15), (5000, 0.1, 500), (6000, 0.1, 500),
])
def test_probationary_length(n, pct, expected):
    """sweeper_test.testGetProbationaryLength, all six rows (the last one is NAB's 5000-row cap)."""
    assert probationary_length(n, pct) == expected


def test_sweep_weights_positive_in_windows_negative_outside():
    """sweeper_test.testCalcSweepScoreWindowScoreInteraction: windows 30-39 and 75-95 of 100 rows, fp 0.11.

    Every row inside a window would score positive, every other row negative; 31 rows are in
    windows and probation at 10 % is 10 rows.
    """
    t = np.arange(100.0)
    spans = window_rows(t, [(30.0, 39.0), (75.0, 95.0)])
    weight, window = row_weights(100, spans, NabProfile(tp=1.0, fp=0.11, fn=1.0))
    assert int((window >= 0).sum()) == 31
    assert (weight[window >= 0] > 0).all() and (weight[window < 0] < 0).all()
    assert probationary_length(100, 0.1) == 10


# --- normalisation (NAB runner.normalize: 100 * (raw - null) / (perfect - null)) ----------------

def test_normalisation_null_perfect_and_between():
    """Derived by hand from the formula (NAB's normalize_test checks it through result files only).

    testScoringAllMetrics' detections: raw -0.95405, null = 2 windows * -1 = -2, perfect = 2 *
    1 = 2, so 100 * (-0.95405 + 2) / 4 = 26.149.
    """
    assert score(100, 2, 5, ()).normalized == 0.0
    assert score(100, 2, 5, (30, 65)).normalized == 100.0
    r = score(100, 2, 5, (30, 31, 37))
    assert abs(r.normalized - 100 * (sigma(0.75) + 2) / 4) < 1e-9 and abs(r.normalized - 26.149) < 5e-4


def test_probation_drops_early_rows_and_windows():
    """A window wholly in probation is not scored, nor is a detection there (NAB's 'probationary' rows)."""
    t = stamps(100)  # probation at 15 %: rows 0-14
    early, late = (t[2], t[5]), (t[60], t[69])
    r = nab_score(t, fire(100, 3, 60), [early, late], "standard")
    assert r.windows_scored == 1 and r.raw == 1.0 and r.normalized == 100.0
    assert (r.tp, r.fp) == (1, 0)


def test_window_straddling_probation_keeps_only_its_later_rows():
    """Rows 10-19 with probation 0-14: a hit on row 12 is ignored (the window is missed, -1); one on row 16
    still earns the position it has in the whole 10-row window, sigma(-(19-16+1)/10)/sigma(-1) = 0.77193."""
    t = stamps(100)
    window = [(t[10], t[19])]
    assert nab_score(t, fire(100, 12), window).raw == -1.0
    late = nab_score(t, fire(100, 16), window)
    assert late.raw == pytest.approx(sigma(-0.4) / sigma(-1.0), abs=1e-12) and abs(late.raw - 0.77193) < 5e-6
    assert (late.tp, late.fn) == (1, 4)  # rows 15-19 are scored: one hit, four without


def test_profiles_are_nabs():
    """config/profiles.json of NAB v1.0."""
    assert PROFILES["standard"] == NabProfile(1.0, 0.11, 1.0)
    assert PROFILES["reward_low_fp"] == NabProfile(1.0, 0.22, 1.0)
    assert PROFILES["reward_low_fn"] == NabProfile(1.0, 0.11, 2.0)


def test_nab_scores_under_the_three_profiles():
    """Hand arithmetic: windows at rows 60-69 and 130-139 of 200; hits on row 60 and row 100.

    Row 60 earns tp = 1; row 100 is 31 rows past a 10-row window, x = 31/9 >= 3, so it costs the
    full -fp; window 2 is missed (-fn). Normalised with null = -2 fn, perfect = 2:
    standard 100 * (1 - 0.11 - 1 + 2) / 4 = 47.25; low FP 100 * (1 - 0.22 - 1 + 2) / 4 = 44.5;
    low FN 100 * (1 - 0.11 - 2 + 4) / 6 = 48.1667 (the missed window costs twice, but so does
    the null detector's).
    """
    t = stamps(200)
    windows = nab_windows(t, 2, 10)
    s = nab_scores(t, fire(200, 60, 100), windows, probationary_percent=0.0)
    assert list(s) == ["nab_score_standard", "nab_score_low_fp", "nab_score_low_fn"]
    assert s["nab_score_standard"] == pytest.approx(47.25, abs=1e-9)
    assert s["nab_score_low_fp"] == pytest.approx(44.5, abs=1e-9)
    assert s["nab_score_low_fn"] == pytest.approx(100 * 2.89 / 6, abs=1e-9)


def _walk(n: int, d: np.ndarray, spans: list[tuple[int, int]], prof: NabProfile, prob: int) -> float:
    """NAB's definition row by row, written plainly, as the oracle for the vectorised weights."""
    best: dict[int, float] = {}
    raw, prev = 0.0, None
    for i in range(n):
        cur = next((j for j, (s, e) in enumerate(spans) if s <= i < e), None)
        if cur is not None:
            s, e = spans[cur]
            w = sigma(-((e - 1) - i + 1) / (e - s)) / sigma(-1.0) * prof.tp
        else:
            x = 3.0 if prev is None else ((i - (spans[prev][1] - 1)) / (spans[prev][1] - spans[prev][0] - 1)
                                          if spans[prev][1] - spans[prev][0] > 1 else 2.0)
            w = (-1.0 if x >= 3.0 else sigma(x)) * prof.fp
        if i >= prob:
            if cur is not None:
                best.setdefault(cur, -prof.fn)
                if d[i]:
                    best[cur] = max(best[cur], w)
            elif d[i]:
                raw += w
        if cur is not None and i == spans[cur][1] - 1:
            prev = cur
    return raw + sum(best.values())


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_matches_the_row_walk(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    t = stamps(n)
    cuts = np.sort(rng.choice(np.arange(5, n - 5), size=6, replace=False))
    windows = [(t[a], t[b]) for a, b in zip(cuts[0::2], cuts[1::2], strict=True)] + [(t[n - 2], t[n - 2])]
    d = rng.random(n) < 0.05
    for name, prof in PROFILES.items():
        r = nab_score(t, d, windows, name)
        expected = _walk(n, d, window_rows(t, windows), prof, probationary_length(n, 0.15))
        assert abs(r.raw - expected) < 1e-12, name


def test_scaled_sigmoid_reference_points():
    """NAB's docstring: -1 -> 0.98661, -0.5 -> 0.84828, 0 -> 0, 1 -> -0.98661; 3 and beyond -> -1."""
    got = scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.0, 50.0, 1e6]))
    assert np.allclose(got, [0.98661, 0.84828, 0.0, -0.98661, -1.0, -1.0, -1.0], atol=5e-6)


def test_bad_inputs_say_what_to_do():
    t = stamps(20)
    with pytest.raises(DataError, match="overlap"):
        nab_score(t, fire(20, 3), [(t[2], t[8]), (t[5], t[10])])
    with pytest.raises(DataError, match="sorted"):
        nab_score(t[::-1], fire(20, 3), [])
    with pytest.raises(DataError, match="one flag per time"):
        nab_score(t, fire(19, 3), [])
    with pytest.raises(ConfigError, match="standard"):
        nab_score(t, fire(20, 3), [], "strict")


def test_corpus_score_sums_before_normalising():
    """NAB's runner.normalize over a corpus: one stream with 2 windows both caught (raw 2, null -2, perfect 2)
    and one with 1 window missed (raw -1, null -1, perfect 1): 100 * (1 - -3) / (3 - -3) = 66.67, not the
    mean of 100 and 0."""
    both = score(100, 2, 5, (30, 65))
    missed = score(100, 1, 10, ())
    assert (both.normalized, missed.normalized) == (100.0, 0.0)
    assert corpus_score([both, missed]) == pytest.approx(200 / 3)
    assert corpus_score([score(10, 0, 0, ())]) is None
