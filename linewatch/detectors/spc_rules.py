"""Western Electric and Nelson run rules, vectorised over a whole standardised series.

Why run rules
-------------
A 3σ limit alone reacts slowly to small sustained shifts and not at all to patterns
(trends, stratification, over-adjustment). Run rules look at the recent *sequence* of
points on a Shewhart chart and flag non-random patterns, which SPC engineers expect
to see next to any ML score. They assume independent, normally distributed points, so
they belong on Shewhart charts (individuals or X-bar) only: EWMA and CUSUM statistics
are autocorrelated by construction and would trip the run rules constantly.

Input is the chart's statistic standardised by its centre line and σ,
``z = (x - centre) / σ`` (e.g. :meth:`linewatch.detectors.spc_charts.ShewhartIMR.standardize`,
or ``(xbar - centre) / (σ/√n)`` for an X-bar chart). Output is a boolean ``(n, n_rules)``
matrix and the rule names. A rule is flagged at the point that *completes* the pattern,
which is the point at which a live chart would raise it; for the "k of m beyond a zone"
rules the flagged point must itself lie in that zone on that side, so a flag always sits
on a point an engineer would circle. A point exactly on the centre line belongs to
neither side and breaks same-side runs; an exact tie between neighbours breaks trends
and alternations.

Rules (Nelson 1984 numbering; WE = Western Electric handbook 1956)

==========  =====================================================  ==========
name        pattern                                                WE rule
==========  =====================================================  ==========
nelson1     1 point beyond 3σ                                      we1
nelson2     9 points in a row on the same side of the centre        (we4: 8)
nelson3     6 points in a row steadily increasing or decreasing
nelson4     14 points in a row alternating up and down
nelson5     2 of 3 points beyond 2σ, same side                     we2
nelson6     4 of 5 points beyond 1σ, same side                     we3
nelson7     15 points in a row within 1σ (stratification)
nelson8     8 points in a row beyond 1σ, either side (mixture)
==========  =====================================================  ==========

>>> import numpy as np
>>> z = np.array([0.5, 2.5, 0.1, 2.2, 3.5])
>>> m, names = western_electric(z)
>>> names
('we1', 'we2', 'we3', 'we4')
>>> m.astype(int).tolist()
[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from linewatch.errors import ConfigError, DataError

WESTERN_ELECTRIC_RULES: tuple[str, ...] = ("we1", "we2", "we3", "we4")
NELSON_RULES: tuple[str, ...] = tuple(f"nelson{i}" for i in range(1, 9))


def _as_series(z: Any) -> np.ndarray:
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"run rules take one standardised series (1-D), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError("run rules: the series contains NaN or infinite values; drop or impute them first")
    return arr


def _window_count(indicator: np.ndarray, width: int) -> np.ndarray:
    """Number of true values among the last ``width`` points at each index.

    Near the start the window is partial (the points seen so far): two points beyond 2σ
    at the very start already *are* "2 of 3", and a live chart must not wait for a third.
    """
    csum = np.concatenate([[0], np.cumsum(indicator, dtype=np.int64)])
    idx = np.arange(1, indicator.size + 1)
    return csum[idx] - csum[np.maximum(idx - width, 0)]


def _run_of(indicator: np.ndarray, length: int) -> np.ndarray:
    """True where the last ``length`` values of ``indicator`` are all true."""
    return _window_count(indicator, length) == length


def beyond(z: Any, k: float) -> np.ndarray:
    """Rule 1 generalised: ``|z| > k`` (a point exactly on the limit is in control).

    >>> beyond([2.9, 3.0, -3.1], 3.0).tolist()
    [False, False, True]
    """
    return np.abs(_as_series(z)) > k


def k_of_m_beyond(z: Any, *, k: int, m: int, sigma: float) -> np.ndarray:
    """``k`` of the last ``m`` points beyond ``sigma`` on one side, the current point among them.

    >>> k_of_m_beyond([2.1, 0.0, 2.5], k=2, m=3, sigma=2.0).tolist()
    [False, False, True]
    """
    z = _as_series(z)
    hi, lo = z > sigma, z < -sigma
    return (hi & (_window_count(hi, m) >= k)) | (lo & (_window_count(lo, m) >= k))


def same_side_run(z: Any, length: int) -> np.ndarray:
    """``length`` points in a row strictly on one side of the centre line.

    >>> same_side_run([1.0, 0.2, 0.3, -0.1], 3).tolist()
    [False, False, True, False]
    """
    z = _as_series(z)
    return _run_of(z > 0, length) | _run_of(z < 0, length)


def trend(z: Any, length: int) -> np.ndarray:
    """``length`` points in a row each strictly above (or each below) the one before.

    >>> trend([0.0, 1.0, 2.0, 3.0, 2.0], 4).tolist()
    [False, False, False, True, False]
    """
    z = _as_series(z)
    out = np.zeros(z.size, dtype=bool)
    d = np.diff(z)
    out[1:] = _run_of(d > 0, length - 1) | _run_of(d < 0, length - 1)
    return out


def alternating(z: Any, length: int) -> np.ndarray:
    """``length`` points in a row alternating up and down (``length - 2`` sign flips in a row).

    >>> alternating([0.0, 1.0, 0.0, 1.0, 0.0], 4).tolist()
    [False, False, False, True, True]
    """
    z = _as_series(z)
    out = np.zeros(z.size, dtype=bool)
    d = np.sign(np.diff(z))
    flips = d[1:] * d[:-1] < 0  # flip between diff i-1 and diff i; index j ends at point j + 2
    out[2:] = _run_of(flips, length - 2)
    return out


def within_run(z: Any, *, length: int, sigma: float) -> np.ndarray:
    """``length`` points in a row with ``|z| < sigma`` (too little variation: stratification)."""
    z = _as_series(z)
    return _run_of(np.abs(z) < sigma, length)


def outside_run(z: Any, *, length: int, sigma: float) -> np.ndarray:
    """``length`` points in a row with ``|z| > sigma``, either side (a mixture of two processes)."""
    z = _as_series(z)
    return _run_of(np.abs(z) > sigma, length)


def western_electric(z: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """The four Western Electric zone rules; ``(n, 4)`` booleans and their names."""
    z = _as_series(z)
    cols = [
        beyond(z, 3.0),
        k_of_m_beyond(z, k=2, m=3, sigma=2.0),
        k_of_m_beyond(z, k=4, m=5, sigma=1.0),
        same_side_run(z, 8),
    ]
    return np.column_stack(cols), WESTERN_ELECTRIC_RULES


def nelson(z: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """Nelson's eight tests; ``(n, 8)`` booleans and their names.

    >>> m, names = nelson(np.arange(7.0) * 0.1)        # a steady climb
    >>> names[2], m[:, 2].astype(int).tolist()
    ('nelson3', [0, 0, 0, 0, 0, 1, 1])
    """
    z = _as_series(z)
    cols = [
        beyond(z, 3.0),
        same_side_run(z, 9),
        trend(z, 6),
        alternating(z, 14),
        k_of_m_beyond(z, k=2, m=3, sigma=2.0),
        k_of_m_beyond(z, k=4, m=5, sigma=1.0),
        within_run(z, length=15, sigma=1.0),
        outside_run(z, length=8, sigma=1.0),
    ]
    return np.column_stack(cols), NELSON_RULES


def apply_rules(
    x: Any, *, center: float, sigma: float, rules: str = "nelson"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Standardise a Shewhart statistic by its centre and σ, then apply a rule set by name.

    ``rules`` is ``"nelson"`` or ``"western_electric"``.

    >>> m, names = apply_rules([10.0, 10.5, 13.5], center=10.0, sigma=1.0, rules="western_electric")
    >>> m[-1].tolist()
    [True, False, False, False]
    """
    if sigma <= 0:
        raise ConfigError(f"sigma={sigma!r} must be positive; estimate it in Phase I first")
    sets = {"nelson": nelson, "western_electric": western_electric}
    if rules not in sets:
        raise ConfigError(f"unknown rule set {rules!r}; use 'nelson' or 'western_electric'")
    z = (_as_series(x) - center) / sigma
    return sets[rules](z)


__all__ = [
    "NELSON_RULES",
    "WESTERN_ELECTRIC_RULES",
    "alternating",
    "apply_rules",
    "beyond",
    "k_of_m_beyond",
    "nelson",
    "outside_run",
    "same_side_run",
    "trend",
    "western_electric",
    "within_run",
]
