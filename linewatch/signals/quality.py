"""Input data-quality gate: say *why* a sensor cannot be trusted before any detector is asked.

Why
---
A broken sensor is the most common "anomaly" on a plant, and the least useful one to
raise as a process alert: a thermocouple that fell off reads a flat room temperature, a
loose connector reads NaN, an overdriven accelerometer clips at its rail. A detector fed
with such a window will (correctly) call it anomalous, and the maintenance engineer gets
paged for the wrong problem. The gate names the data problem instead, with a reason code
per sensor, and the agent suppresses anomaly alerts on that asset while it lasts (and can
raise a "sensor fault" notice instead).

Reason codes (bit flags, so a window can carry several)
-------------------------------------------------------
``flatline``      peak-to-peak within the sensor's resolution over the whole window;
``stuck``         the same value repeated for a long run inside an otherwise moving window
                  (a frozen acquisition, a sample-and-hold that stopped updating);
``saturated``     a share of samples at a configured rail, or, without rails and on long
                  windows, piled up on the window's extreme value (clipping);
``missing``       more than ``max_missing_fraction`` of the window absent (a gap the
                  assembler could not fill);
``out_of_range``  a finite value outside the sensor's physical range;
``nan``           a NaN or infinite sample where data was present.

The clipping heuristic without rails assumes the signal's amplitude is large compared with
its quantisation step; configure :class:`SensorLimits` rails for a reliable verdict.

>>> import numpy as np
>>> gate = QualityGate(limits={"temp": SensorLimits(low=-40.0, high=200.0)})
>>> rng = np.random.default_rng(0)
>>> x = np.stack([rng.normal(60, 1, 600), np.full(600, 21.5), rng.normal(60, 1, 600)])
>>> x[2, 10] = 900.0
>>> rep = gate.check(x, sensors="temp")
>>> rep.reasons()
[[], ['flatline'], ['out_of_range']]
>>> rep.suppress
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from linewatch.errors import ConfigError, DataError


class Issue(IntFlag):
    """Data-quality reason codes; ``0`` means the window is usable."""

    FLATLINE = 1
    STUCK = 2
    SATURATED = 4
    MISSING = 8
    OUT_OF_RANGE = 16
    NAN = 32


_ISSUE_NAMES: tuple[tuple[int, str], ...] = tuple((int(i), i.name.lower()) for i in Issue)  # type: ignore[union-attr]


def reason_names(code: int) -> list[str]:
    """Reason names of a bit set of :class:`Issue`, in :class:`Issue` order (``[]`` for a usable window).

    Plain ints rather than flag arithmetic: it runs for every window of every batch.

    >>> reason_names(int(Issue.FLATLINE | Issue.NAN)), reason_names(0)
    (['flatline', 'nan'], [])
    """
    return [name for bit, name in _ISSUE_NAMES if code & bit] if code else []


#: Below this many samples, repeated extreme values are normal quantisation, not clipping.
CLIP_HEURISTIC_MIN_SAMPLES = 256
#: Fewer present samples than this cannot tell "flat" from "slow".
FLAT_MIN_SAMPLES = 8
#: Samples per block of rows the gate checks at once: 128 k float64 samples are 1 MiB, so a block's
#: temporaries stay in cache instead of streaming tens of MB through memory.
GATE_BLOCK_SAMPLES = 1 << 17


@dataclass(frozen=True)
class SensorLimits:
    """What is physically possible for a sensor; every field is optional.

    ``low``/``high`` bound plausible readings (a bearing at -60 °C is a wiring fault);
    ``rail_low``/``rail_high`` are the acquisition range where the signal clips;
    ``resolution`` is the quantisation step (two readings closer than it are "equal").
    """

    low: float | None = None
    high: float | None = None
    rail_low: float | None = None
    rail_high: float | None = None
    resolution: float = 0.0

    def __post_init__(self) -> None:
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ConfigError(f"SensorLimits low={self.low} must be below high={self.high}")
        if self.resolution < 0:
            raise ConfigError(f"SensorLimits resolution={self.resolution} must be >= 0")


@dataclass(frozen=True)
class QualityReport:
    """Per-window verdicts: ``codes[i]`` is a bit set of :class:`Issue` for window ``i``."""

    sensors: tuple[str, ...]
    codes: np.ndarray
    missing_fraction: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Boolean per window: usable for scoring."""
        return self.codes == 0

    @property
    def suppress(self) -> bool:
        """True when any window is bad: alerts on this asset should be held back."""
        return bool((self.codes != 0).any())

    def reasons(self) -> list[list[str]]:
        """Reason names per window, in :class:`Issue` order."""
        return [reason_names(c) for c in self.codes.tolist()]

    def bad_sensors(self) -> dict[str, list[str]]:
        """``{sensor: reasons}`` for every sensor with at least one bad window (reasons merged)."""
        out: dict[str, set[str]] = {}
        for s, r in zip(self.sensors, self.reasons(), strict=True):
            if r:
                out.setdefault(s, set()).update(r)
        order = [i.name.lower() for i in Issue]
        return {s: sorted(v, key=order.index) for s, v in sorted(out.items())}


