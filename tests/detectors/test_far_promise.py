"""The false-alarm promise on plant-like normal data: realised rate within [0.5x, 2x] of the target.

The data are autocorrelated and switch between normal regimes (lots, load steps, a wandering
vibration level), which is where the first release's random calibration split broke the promise
(EWMA realised 8x its target here, MEWMA 13x). Each case fits exactly as ``linewatch train``
does and scores later normal data as the live agent does; ``linewatch bench calibration`` prints
the same figures at a larger scale.
"""

from __future__ import annotations

import pytest

from linewatch.benchmarks.calibration import (
    evaluate,
    frames_scenario,
    signals_scenario,
    spc_scenario,
)

TARGET = 0.01


@pytest.fixture(scope="module")
def spc():
    return spc_scenario(n_train=10_000, n_test=20_000, target_far=TARGET)


@pytest.fixture(scope="module")
def signals():
    return signals_scenario(hours_train=12, hours_test=24, target_far=TARGET)


def _within(result: dict) -> None:
    ratio = result["realised_far"] / result["target_far"]
    assert not result["provisional"], result
    assert 0.5 <= ratio <= 2.0, result


@pytest.mark.parametrize("detector", ["hotelling", "robust_mahalanobis", "pca_monitor", "isolation_forest", "ecod"])
def test_stateless_detectors_keep_the_promise(spc, detector):
    _within(evaluate(spc, detector, compare=False))


@pytest.mark.parametrize("detector", ["shewhart_imr", "ewma", "mewma"])
def test_charts_with_memory_keep_the_promise_where_a_random_split_broke_it(spc, detector):
    result = evaluate(spc, detector, compare=detector != "shewhart_imr")
    _within(result)
    if detector != "shewhart_imr":  # memory is what a random split gets wrong
        assert result["realised_far_random_split"] > 4 * TARGET


def test_online_detector_keeps_the_promise(spc):
    _within(evaluate(spc, "half_space_trees", compare=False))


def test_a_cusum_on_drifting_lots_is_provisional_and_says_why(spc):
    # A CUSUM integrates every lot offset: its statistic is too autocorrelated to resolve 1 %.
    result = evaluate(spc, "cusum", compare=False)
    assert result["provisional"] and result["effective_sample_size"] < 1 / TARGET


@pytest.mark.parametrize("detector", ["autoencoder", "online_residual"])
def test_windowed_signal_detectors_keep_the_promise(signals, detector):
    _within(evaluate(signals, detector, compare=False))


def test_image_detector_keeps_the_promise():
    sc = frames_scenario(n_train=200, n_test=300, target_far=0.05, size=64)
    _within(evaluate(sc, "patchcore", compare=False))
