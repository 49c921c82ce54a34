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

from collections.abc import Callable
from typing import Any

import numpy as np

from linewatch.detectors.chart_math import imr_phase1
from linewatch.errors import ConfigError, DataError

WESTERN_ELECTRIC_RULES: tuple[str, ...] = ("we1", "we2", "we3", "we4")
NELSON_RULES: tuple[str, ...] = tuple(f"nelson{i}" for i in range(1, 9))
#: The longest pattern any rule looks at is 15 points (nelson7), so a point's flags depend on
#: itself and the 14 before it: what a live monitor keeps between batches.
RULE_MEMORY = 14
#: The rule set a live monitor applies when the model names none.
DEFAULT_RULE_SET = "western_electric"


def _as_series(z: Any) -> np.ndarray:
    """A standardised series (1-D), or several side by side (2-D, one per column: every rule works down axis 0)."""
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise DataError(f"run rules take one standardised series (1-D) or one per column (2-D), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError("run rules: the series contains NaN or infinite values; drop or impute them first")
    return arr


def _window_count(indicator: np.ndarray, width: int) -> np.ndarray:
    """Number of true values among the last ``width`` points at each index.

    Near the start the window is partial (the points seen so far): two points beyond 2σ
    at the very start already *are* "2 of 3", and a live chart must not wait for a third.
    """
    csum = np.concatenate([np.zeros((1, *indicator.shape[1:]), dtype=np.int64),
                           np.cumsum(indicator, axis=0, dtype=np.int64)])
    idx = np.arange(1, indicator.shape[0] + 1)
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
    out = np.zeros(z.shape, dtype=bool)
    d = np.diff(z, axis=0)
    out[1:] = _run_of(d > 0, length - 1) | _run_of(d < 0, length - 1)
    return out


def alternating(z: Any, length: int) -> np.ndarray:
    """``length`` points in a row alternating up and down (``length - 2`` sign flips in a row).

    >>> alternating([0.0, 1.0, 0.0, 1.0, 0.0], 4).tolist()
    [False, False, False, True, True]
    """
    z = _as_series(z)
    out = np.zeros(z.shape, dtype=bool)
    d = np.sign(np.diff(z, axis=0))
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
    return np.stack(cols, axis=-1), WESTERN_ELECTRIC_RULES


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
    return np.stack(cols, axis=-1), NELSON_RULES


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
    z = (_as_series(x) - center) / sigma
    return rule_set(rules)(z)


def rule_set(rules: str) -> Callable[[Any], tuple[np.ndarray, tuple[str, ...]]]:
    """The rule-set function by name: ``"western_electric"`` or ``"nelson"``."""
    sets = {"nelson": nelson, "western_electric": western_electric}
    if rules not in sets:
        raise ConfigError(f"unknown rule set {rules!r}; use 'nelson' or 'western_electric'")
    return sets[rules]


class RunRuleMonitor:
    """Run rules on a live stream of rows, one individuals chart per column, batch after batch.

    Why a monitor: a live agent sees a stream in batches, and a run (8 on one side, 4 of 5 beyond
    1σ ...) that straddles two batches must still be caught at the point that completes it. The
    monitor keeps the last :data:`RULE_MEMORY` standardised points per column (all any rule looks
    back at), prepends them to each batch and applies the vectorised rules to all columns at once, so the
    flags are exactly those of the whole series evaluated at once. State is per stream: the agent
    keeps one monitor per asset and model.

    ``center`` and ``sigma`` are the per-column Phase I centre line and within-σ (see
    :func:`rule_baseline`); a column whose σ is NaN (too flat to estimate) is not checked.

    >>> mon = RunRuleMonitor(center=[0.0], sigma=[1.0])
    >>> a = mon.update(np.full((5, 1), 0.5))       # 5 above the centre: no rule yet
    >>> b = mon.update(np.full((3, 1), 0.5))       # 8 in a row: we4 at the 8th, across batches
    >>> bool(a.any()), b[:, 0, mon.names.index("we4")].tolist()
    (False, [False, False, True])
    """

    def __init__(self, center: Any, sigma: Any, *, rules: str = DEFAULT_RULE_SET) -> None:
        self.center = np.asarray(center, dtype=np.float64).reshape(-1)
        self.sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
        self.checked = np.isfinite(self.sigma) & np.isfinite(self.center)
        if self.center.shape != self.sigma.shape or not (self.sigma[self.checked] > 0).all():
            raise ConfigError(f"run rules need one positive sigma per centre line, got centre {self.center.tolist()} "
                              f"and sigma {self.sigma.tolist()}; retrain the model (Phase I estimates both)")
        self.rules = rules
        self._apply = rule_set(rules)
        self.names: tuple[str, ...] = self._apply(np.zeros(1))[1]
        self.tail = np.empty((0, self.center.size))

    @classmethod
    def from_baseline(cls, baseline: dict[str, Any]) -> RunRuleMonitor:
        """A monitor from what :func:`rule_baseline` stored with a model."""
        def floats(values: list[float | None]) -> list[float]:
            return [np.nan if v is None else float(v) for v in values]

        return cls(floats(baseline["center"]), floats(baseline["sigma"]),
                   rules=baseline.get("rules", DEFAULT_RULE_SET))

    def update(self, X: Any) -> np.ndarray:
        """``(n, d, n_rules)`` flags for the rows of ``X`` as the stream's continuation; keeps the tail."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.center.size)
        if X.shape[0] == 0:
            return np.zeros((0, self.center.size, len(self.names)), dtype=bool)
        Z = np.vstack([self.tail, self.standardized(X)])
        k = self.tail.shape[0]
        flags = np.zeros((X.shape[0], self.center.size, len(self.names)), dtype=bool)
        cols = np.flatnonzero(self.checked)
        if cols.size:  # one vectorised pass over every checked characteristic at once (per-call cost matters live)
            flags[:, cols] = self._apply(Z[:, cols])[0][k:]
        self.tail = Z[-RULE_MEMORY:]
        return flags

    def standardized(self, X: Any) -> np.ndarray:
        """``(x - centre) / σ`` per column (0 where unchecked): the value a violation is reported with."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.center.size)
        center, sigma = np.where(self.checked, self.center, 0.0), np.where(self.checked, self.sigma, 1.0)
        return np.where(self.checked, (X - center) / sigma, 0.0)


def rule_baseline(X: Any, *, rules: str = DEFAULT_RULE_SET) -> dict[str, Any]:
    """Per-column I-MR Phase I centre and within-σ of known-good rows, as a JSON-ready dict.

    The run rules assume an individuals chart with σ estimated within (MR̄/d2), not the overall
    standard deviation, exactly as the chart detectors are fitted; stored with any model so its
    live stream can be checked by the rules whatever the detector. A column too flat to estimate
    σ gets none (``None``) and is not checked.

    >>> b = rule_baseline(np.column_stack([np.arange(20.0) % 3, np.full(20, 1.0)]))
    >>> b["rules"], round(b["center"][0], 2), b["sigma"][1]
    ('western_electric', 0.95, None)
    """
    rule_set(rules)  # refuse an unknown name before fitting anything
    X = np.asarray(X, dtype=np.float64)
    centers: list[float | None] = []
    sigmas: list[float | None] = []
    for j in range(X.shape[1]):  # one Phase I per characteristic; d is small
        try:
            lim, _ = imr_phase1(X[:, j])
        except DataError:  # a constant or tiny column: no σ, no rules for it
            centers.append(None)
            sigmas.append(None)
            continue
        centers.append(float(lim.center))
        sigmas.append(float(lim.sigma))
    return {"rules": rules, "center": centers, "sigma": sigmas}


__all__ = [
    "DEFAULT_RULE_SET",
    "NELSON_RULES",
    "RULE_MEMORY",
    "WESTERN_ELECTRIC_RULES",
    "RunRuleMonitor",
    "alternating",
    "apply_rules",
    "beyond",
    "k_of_m_beyond",
    "nelson",
    "outside_run",
    "rule_baseline",
    "rule_set",
    "same_side_run",
    "trend",
    "western_electric",
    "within_run",
]