def longest_run(mask: np.ndarray) -> np.ndarray:
    """Length of the longest run of ``True`` in each row of a 2-D boolean array.

    >>> longest_run(np.array([[1, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=bool)).tolist()
    [3, 0]
    """
    if mask.shape[1] == 0:
        return np.zeros(mask.shape[0], dtype=np.int64)
    c = np.cumsum(mask, axis=1)
    reset = np.maximum.accumulate(np.where(~mask, c, 0), axis=1)
    return (c - reset).max(axis=1)


class QualityGate:
    """Vectorised checks over windows ``(n, m)``; one sensor name per row.

    Parameters
    ----------
    limits:
        ``{sensor: SensorLimits}``; sensors not listed get no range/rail checks.
    stuck_fraction, stuck_min_samples:
        A run of identical values at least ``max(stuck_min_samples, stuck_fraction * m)``
        long marks the window ``stuck``.
    saturation_fraction, saturation_min_samples:
        Share (and minimum count) of samples on a rail or on the window's extreme for ``saturated``.
    max_missing_fraction:
        Largest tolerated share of absent samples.
    """

    def __init__(
        self,
        *,
        limits: Mapping[str, SensorLimits] | None = None,
        stuck_fraction: float = 0.25,
        stuck_min_samples: int = 32,
        saturation_fraction: float = 0.01,
        saturation_min_samples: int = 5,
        max_missing_fraction: float = 0.2,
    ) -> None:
        self.limits = dict(limits or {})
        self.stuck_fraction = stuck_fraction
        self.stuck_min_samples = stuck_min_samples
        self.saturation_fraction = saturation_fraction
        self.saturation_min_samples = saturation_min_samples
        self.max_missing_fraction = max_missing_fraction
        for name, v in (("stuck_fraction", stuck_fraction), ("saturation_fraction", saturation_fraction),
                        ("max_missing_fraction", max_missing_fraction)):
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}={v!r} must be a fraction in [0, 1]")

    def _limit_arrays(self, sensors: tuple[str, ...]) -> dict[str, np.ndarray]:
        def col(attr: str, default: float) -> np.ndarray:
            vals = [getattr(self.limits.get(s, SensorLimits()), attr) for s in sensors]
            return np.array([default if v is None else v for v in vals], dtype=np.float64)[:, None]

        return {
            "low": col("low", -np.inf),
            "high": col("high", np.inf),
            "rail_low": col("rail_low", np.nan),
            "rail_high": col("rail_high", np.nan),
            "res": col("resolution", 0.0),
        }

    def check(
        self, values: np.ndarray, *, sensors: str | Sequence[str], present: np.ndarray | None = None
    ) -> QualityReport:
        """Verdicts for windows ``values`` ``(n, m)``; ``present`` marks samples that exist (default: all).

        Absent samples (``present=False``, e.g. an assembler gap) count as missing; NaN where a
        sample was present counts as ``nan``. Without ``present``, every sample is taken as present.

        Rows are checked in blocks of about :data:`GATE_BLOCK_SAMPLES` samples so every temporary
        stays in the core's cache (rows never mix, so the verdicts do not depend on the blocking).
        """
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] == 0:
            raise DataError(f"expected windows of shape (n, m) with m > 0, got {x.shape}")
        n, m = x.shape
        names = (sensors,) * n if isinstance(sensors, str) else tuple(sensors)
        if len(names) != n:
            raise DataError(f"got {len(names)} sensor names for {n} windows; give one per row")
        pres = None if present is None else np.asarray(present, dtype=bool)
        if pres is not None and pres.shape != x.shape:
            raise DataError(f"present mask shape {pres.shape} does not match values {x.shape}")
        lim = self._limit_arrays(names)
        codes = np.zeros(n, dtype=np.int64)
        missing_fraction = np.zeros(n)
        step = max(1, GATE_BLOCK_SAMPLES // m)
        for lo in range(0, n, step):
            rows = slice(lo, lo + step)
            codes[rows], missing_fraction[rows] = self._check_block(
                x[rows], None if pres is None else pres[rows], {k: v[rows] for k, v in lim.items()})
        return QualityReport(names, codes, missing_fraction)

    def _check_block(self, x: np.ndarray, pres: np.ndarray | None, lim: dict[str, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Codes and missing fractions of one block of rows (the rules of the module docstring).

        The common case (every sample present and finite, no resolution, no rails) skips the masks
        it does not need; each shortcut gives exactly the verdict of the masked expression.
        """
        n, m = x.shape
        finite = np.isfinite(x)
        all_finite = bool(finite.all())
        if pres is None:
            good = None if all_finite else finite
            missing_fraction = np.zeros(n)
            nan_rows = ~finite.all(axis=1) if not all_finite else np.zeros(n, dtype=bool)
        else:
            good = pres & finite
            missing_fraction = 1.0 - pres.mean(axis=1)
            nan_rows = (pres & ~finite).any(axis=1)
        n_good = np.full(n, m) if good is None else good.sum(axis=1)
        codes = np.zeros(n, dtype=np.int64)
        codes |= np.where(missing_fraction > self.max_missing_fraction, int(Issue.MISSING), 0)
        codes |= np.where(nan_rows, int(Issue.NAN), 0)

        if good is None:
            hi, lo = x.max(axis=1), x.min(axis=1)
        else:
            hi = np.where(good, x, -np.inf).max(axis=1)
            lo = np.where(good, x, np.inf).min(axis=1)
        # Some present finite sample is out of range exactly when the extreme ones are.
        codes |= np.where((lo < lim["low"][:, 0]) | (hi > lim["high"][:, 0]), int(Issue.OUT_OF_RANGE), 0)
        res = lim["res"][:, 0]
        flat = (n_good >= FLAT_MIN_SAMPLES) & (hi - lo <= res)
        codes |= np.where(flat, int(Issue.FLATLINE), 0)

        # Consecutive present samples within the resolution of each other ("the same value").
        if (res == 0).all():
            same = x[:, 1:] == x[:, :-1]  # finite a, b: |a - b| <= 0 exactly when a == b
        else:
            xz = x if good is None else np.where(good, x, 0.0)  # no inf - inf: masked below anyway
            same = np.abs(np.diff(xz, axis=1)) <= lim["res"]
        if good is not None:
            same &= good[:, 1:] & good[:, :-1]
        stuck_len = max(self.stuck_min_samples, int(np.ceil(self.stuck_fraction * m)))
        # A run of stuck_len equal samples needs at least stuck_len - 1 equal pairs: only rows that
        # have that many are searched for their longest run.
        maybe = np.flatnonzero(~flat & (np.count_nonzero(same, axis=1) >= stuck_len - 1))
        stuck = np.zeros(n, dtype=bool)
        if maybe.size:
            stuck[maybe] = longest_run(same[maybe]) + 1 >= stuck_len
        codes |= np.where(stuck, int(Issue.STUCK), 0)

        need = np.maximum(self.saturation_min_samples, np.ceil(self.saturation_fraction * n_good))
        has_rails = ~(np.isnan(lim["rail_high"][:, 0]) & np.isnan(lim["rail_low"][:, 0]))
        at_rail = np.zeros(n, dtype=np.int64)
        if has_rails.any():
            r = np.flatnonzero(has_rails)
            xr = x[r]
            on_rail = (xr >= np.nan_to_num(lim["rail_high"][r], nan=np.inf) - lim["res"][r]) | (
                xr <= np.nan_to_num(lim["rail_low"][r], nan=-np.inf) + lim["res"][r])
            if good is not None:
                on_rail &= good[r]
            at_rail[r] = np.count_nonzero(on_rail, axis=1)
        railed = at_rail >= need
        clipped = np.zeros(n, dtype=bool)
        heuristic = np.flatnonzero(~has_rails & ~flat) if m >= CLIP_HEURISTIC_MIN_SAMPLES else np.empty(0, int)
        if heuristic.size:
            xh, rh = x[heuristic], lim["res"][heuristic]
            near_max = xh >= hi[heuristic, None] - rh
            near_min = xh <= lo[heuristic, None] + rh
            if good is not None:
                near_max &= good[heuristic]
                near_min &= good[heuristic]
            clipped[heuristic] = np.maximum(np.count_nonzero(near_max, axis=1),
                                            np.count_nonzero(near_min, axis=1)) >= need[heuristic]
        codes |= np.where(~flat & (railed | clipped), int(Issue.SATURATED), 0)
        return codes, missing_fraction
