"""Univariate control charts: Shewhart (I-MR, X-bar/R, X-bar/S), EWMA and tabular CUSUM.

Why classic charts next to ML detectors
---------------------------------------
SPC engineers trust charts they can draw and check by hand, audits ask for them, and for
a single characteristic drifting slowly an EWMA or CUSUM is close to optimal. Every
chart here follows the textbook two-phase procedure (Montgomery, *Introduction to
Statistical Quality Control*):

- **Phase I** estimates the in-control centre and σ from historical data, drops points
  that fall outside the trial limits, and re-estimates until no point is out (or
  ``max_iter`` is reached), so a few bad parts in "good" history do not widen the limits;
- **Phase II** monitors new data against the frozen limits.

σ is estimated *within* subgroups (average moving range / ``d2`` for individuals,
``R̄/d2`` or ``s̄/c4`` for subgroups), never from the overall standard deviation: a
drifting history would otherwise inflate σ and hide the drift.

Constants
---------
:func:`chart_constants` computes ``d2, d3, c4, A2, A3, B3, B4, D3, D4`` for subgroup
sizes 2..25 from their definitions (``d2 = E[R]/σ`` and ``d3 = sd[R]/σ`` by numerical
integration of the normal range distribution, ``c4`` in closed form), so no table can be
mistyped; the unit tests compare them with the published table.

Detectors
---------
``shewhart_imr``, ``ewma`` and ``cusum`` wrap the charts as :class:`~linewatch.detectors.base.Detector`
objects on an ``(n, d)`` batch: one chart per column, ``score`` = the largest
*limit-normalised* statistic over the columns (``1.0`` = exactly on a control limit), and
``explain`` = the per-column normalised statistics. ``score(X)`` treats the batch as a
fresh series starting in control (pure; what backtests and replays want); ``update(X)``
continues from the chart state carried between calls (what a live agent wants), and that
state is saved with the model.

>>> import numpy as np
>>> round(chart_constants(5).d2, 3), round(chart_constants(5).A2, 3), round(chart_constants(5).D4, 3)
(2.326, 0.577, 2.114)
>>> x = np.array([10.0, 10.2, 9.9, 10.1, 9.8, 10.0, 10.1, 9.9])
>>> lim = imr_limits(x)
>>> round(lim.center, 3), round(lim.sigma, 4), round(lim.mr_ucl, 4)
(10.0, 0.1899, 0.7)
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from scipy import signal, special, stats

from linewatch.detectors.base import as_batch, check_fitted, load_state, register, save_state
from linewatch.detectors.spc_rules import nelson, western_electric
from linewatch.errors import ConfigError, DataError

#: Subgroup sizes for which the constants are tabulated (the range of the classic tables;
#: beyond 25, X-bar/S with the normal approximation is the standard advice).
MIN_SUBGROUP, MAX_SUBGROUP = 2, 25
#: Integration grid for d2/d3: ±8σ with step 0.02 reproduces the published 4-decimal table.
_GRID_HALF_WIDTH, _GRID_STEP = 8.0, 0.02
#: Three-sigma limits: the Shewhart default, an in-control ARL of about 370.
DEFAULT_L = 3.0
#: Phase I stops after this many exclusion rounds even if points are still out.
DEFAULT_PHASE1_MAX_ITER = 10
#: EWMA defaults: λ = 0.2 with L = 3 (Montgomery's table: in-control ARL ≈ 560, good for 1σ shifts).
DEFAULT_EWMA_LAMBDA, DEFAULT_EWMA_L = 0.2, 3.0
#: CUSUM defaults in σ units: k = 0.5 tunes it to a 1σ shift, h = 5 gives ARL0 ≈ 465.
DEFAULT_CUSUM_K, DEFAULT_CUSUM_H = 0.5, 5.0
#: Fewest in-control points Phase I must keep for σ estimates worth having.
MIN_PHASE1_POINTS = 3


# --------------------------------------------------------------------------- constants


@dataclass(frozen=True)
class ChartConstants:
    """Control-chart constants for one subgroup size ``n`` (3σ limits)."""

    n: int
    d2: float
    d3: float
    c4: float
    A2: float
    A3: float
    B3: float
    B4: float
    D3: float
    D4: float


@functools.cache
def _range_moments() -> dict[int, tuple[float, float]]:
    """``(E[R], sd[R])`` of the range of ``n`` standard normals, for every tabulated ``n``.

    The joint density of (min, max) is ``n(n-1) φ(x) φ(y) (Φ(y) - Φ(x))^(n-2)`` on ``x < y``;
    integrated on one grid for all ``n`` at once (about 0.3 s, once per process).
    """
    g = np.arange(-_GRID_HALF_WIDTH, _GRID_HALF_WIDTH + _GRID_STEP / 2, _GRID_STEP)
    cdf, pdf = stats.norm.cdf(g), stats.norm.pdf(g)
    r = g[None, :] - g[:, None]
    above = r > 0
    spread = np.where(above, cdf[None, :] - cdf[:, None], 0.0)
    r = np.where(above, r, 0.0)
    w = np.full(g.size, _GRID_STEP)
    w[0] = w[-1] = _GRID_STEP / 2  # trapezoid weights
    base = (pdf * w)[:, None] * (pdf * w)[None, :]
    out: dict[int, tuple[float, float]] = {}
    for n in range(MIN_SUBGROUP, MAX_SUBGROUP + 1):
        f = n * (n - 1) * base * spread ** (n - 2)
        m1 = float((r * f).sum())
        m2 = float((r * r * f).sum())
        out[n] = (m1, math.sqrt(max(m2 - m1 * m1, 0.0)))
    return out


def c4(n: int) -> float:
    """``E[s]/σ`` for a sample of ``n`` normals: ``sqrt(2/(n-1)) Γ(n/2) / Γ((n-1)/2)``.

    >>> round(c4(2), 4), round(c4(10), 4)
    (0.7979, 0.9727)
    """
    return math.sqrt(2.0 / (n - 1)) * math.exp(special.gammaln(n / 2) - special.gammaln((n - 1) / 2))


@functools.cache
def chart_constants(n: int) -> ChartConstants:
    """The nine standard constants for subgroup size ``n`` in 2..25.

    >>> k = chart_constants(2)
    >>> round(k.d2, 3), round(k.d3, 3), round(k.D4, 3), round(k.A3, 3)
    (1.128, 0.853, 3.267, 2.659)
    """
    if not MIN_SUBGROUP <= n <= MAX_SUBGROUP:
        raise ConfigError(
            f"subgroup size {n} is outside the tabulated {MIN_SUBGROUP}..{MAX_SUBGROUP}; "
            "use X-bar/S with subgroups of at most 25, or individuals (I-MR) for size 1"
        )
    d2, d3 = _range_moments()[n]
    c = c4(n)
    s_spread = 3.0 * math.sqrt(1.0 - c * c) / c
    r_spread = 3.0 * d3 / d2
    return ChartConstants(
        n=n,
        d2=d2,
        d3=d3,
        c4=c,
        A2=3.0 / (d2 * math.sqrt(n)),
        A3=3.0 / (c * math.sqrt(n)),
        B3=max(0.0, 1.0 - s_spread),
        B4=1.0 + s_spread,
        D3=max(0.0, 1.0 - r_spread),
        D4=1.0 + r_spread,
    )


# --------------------------------------------------------------------------- Shewhart charts


def _series(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{what} expects a 1-D series, got shape {arr.shape}; chart one column at a time")
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: the series contains NaN or infinite values; drop or impute them first")
    return arr


def _subgroups(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or not MIN_SUBGROUP <= arr.shape[1] <= MAX_SUBGROUP:
        raise DataError(
            f"{what} expects subgroups as a (k, m) array with 2 <= m <= 25, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: subgroups contain NaN or infinite values; drop or impute them first")
    return arr


@dataclass(frozen=True)
class IMRLimits:
    """Individuals and moving-range chart limits (moving range of span 2)."""

    center: float
    sigma: float
    mr_bar: float
    i_lcl: float
    i_ucl: float
    mr_ucl: float
    L: float = DEFAULT_L


def imr_limits(x: Any, *, L: float = DEFAULT_L, keep: np.ndarray | None = None) -> IMRLimits:
    """Trial I-MR limits from a series; σ = MR̄ / d2(2).

    ``keep`` marks points to use; a moving range counts only when both of its points are
    kept, so excluding a spike removes the two ranges it created.

    >>> lim = imr_limits([1.0, 3.0, 2.0, 4.0])
    >>> lim.mr_bar, round(lim.sigma, 4), round(lim.i_ucl, 3), round(lim.mr_ucl, 3)
    (1.6666666666666667, 1.4771, 6.931, 5.444)
    """
    x = _series(x, "imr_limits")
    keep = np.ones(x.size, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    mr_ok = keep[1:] & keep[:-1]
    if keep.sum() < MIN_PHASE1_POINTS or not mr_ok.any():
        raise DataError(
            f"I-MR limits need at least {MIN_PHASE1_POINTS} in-control points with consecutive pairs; "
            f"got {int(keep.sum())}"
        )
    k = chart_constants(2)
    mr_bar = float(np.abs(np.diff(x))[mr_ok].mean())
    center = float(x[keep].mean())
    sigma = mr_bar / k.d2
    if sigma == 0.0:
        raise DataError("the series never moves between consecutive points (MR̄ = 0); a chart needs variation")
    scale = L / 3.0  # D4 is tabulated for 3σ; other L scale the MR limit the same way
    return IMRLimits(
        center=center,
        sigma=sigma,
        mr_bar=mr_bar,
        i_lcl=center - L * sigma,
        i_ucl=center + L * sigma,
        mr_ucl=mr_bar * (1.0 + scale * (k.D4 - 1.0)),
        L=L,
    )


def imr_phase1(
    x: Any, *, L: float = DEFAULT_L, max_iter: int = DEFAULT_PHASE1_MAX_ITER
) -> tuple[IMRLimits, np.ndarray]:
    """Phase I: recompute I-MR limits after dropping points outside the individuals limits until none remain.

    Returns the final limits and the boolean mask of points kept.

    >>> x = np.array([10.0, 10.1, 9.9, 10.0, 14.0, 10.1, 9.9, 10.0, 10.2, 9.8])
    >>> lim, kept = imr_phase1(x)
    >>> kept.tolist().index(False), round(lim.center, 3)
    (4, 10.0)
    """
    x = _series(x, "imr_phase1")
    keep = np.ones(x.size, dtype=bool)
    lim = imr_limits(x, L=L, keep=keep)
    for _ in range(max_iter):
        # Exclusion uses the individuals chart only. Moving ranges overlap, so the MR chart
        # false-alarms more often than its nominal rate, and dropping points on it shrinks
        # MR̄, which flags more ranges: on 50 clean N(0, 1) points that cascade took σ to 0.63.
        # A spike still leaves the MR̄ because a range counts only when both points are kept.
        out = (x < lim.i_lcl) | (x > lim.i_ucl)
        new_keep = keep & ~out
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
        lim = imr_limits(x, L=L, keep=keep)
    return lim, keep


@dataclass(frozen=True)
class SubgroupLimits:
    """X-bar chart plus a dispersion chart (R or S) for subgroups of size ``n``."""

    n: int
    center: float
    sigma: float
    xbar_lcl: float
    xbar_ucl: float
    dispersion: str  # "range" or "stdev"
    disp_center: float
    disp_lcl: float
    disp_ucl: float


def _dispersion(sub: np.ndarray, kind: str) -> np.ndarray:
    return np.ptp(sub, axis=1) if kind == "range" else sub.std(axis=1, ddof=1)


def subgroup_limits(subgroups: Any, *, kind: str = "range", keep: np.ndarray | None = None) -> SubgroupLimits:
    """X-bar/R (``kind="range"``) or X-bar/S (``kind="stdev"``) 3σ limits from ``(k, m)`` subgroups.

    >>> sub = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0]])
    >>> lim = subgroup_limits(sub)
    >>> lim.center, lim.disp_center, round(lim.xbar_ucl, 3), round(lim.disp_ucl, 3)
    (2.5, 2.5, 5.058, 6.436)
    """
    if kind not in ("range", "stdev"):
        raise ConfigError(f"kind={kind!r}; use 'range' for X-bar/R or 'stdev' for X-bar/S")
    sub = _subgroups(subgroups, "subgroup_limits")
    keep = np.ones(sub.shape[0], dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if not keep.any():
        raise DataError("no subgroups left to estimate limits from")
    k = chart_constants(sub.shape[1])
    center = float(sub[keep].mean())
    disp_bar = float(_dispersion(sub[keep], kind).mean())
    if kind == "range":
        sigma, a, lo, hi = disp_bar / k.d2, k.A2, k.D3, k.D4
    else:
        sigma, a, lo, hi = disp_bar / k.c4, k.A3, k.B3, k.B4
    return SubgroupLimits(
        n=sub.shape[1],
        center=center,
        sigma=sigma,
        xbar_lcl=center - a * disp_bar,
        xbar_ucl=center + a * disp_bar,
        dispersion=kind,
        disp_center=disp_bar,
        disp_lcl=lo * disp_bar,
        disp_ucl=hi * disp_bar,
    )


def subgroup_phase1(
    subgroups: Any, *, kind: str = "range", max_iter: int = DEFAULT_PHASE1_MAX_ITER
) -> tuple[SubgroupLimits, np.ndarray]:
    """Phase I for X-bar/R or X-bar/S: drop subgroups out on either chart and re-estimate."""
    sub = _subgroups(subgroups, "subgroup_phase1")
    keep = np.ones(sub.shape[0], dtype=bool)
    lim = subgroup_limits(sub, kind=kind, keep=keep)
    for _ in range(max_iter):
        new_keep = keep & ~subgroup_out_of_control(sub, lim)
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
        lim = subgroup_limits(sub, kind=kind, keep=keep)
    return lim, keep


def subgroup_out_of_control(subgroups: Any, limits: SubgroupLimits) -> np.ndarray:
    """Phase II: which subgroups fall outside the X-bar or the dispersion limits."""
    sub = _subgroups(subgroups, "subgroup_out_of_control")
    if sub.shape[1] != limits.n:
        raise DataError(f"limits are for subgroups of {limits.n}, got subgroups of {sub.shape[1]}")
    xbar = sub.mean(axis=1)
    disp = _dispersion(sub, limits.dispersion)
    xbar_out = (xbar < limits.xbar_lcl) | (xbar > limits.xbar_ucl)
    return xbar_out | (disp < limits.disp_lcl) | (disp > limits.disp_ucl)


# --------------------------------------------------------------------------- EWMA and CUSUM


def ewma_statistic(x: Any, *, lam: float, start: Any) -> np.ndarray:
    """``z_t = λ x_t + (1 - λ) z_{t-1}`` down axis 0, from ``z_0 = start``; one IIR filter, no Python loop.

    >>> ewma_statistic(np.array([1.0, 1.0, 1.0]), lam=0.5, start=0.0).tolist()
    [0.5, 0.75, 0.875]
    """
    x = np.asarray(x, dtype=np.float64)
    start = np.broadcast_to(np.asarray(start, dtype=np.float64), x.shape[1:])
    # lfilter's initial condition for y[t] = b0 x[t] - a1 y[t-1] is zi = -a1 * y[-1].
    zi = ((1.0 - lam) * start)[None, ...]
    z, _ = signal.lfilter([lam], [1.0, -(1.0 - lam)], x, axis=0, zi=zi)
    return z


def ewma_sigma_factor(t: Any, *, lam: float) -> np.ndarray:
    """``sqrt(λ/(2-λ) (1 - (1-λ)^(2t)))``: the EWMA's σ in units of σ_x after ``t`` steps from the target.

    The limits widen over the first few points and settle at ``sqrt(λ/(2-λ))``; using the
    asymptotic width from the start would make the chart blind to a fault present at start-up.

    >>> ewma_sigma_factor(np.array([1, 1000]), lam=0.2).round(4).tolist()
    [0.2, 0.3333]
    """
    t = np.asarray(t, dtype=np.float64)
    return np.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2.0 * t)))


def cusum_statistic(y: Any, *, start: Any = 0.0) -> np.ndarray:
    """One-sided tabular CUSUM ``C_t = max(0, C_{t-1} + y_t)`` down axis 0, vectorised.

    ``y`` is the already-shifted increment (``x - μ0 - kσ`` for the upper side). The
    recursion is a reflected random walk, whose closed form with partial sums ``S`` is
    ``C_t = S_t - min(-C_0, min_{s<=t} S_s)``, so it needs only ``cumsum`` and ``minimum.accumulate``.

    >>> cusum_statistic(np.array([1.0, -3.0, 2.0, 0.5])).tolist()
    [1.0, 0.0, 2.0, 2.5]
    """
    y = np.asarray(y, dtype=np.float64)
    start = np.broadcast_to(np.asarray(start, dtype=np.float64), y.shape[1:])
    s = np.cumsum(y, axis=0)
    floor = np.minimum(np.minimum.accumulate(s, axis=0), -start[None, ...])
    return np.maximum(s - floor, 0.0)


# --------------------------------------------------------------------------- detectors


def _fit_columns(X: np.ndarray, *, L: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase I I-MR per column -> centre, σ (MR̄/d2) and MR̄ arrays of shape ``(d,)``."""
    centers, sigmas, mr_bars = [], [], []
    for j in range(X.shape[1]):  # one Phase I per characteristic; d is small
        lim, _ = imr_phase1(X[:, j], L=L, max_iter=max_iter)
        centers.append(lim.center)
        sigmas.append(lim.sigma)
        mr_bars.append(lim.mr_bar)
    return np.array(centers), np.array(sigmas), np.array(mr_bars)


