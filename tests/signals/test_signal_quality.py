"""Data-quality gate: each broken-sensor pattern gets its own reason, healthy signals get none."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.errors import ConfigError, DataError
from linewatch.signals.quality import Issue, QualityGate, SensorLimits, longest_run

M = 2048


def _healthy(n: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(M) / 10_000.0
    return np.sin(2 * np.pi * 120 * t) + 0.2 * rng.normal(size=(n, M))


def test_healthy_windows_pass() -> None:
    limits = SensorLimits(low=-50, high=50, rail_low=-10, rail_high=10, resolution=1e-4)
    gate = QualityGate(limits={"vib": limits})
    rep = gate.check(_healthy(), sensors="vib")
    assert rep.ok.all() and not rep.suppress and rep.bad_sensors() == {}


def test_quantised_16_bit_sine_is_not_called_clipped() -> None:
    lsb = 20.0 / 65536  # ±10 V converter
    x = np.round(3.0 * np.sin(2 * np.pi * 50 * np.arange(M) / 10_000.0) / lsb) * lsb
    assert QualityGate().check(x[None, :], sensors="vib").ok.all()


@pytest.mark.parametrize(
    ("mutate", "issue"),
    [
        (lambda x: np.full_like(x, 1.25), Issue.FLATLINE),
        (lambda x: np.concatenate([x[: M // 2], np.full(M // 2, x[M // 2])]), Issue.STUCK),
        (lambda x: np.clip(x * 4, -2.0, 2.0), Issue.SATURATED),
        (lambda x: np.where(np.arange(M) == 7, 900.0, x), Issue.OUT_OF_RANGE),
        (lambda x: np.where(np.arange(M) == 7, np.nan, x), Issue.NAN),
    ],
)
def test_each_fault_gets_its_reason(mutate, issue: Issue) -> None:
    x = _healthy(1)[0]
    gate = QualityGate(limits={"vib": SensorLimits(low=-50, high=50)})
    rep = gate.check(np.stack([x, mutate(x)]), sensors="vib")
    assert rep.codes[0] == 0
    assert rep.codes[1] & issue, rep.reasons()
    assert rep.suppress and issue.name.lower() in rep.bad_sensors()["vib"]


def test_rails_make_saturation_explicit() -> None:
    x = _healthy(1)[0] * 0.5
    x[100:140] = 5.0  # 40 samples on the +5 V rail: 2 % of the window
    gate = QualityGate(limits={"v": SensorLimits(rail_low=-5.0, rail_high=5.0)})
    assert gate.check(x[None, :], sensors="v").codes[0] == Issue.SATURATED
    x[100:140] = 4.0  # the same plateau below the rail is not saturation when rails are known
    assert gate.check(x[None, :], sensors="v").codes[0] == 0


def test_missing_samples_from_the_present_mask() -> None:
    x = _healthy(2)
    present = np.ones_like(x, dtype=bool)
    present[1, : M // 2] = False
    x[1, : M // 2] = np.nan  # absent, not implausible
    rep = QualityGate().check(x, sensors=["a", "b"], present=present)
    assert rep.codes.tolist() == [0, int(Issue.MISSING)]
    assert rep.missing_fraction[1] == pytest.approx(0.5)


def test_longest_run_and_config_errors() -> None:
    m = np.array([[0, 1, 1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=bool)
    assert longest_run(m).tolist() == [4, 8]
    with pytest.raises(ConfigError):
        QualityGate(stuck_fraction=1.5)
    with pytest.raises(ConfigError):
        SensorLimits(low=5.0, high=1.0)
    with pytest.raises(DataError, match="one per row"):
        QualityGate().check(np.zeros((2, 10)), sensors=["a"])
