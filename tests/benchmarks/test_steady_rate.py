"""A backlog too small to time is refused with what to change, not printed as a rate of 0 or infinity."""

from __future__ import annotations

import pytest

from linewatch.benchmarks.common import steady_rate
from linewatch.errors import ConfigError


def test_rows_after_the_first_batch_over_their_span() -> None:
    assert steady_rate(3000, 1.5, n=5000, what="records") == 2000.0


@pytest.mark.parametrize(("counted", "seconds"), [(0, 0.0), (0, 2.0), (1999, 0.0)])
def test_one_batch_is_no_rate(counted: int, seconds: float) -> None:
    with pytest.raises(ConfigError, match=r"all 2000 records were written in one batch.*larger --records"):
        steady_rate(counted, seconds, n=2000, what="records")


def _run(samples: list[tuple[float, float]]):
    from linewatch.benchmarks.common import WorkerRun

    return WorkerRun(proc=None, log=None, samples=samples)  # type: ignore[arg-type]


def test_memory_flat_while_a_backlog_drains_is_near_zero_and_a_leak_is_not() -> None:
    t = [i * 0.1 for i in range(1000)]  # 100 s of samples at the sampler's pace
    # the first quarter (model loading, the group join) is left out of the comparison
    flat = _run([(x, (900.0 if x < 20 else 500.0) + (x * 7 % 3)) for x in t])
    assert abs(flat.drain_growth_mb(0.0, 100.0)) < 3
    leaking = _run([(x, 500.0 + 2.0 * x) for x in t])  # 2 MB a second
    assert leaking.drain_growth_mb(0.0, 100.0) == 100.0  # medians at 87.5 s and 37.5 s
    assert _run([]).drain_growth_mb(0.0, 100.0) is None
    assert flat.drain_growth_mb(0.0, 0.05) is None  # too short for samples in both quarters