class _ColumnChart(ABC):
    """Shared plumbing for the per-column chart detectors (fit, score/update, save/load)."""

    name: ClassVar[str]
    _param_names: ClassVar[tuple[str, ...]]

    center_: np.ndarray | None
    sigma_: np.ndarray | None
    mr_bar_: np.ndarray | None
    state_: np.ndarray | None

    def _init_fitted(self) -> None:
        self.center_ = None
        self.sigma_ = None
        self.mr_bar_ = None
        self.state_ = None

    def _check(self, X: Any) -> np.ndarray:
        check_fitted(self, "center_")
        return as_batch(X, n_features=self.center_.shape[0])

    def fit(self, X: np.ndarray) -> Self:
        """Phase I on known-good rows: per-column centre and within σ, out-of-control points excluded."""
        X = as_batch(X)
        self.center_, self.sigma_, self.mr_bar_ = _fit_columns(
            X, L=self._phase1_L(), max_iter=self.phase1_max_iter
        )
        self.state_ = self._initial_state()
        return self

    def _phase1_L(self) -> float:
        """Phase I screens history with Shewhart 3σ limits whatever the Phase II chart is."""
        return DEFAULT_L

    def reset(self) -> None:
        """Restart the carried chart state as if the process had just been brought into control."""
        check_fitted(self, "center_")
        self.state_ = self._initial_state()

    def score(self, X: np.ndarray) -> np.ndarray:
        """Largest limit-normalised statistic per row (``> 1`` = outside a control limit)."""
        return self.explain(X).max(axis=1)

    def explain(self, X: np.ndarray) -> np.ndarray:
        """Per-column limit-normalised statistics ``(n, d)``, treating ``X`` as a fresh series."""
        X = self._check(X)
        if X.shape[0] == 0:  # an empty batch from a quiet stream: nothing to chart
            return np.empty((0, X.shape[1]))
        norm, _ = self._run(X, self._initial_state())
        return norm

    def update(self, X: np.ndarray) -> np.ndarray:
        """Score ``X`` as the continuation of the stream and carry the chart state forward."""
        norm = self.update_explain(X)
        return norm.max(axis=1) if len(norm) else np.empty(0)

    def update_explain(self, X: np.ndarray) -> np.ndarray:
        """Per-column statistics ``(n, d)`` of ``X`` as the stream's continuation; carries the state."""
        X = self._check(X)
        if X.shape[0] == 0:
            return np.empty((0, X.shape[1]))
        norm, self.state_ = self._run(X, self.state_)
        return norm

    @abstractmethod
    def _initial_state(self) -> np.ndarray:
        """Chart state before the first row (e.g. EWMA starts at the centre line)."""

    @abstractmethod
    def _run(self, X: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Limit-normalised statistics for ``X`` continuing from ``state``, and the state after it."""

    def save(self, path: str | Path) -> None:
        check_fitted(self, "center_")
        save_state(
            path,
            kind=self.name,
            params={p: getattr(self, p) for p in self._param_names},
            arrays={
                "center": self.center_,
                "sigma": self.sigma_,
                "mr_bar": self.mr_bar_,
                "state": self.state_,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> Self:
        params, arrays = load_state(path, kind=cls.name)
        det = cls(**params)
        det.center_, det.sigma_ = arrays["center"], arrays["sigma"]
        det.mr_bar_, det.state_ = arrays["mr_bar"], arrays["state"]
        return det


@register("shewhart_imr")
class ShewhartIMR(_ColumnChart):
    """Individuals + moving-range chart on every column.

    Per column the normalised statistic is ``max(|x - centre| / (Lσ), MR / MR_UCL)``. The
    first row of a fresh series has no moving range and is judged on the individual alone.
    Pair it with :mod:`linewatch.detectors.spc_rules` via :meth:`standardize` for the
    Western Electric / Nelson run rules.

    >>> rng = np.random.default_rng(0)
    >>> det = ShewhartIMR().fit(rng.normal(size=(200, 2)))
    >>> s = det.score(np.array([[0.0, 0.0], [0.1, 5.0]]))
    >>> bool(s[0] < 1.0), bool(s[1] > 1.0)
    (True, True)
    """

    _param_names = ("L", "phase1_max_iter")

    def __init__(self, *, L: float = DEFAULT_L, phase1_max_iter: int = DEFAULT_PHASE1_MAX_ITER) -> None:
        self.L = L
        self.phase1_max_iter = phase1_max_iter
        self._init_fitted()

    def _phase1_L(self) -> float:
        return self.L

    def _initial_state(self) -> np.ndarray:
        # Last value seen per column; NaN = no previous point (no moving range yet).
        return np.full(self.center_.shape[0], np.nan)

    def _run(self, X: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        individual = np.abs(X - self.center_) / (self.L * self.sigma_)
        prev = np.vstack([state[None, :], X[:-1]])
        mr = np.nan_to_num(np.abs(X - prev), nan=0.0)
        mr_ucl = self.mr_bar_ * (1.0 + self.L / 3.0 * (chart_constants(2).D4 - 1.0))
        return np.maximum(individual, mr / mr_ucl), X[-1].copy()

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """``(x - centre) / σ`` per column: the input the run rules expect."""
        X = self._check(X)
        return (X - self.center_) / self.sigma_

    def rule_violations(
        self, X: np.ndarray, *, rules: str = "western_electric"
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Run rules on each column's individuals chart: ``(n, d, n_rules)`` booleans and the rule names.

        ``rules`` is ``"western_electric"`` or ``"nelson"``; rows are one ordered series.

        >>> det = ShewhartIMR().fit(np.random.default_rng(1).normal(size=(300, 1)))
        >>> m, names = det.rule_violations(np.full((8, 1), 0.5))    # 8 in a row above the centre
        >>> names[3], bool(m[-1, 0, 3]), bool(m[-2, 0, 3])
        ('we4', True, False)
        """
        sets = {"western_electric": western_electric, "nelson": nelson}
        if rules not in sets:
            raise ConfigError(f"unknown rule set {rules!r}; use 'western_electric' or 'nelson'")
        Z = self.standardize(X)
        per_column = [sets[rules](Z[:, j]) for j in range(Z.shape[1])]  # d is small: one call per chart
        names = per_column[0][1]
        return np.stack([m for m, _ in per_column], axis=1), names


@register("ewma")
class EWMAChart(_ColumnChart):
    """EWMA chart on every column, with the exact time-varying limits.

    Normalised statistic: ``|z_t - centre| / (L σ sqrt(λ/(2-λ)(1-(1-λ)^{2t})))``, ``t``
    counted from the start of the series (or from :meth:`reset` when using :meth:`update`).

    >>> rng = np.random.default_rng(0)
    >>> det = EWMAChart(lam=0.2).fit(rng.normal(size=(300, 1)))
    >>> shifted = np.full((40, 1), 1.0)       # a 1σ shift, invisible to a 3σ Shewhart chart
    >>> bool(det.score(shifted)[-1] > 1.0)
    True
    """

    _param_names = ("lam", "L", "phase1_max_iter")

    def __init__(
        self,
        *,
        lam: float = DEFAULT_EWMA_LAMBDA,
        L: float = DEFAULT_EWMA_L,
        phase1_max_iter: int = DEFAULT_PHASE1_MAX_ITER,
    ) -> None:
        self.lam = lam
        self.L = L
        self.phase1_max_iter = phase1_max_iter
        self._init_fitted()

    def fit(self, X: np.ndarray) -> Self:
        if not 0.0 < self.lam <= 1.0:
            raise ConfigError(f"lam={self.lam!r} must be in (0, 1]; 0.05-0.25 suits small shifts")
        return super().fit(X)

    def _initial_state(self) -> np.ndarray:
        # [z per column..., t] : EWMA value and number of points since the start.
        return np.concatenate([self.center_, [0.0]])

    def _run(self, X: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = ewma_statistic(X, lam=self.lam, start=state[:-1])
        t = state[-1] + np.arange(1, X.shape[0] + 1)
        width = self.L * self.sigma_[None, :] * ewma_sigma_factor(t, lam=self.lam)[:, None]
        return np.abs(z - self.center_) / width, np.concatenate([z[-1], [t[-1]]])


@register("cusum")
class CUSUMChart(_ColumnChart):
    """Two-sided tabular CUSUM on every column (``k``, ``h`` in σ units), optional FIR headstart.

    Normalised statistic: ``max(C⁺, C⁻) / (hσ)``. A fast initial response
    (``headstart=0.5`` starts both sums at ``h/2``, Lucas & Crosier) catches a process
    that restarts out of control at the price of a few early false alarms.

    >>> rng = np.random.default_rng(0)
    >>> det = CUSUMChart().fit(rng.normal(size=(300, 1)))
    >>> bool(det.score(np.full((30, 1), 1.0))[-1] > 1.0)
    True
    """

    _param_names = ("k", "h", "headstart", "phase1_max_iter")

    def __init__(
        self,
        *,
        k: float = DEFAULT_CUSUM_K,
        h: float = DEFAULT_CUSUM_H,
        headstart: float = 0.0,
        phase1_max_iter: int = DEFAULT_PHASE1_MAX_ITER,
    ) -> None:
        self.k = k
        self.h = h
        self.headstart = headstart
        self.phase1_max_iter = phase1_max_iter
        self._init_fitted()

    def fit(self, X: np.ndarray) -> Self:
        if self.k < 0 or self.h <= 0 or not 0.0 <= self.headstart < 1.0:
            raise ConfigError(
                f"k={self.k!r}, h={self.h!r}, headstart={self.headstart!r}: need k >= 0, h > 0 and "
                "0 <= headstart < 1 (e.g. k=0.5, h=5, headstart=0.5)"
            )
        return super().fit(X)

    def _initial_state(self) -> np.ndarray:
        start = self.headstart * self.h * self.sigma_
        return np.concatenate([start, start])  # [C+ per column..., C- per column...]

    def _run(self, X: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = X.shape[1]
        slack = self.k * self.sigma_
        upper = cusum_statistic(X - self.center_ - slack, start=state[:d])
        lower = cusum_statistic(self.center_ - slack - X, start=state[d:])
        norm = np.maximum(upper, lower) / (self.h * self.sigma_)
        return norm, np.concatenate([upper[-1], lower[-1]])
