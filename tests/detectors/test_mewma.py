"""MEWMA: reduces to Hotelling at λ = 1, hand-checked recursion, state carried across batches."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.detectors.hotelling import HotellingT2
from linewatch.detectors.mewma import MEWMA
from linewatch.errors import ConfigError, NotFittedError

COV = np.array([[1.0, 0.6], [0.6, 1.0]])


def _normal(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(np.zeros(2), COV, n)


def test_lambda_one_is_hotelling() -> None:
    X, q = _normal(300, 0), _normal(50, 1) * 2
    np.testing.assert_allclose(MEWMA(lam=1.0).fit(X).score(q), HotellingT2().fit(X).score(q), rtol=1e-10)


def test_recursion_by_hand() -> None:
    det = MEWMA(lam=0.5, ridge=0.0).fit(_normal(200, 2))
    det.mean_ = np.zeros(2)
    det.covariance_ = np.eye(2)
    det.whitener_ = np.eye(2)
    s = det.score(np.array([[2.0, 0.0], [0.0, 0.0]]))
    # t=1: Z = (1, 0), var factor λ² = 0.25 -> 1 / 0.25 = 4 (= x'x, as always at t = 1)
    # t=2: Z = (0.5, 0), var factor 0.5/1.5 (1 - 0.5^4) = 0.3125 -> 0.25 / 0.3125 = 0.8
    np.testing.assert_allclose(s, [4.0, 0.8])


def test_update_and_save_carry_state(tmp_path) -> None:
    det = MEWMA().fit(_normal(300, 3))
    X = _normal(40, 4) + 0.5
    whole = det.score(X)
    first = det.update(X[:15])
    det.save(tmp_path / "m")
    back = MEWMA.load(tmp_path / "m")
    np.testing.assert_allclose(np.concatenate([first, back.update(X[15:])]), whole)
    back.reset()
    np.testing.assert_allclose(back.update(X), whole)


def test_small_shift_caught_sooner_than_hotelling() -> None:
    train = _normal(1000, 5)
    calm, shifted = _normal(4000, 6), _normal(300, 7) + np.array([0.75, -0.75])
    # "hold": this compares raw sensitivity point by point, not alarm episodes.
    mewma = MEWMA(lam=0.1, after_alarm="hold").fit(train)
    for det, name in ((mewma, "mewma"), (HotellingT2().fit(train), "hotelling")):
        threshold = np.quantile(det.score(calm), 0.99)  # same 1 % false-alarm rate for both
        hit = (det.score(shifted)[50:] > threshold).mean()
        if name == "mewma":
            mewma_hit = hit
        else:
            hotelling_hit = hit
    assert mewma_hit > 0.8
    assert mewma_hit > 2 * hotelling_hit


def test_errors() -> None:
    with pytest.raises(NotFittedError):
        MEWMA().update(np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="lam"):
        MEWMA(lam=1.5).fit(_normal(50, 0))


def test_restart_after_signal_ends_the_episode_on_return() -> None:
    train = _normal(1000, 8)
    X = _normal(400, 9)
    X[150:180] += np.array([1.5, -1.5])
    restart, hold = MEWMA(lam=0.1).fit(train), MEWMA(lam=0.1, after_alarm="hold").fit(train)
    limit = restart.signal_limit
    alarms = np.flatnonzero(np.concatenate([restart.update(X[i:i + 9]) for i in range(0, 400, 9)]) > limit)
    held = np.flatnonzero(hold.score(X) > limit)
    assert alarms.min() < 160 and np.count_nonzero((alarms >= 150) & (alarms < 180)) >= 3
    assert np.count_nonzero(alarms >= 185) <= 1
    assert np.count_nonzero(held >= 180) > np.count_nonzero(alarms >= 180)
    with pytest.raises(ConfigError, match="after_alarm"):
        MEWMA(after_alarm="never").fit(train)
