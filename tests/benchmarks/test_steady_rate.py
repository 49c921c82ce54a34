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
