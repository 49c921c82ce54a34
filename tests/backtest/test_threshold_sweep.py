"""Threshold sweep and recommendation on autocorrelated, drifting history, checked against a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from linewatch.backtest.threshold_sweep import ThresholdChoice, recommend, sweep
from linewatch.errors import ConfigError, DataError


def history(seed: int = 3, n: int = 6000, *, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An AR(1) normal stream (phi 0.9) on a slow drift, with a labelled +2.5 sigma shift in rows 4000-4299.

    Scored as -log10 of a one-sided normal tail against the *initial* mean: the drift makes
    late normal events look worse, as it does on a line whose process wanders.
    """
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n) * math.sqrt(1 - 0.9**2)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = 0.9 * x[i - 1] + e[i]
    x += np.linspace(0.0, 0.8, n)
    labels = np.zeros(n, dtype=bool)
    labels[4000:4300] = True
    x[labels] += 2.5
    scores = -np.log10(np.clip(norm.sf(x), 1e-300, 1.0))
    return (np.round(scores, 1) if ties else scores), labels


def loop_counts(scores: np.ndarray, labels: np.ndarray, thr: float) -> tuple[int, int]:
    """``(fp, tp)`` at one threshold, the slow obvious way (NaN never alarms)."""
    alarm = np.array([s >= thr if not math.isnan(s) else False for s in scores])
    return int((alarm & ~labels).sum()), int((alarm & labels).sum())


@pytest.mark.parametrize("ties", [False, True])
def test_sweep_matches_a_loop_over_thresholds(ties):
    scores, labels = history(ties=ties)
    scores[::97] = np.nan  # a detector that sometimes was not ready
    r = sweep(scores, labels)
    assert np.all(np.diff(r["threshold"]) > 0) and r["threshold"][-1] == np.inf
    if ties:
        assert r["threshold"].size < 200  # rounding left many ties, one candidate each
    n_normal, n_anom = int((~labels).sum()), int(labels.sum())
    for k in np.linspace(0, r["threshold"].size - 1, 25).astype(int):
        fp, tp = loop_counts(scores, labels, r["threshold"][k])
        assert (r["fp"][k], r["tp"][k]) == (fp, tp)
        assert r["far"][k] == fp / n_normal and r["recall"][k] == tp / n_anom
        assert (math.isnan(r["precision"][k]) if fp + tp == 0 else r["precision"][k] == tp / (tp + fp))


def test_sweep_with_given_thresholds_sorts_and_refuses_nan():
    scores, labels = history(n=500)
    r = sweep(scores, labels, np.array([3.0, 1.0, 2.0, 1.0]))
    assert r["threshold"].tolist() == [1.0, 2.0, 3.0]
    assert [(int(a), int(b)) for a, b in zip(r["fp"], r["tp"], strict=True)] == [
        loop_counts(scores, labels, t) for t in (1.0, 2.0, 3.0)]
    with pytest.raises(DataError, match="NaN"):
        sweep(scores, labels, np.array([1.0, np.nan]))


@pytest.mark.parametrize("target", [0.05, 0.01, 0.002])
def test_target_far_is_the_lowest_threshold_meeting_it(target):
    scores, labels = history()
    c = recommend(scores, labels, target_far=target)
    r = sweep(scores, labels)
    k = int(np.searchsorted(r["threshold"], c.threshold))
    assert c.far <= target and r["far"][k] == c.far
    assert r["far"][k - 1] > target  # one candidate lower breaks the target
    assert c.recall == r["recall"][k] and c.n_normal == 5700 and c.n_anomalous == 300
    assert "at most" in c.reason and "resolve" not in c.reason and c.cost is None


def test_target_far_the_history_cannot_resolve_falls_back_and_says_so():
    scores, labels = history(n=1000)
    labels[:] = False
    labels[600:650] = True  # 950 normal events
    c = recommend(scores, labels, target_far=1e-4)  # needs ~30000 normal events
    assert "cannot resolve" in c.reason and "30000" in c.reason
    assert c.far <= 3 / 950 + 1e-12
    r = sweep(scores, labels)
    k = int(np.searchsorted(r["threshold"], c.threshold))
    assert r["fp"][k] <= 3 and r["fp"][k - 1] > 3


