"""Control-chart maths: constants, limits, Phase I and the EWMA / CUSUM recursions, on plain arrays.

Why apart from the chart detectors (:mod:`linewatch.detectors.spc_charts`): these are the
textbook formulas SPC engineers check by hand and that capability studies, the SPC views and
the multivariate charts reuse (MEWMA smooths with :func:`ewma_statistic`); none of them
knows about fitting, saving or the detector contract. Every function takes a series or
subgroups and returns numbers, so each can be tested against a published table alone.

Every chart follows the textbook two-phase procedure (Montgomery, *Introduction to
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import signal, special, stats

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



# --------------------------------------------------------------------------- after a signal

#: What a chart does with its memory once it has signalled: ``"restart"`` (the textbook
#: convention, one shift = one alarm episode) or ``"hold"`` (keep accumulating).
AFTER_ALARM_POLICIES = ("restart", "hold")

#: A chart's recursion: statistics for rows continuing from a state, and the state after them.
ChartRun = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def check_after_alarm(after_alarm: str) -> None:
    """Refuse an unknown policy with the accepted values."""
    if after_alarm not in AFTER_ALARM_POLICIES:
        raise ConfigError(f"after_alarm={after_alarm!r}; use 'restart' (statistic restarts in control after a "
                          "signal) or 'hold' (keeps accumulating)")


#: Rows a restarting chart runs ahead after a signal (doubling while no sub-chart signals).
MIN_RESTART_SPAN = 64


def run_restarting(
    run: ChartRun,
    X: np.ndarray,
    state: np.ndarray,
    *,
    signals: Callable[[np.ndarray], np.ndarray],
    restart: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Run a chart over ``X`` and restart the sub-charts that signal, right after the signalling row.

    Why: an EWMA or CUSUM that keeps its memory after a signal goes on flagging the normal parts
    that follow a shift until the memory decays; the standard "restart after signal" convention
    (Montgomery, §9.1; Lucas & Crosier 1982) starts the statistic again from its in-control value,
    so one shift gives one alarm, and a shift still present is found again a few points later.

    ``signals(stats)`` marks, per row, which sub-charts are beyond their limit (``(n, m)`` bool);
    ``restart(state, mask)`` returns the state with the marked sub-charts back in control. The
    recursion stays vectorised between signals; only the rows up to each signal are run twice.

    >>> run = lambda x, s: (np.cumsum(x, axis=0) + s, (np.cumsum(x, axis=0) + s)[-1])
    >>> out, end = run_restarting(run, np.ones((5, 1)), np.zeros(1),
    ...                           signals=lambda st: st > 1.5, restart=lambda s, m: np.where(m, 0.0, s))
    >>> out[:, 0].tolist(), end.tolist()
    ([1.0, 2.0, 1.0, 2.0, 1.0], [1.0])
    """
    n = X.shape[0]
    out: np.ndarray | None = None
    start, span = 0, MIN_RESTART_SPAN
    while start < n:
        # Run ahead in spans that double while quiet and shrink after a signal: a signal costs at
        # most one span of re-run rows, not the rest of the batch.
        stop = min(n, start + span)
        stats, end = run(X[start:stop], state)
        hit = signals(stats)
        rows = np.flatnonzero(hit.any(axis=1))
        if out is None:
            out = np.empty((n, *stats.shape[1:]))
        if rows.size == 0:
            out[start:stop] = stats
            start, state, span = stop, end, span * 2
            continue
        i = int(rows[0])
        out[start:start + i + 1] = stats[:i + 1]
        _, state = run(X[start:start + i + 1], state)
        state = restart(state, hit[i])
        start, span = start + i + 1, MIN_RESTART_SPAN
    return (out if out is not None else np.empty((0, *X.shape[1:]))), state