def test_costs_pick_the_cheapest_and_move_with_the_ratio():
    scores, labels = history()
    r = sweep(scores, labels)
    fn = 300 - r["tp"]
    chosen = []
    for escape in (1.0, 10.0, 100.0):
        c = recommend(scores, labels, cost_false_reject=1.0, cost_escape=escape)
        brute = r["fp"] + escape * fn
        k = int(np.argmin(brute))
        assert c.threshold == r["threshold"][k] and c.cost == brute.min()
        chosen.append(c.threshold)
    assert chosen[0] >= chosen[1] >= chosen[2] and chosen[0] > chosen[2]  # dearer escapes, lower threshold


def test_costs_with_a_far_target_take_the_cheapest_feasible():
    scores, labels = history()
    free = recommend(scores, labels, cost_false_reject=1.0, cost_escape=1000.0)
    capped = recommend(scores, labels, target_far=0.001, cost_false_reject=1.0, cost_escape=1000.0)
    assert free.far > 0.001 >= capped.far and capped.threshold > free.threshold
    assert "at most" in capped.reason and "minimises" in capped.reason


def test_ties_go_to_the_lower_threshold():
    scores = np.array([1.0, 2.0, 3.0, 3.0])
    labels = np.array([0, 1, 0, 1], bool)
    # threshold 2: fp 1 (3.0), fn 0 -> cost 1; threshold 3: fp 1, fn 1 -> 2; threshold 1: fp 2 -> 2; inf: fn 2 -> 2
    c = recommend(scores, labels, cost_false_reject=1.0, cost_escape=1.0)
    assert (c.threshold, c.cost) == (2.0, 1.0)
    even = recommend(np.array([1.0, 2.0]), np.array([0, 1], bool), cost_false_reject=1.0, cost_escape=1.0)
    assert (even.threshold, even.cost, even.precision) == (2.0, 0.0, 1.0)


def test_all_normal_history():
    scores, _ = history(n=3000)
    labels = np.zeros(scores.size, dtype=bool)
    c = recommend(scores, labels, target_far=0.01)
    assert c.recall is None and c.n_anomalous == 0 and c.far <= 0.01
    by_cost = recommend(scores, labels, cost_false_reject=1.0, cost_escape=5.0)
    assert by_cost.threshold == math.inf and by_cost.cost == 0.0 and by_cost.precision is None
    assert "no anomalous event" in by_cost.reason and "never alarm" in by_cost.reason


def test_all_anomalous_history():
    scores, _ = history(n=500)
    labels = np.ones(scores.size, dtype=bool)
    with pytest.raises(DataError, match="0 normal events"):
        recommend(scores, labels, target_far=0.01)
    c = recommend(scores, labels, cost_false_reject=1.0, cost_escape=1.0)
    assert c.threshold == np.nanmin(scores) and c.recall == 1.0 and c.far is None and c.cost == 0.0


def test_nan_scores_never_alarm_but_still_count():
    scores = np.array([np.nan, 0.5, 4.0, np.nan, 1.0, 5.0])
    labels = np.array([0, 0, 1, 1, 0, 1], bool)
    c = recommend(scores, labels, cost_false_reject=1.0, cost_escape=1.0)
    # threshold 4: no false alarm, the NaN anomalous event escapes: cost 1, recall 2/3, far 0 of 3
    assert (c.threshold, c.cost, c.recall, c.far, c.n_normal, c.n_anomalous) == (4.0, 1.0, 2 / 3, 0.0, 3, 3)


def test_deterministic_and_order_free():
    scores, labels = history()
    a = recommend(scores, labels, target_far=0.01, cost_false_reject=1.0, cost_escape=20.0)
    perm = np.random.default_rng(0).permutation(scores.size)
    b = recommend(scores[perm], labels[perm], target_far=0.01, cost_false_reject=1.0, cost_escape=20.0)
    assert isinstance(a, ThresholdChoice) and a == b


def test_what_to_ask_for_is_said():
    scores, labels = history(n=200)
    with pytest.raises(ConfigError, match="target_far, or cost_false_reject"):
        recommend(scores, labels)
    with pytest.raises(ConfigError, match="both"):
        recommend(scores, labels, cost_escape=3.0)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        recommend(scores, labels, target_far=5.0)
    with pytest.raises(DataError, match="one per score"):
        recommend(scores, labels[:-1], target_far=0.1)
