"""Process capability: Cp, Cpk (within σ) and Pp, Ppk (overall σ), one- or two-sided.

Why both pairs
--------------
Capability indices compare the spread of a process with its specification window.
``Cp``/``Cpk`` use the *within*-subgroup σ (what the process could do if it held its
mean: the short-term potential); ``Pp``/``Ppk`` use the *overall* σ (what customers
actually received, drift included). A large gap between ``Cpk`` and ``Ppk`` says the
process is not stable, which is a control-chart problem, not a capability problem.
Indices are meaningful only for a process in statistical control and roughly normal;
compute them on Phase I data that the charts accepted.

- ``Cp = (USL - LSL) / 6σ_within``; ``Cpk = min(USL - μ, μ - LSL) / 3σ_within``.
- ``Pp`` and ``Ppk`` are the same with ``σ_overall`` (sample standard deviation).
- With one spec limit only, ``Cp``/``Pp`` are undefined (``None``) and ``Cpk``/``Ppk`` are
  the one-sided ``Cpu``/``Cpl`` (``Ppu``/``Ppl``).

σ_within comes from the average moving range / ``d2(2)`` for individuals (1-D input) or
from ``s̄ / c4(m)`` for ``(k, m)`` subgroups, matching the charts in
:mod:`linewatch.detectors.chart_math`.

>>> import numpy as np
>>> x = np.array([9.0, 11.0, 9.0, 11.0])
>>> r = capability(x, lsl=4.0, usl=16.0)
>>> round(r.cp, 3), round(r.pp, 3), r.mean
(1.128, 1.732, 10.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from linewatch.detectors.chart_math import MAX_SUBGROUP, MIN_SUBGROUP, chart_constants
from linewatch.errors import ConfigError, DataError


@dataclass(frozen=True)
class Capability:
    """Capability indices and the estimates they came from (``None`` = undefined for the spec)."""

    mean: float
    sigma_within: float
    sigma_overall: float
    lsl: float | None
    usl: float | None
    cp: float | None
    cpk: float
    cpu: float | None
    cpl: float | None
    pp: float | None
    ppk: float
    ppu: float | None
    ppl: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (for the SPC views and reports)."""
        return asdict(self)


def sigma_within(x: Any) -> float:
    """Short-term σ: MR̄/d2(2) for a 1-D series, s̄/c4(m) for ``(k, m)`` subgroups.

    >>> round(sigma_within(np.array([1.0, 3.0, 2.0, 4.0])), 4)
    1.4771
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        if arr.size < 2:
            raise DataError("σ within needs at least 2 individual values")
        return float(np.abs(np.diff(arr)).mean() / chart_constants(2).d2)
    if arr.ndim == 2 and MIN_SUBGROUP <= arr.shape[1] <= MAX_SUBGROUP:
        return float(arr.std(axis=1, ddof=1).mean() / chart_constants(arr.shape[1]).c4)
    raise DataError(
        f"expected individuals (1-D) or subgroups (k, m) with 2 <= m <= 25, got shape {arr.shape}"
    )


def _index(numerator: float, sigma: float, k: float) -> float:
    return numerator / (k * sigma) if sigma > 0 else float("inf") if numerator > 0 else float("-inf")


def capability(x: Any, *, lsl: float | None = None, usl: float | None = None) -> Capability:
    """Cp, Cpk, Pp, Ppk (and the one-sided parts) of measurements ``x`` against spec limits.

    ``x`` is a 1-D series of individuals or a ``(k, m)`` array of subgroups.

    >>> r = capability(np.array([9.0, 11.0, 9.0, 11.0]), usl=13.0)     # upper spec only
    >>> r.cp is None, round(r.cpk, 3), r.cpk == r.cpu
    (True, 0.564, True)
    """
    if lsl is None and usl is None:
        raise ConfigError("capability needs at least one spec limit: pass lsl=, usl= or both")
    if lsl is not None and usl is not None and not lsl < usl:
        raise ConfigError(f"lsl={lsl!r} must be below usl={usl!r}")
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise DataError("capability: measurements contain NaN or infinite values; drop them first")
    flat = arr.ravel()
    if flat.size < 2:
        raise DataError("capability needs at least 2 measurements")
    mean = float(flat.mean())
    s_within = sigma_within(arr)
    s_overall = float(flat.std(ddof=1))
    cpu = _index(usl - mean, s_within, 3.0) if usl is not None else None
    cpl = _index(mean - lsl, s_within, 3.0) if lsl is not None else None
    ppu = _index(usl - mean, s_overall, 3.0) if usl is not None else None
    ppl = _index(mean - lsl, s_overall, 3.0) if lsl is not None else None
    two_sided = lsl is not None and usl is not None
    return Capability(
        mean=mean,
        sigma_within=s_within,
        sigma_overall=s_overall,
        lsl=lsl,
        usl=usl,
        cp=_index(usl - lsl, s_within, 6.0) if two_sided else None,
        cpk=min(v for v in (cpu, cpl) if v is not None),
        cpu=cpu,
        cpl=cpl,
        pp=_index(usl - lsl, s_overall, 6.0) if two_sided else None,
        ppk=min(v for v in (ppu, ppl) if v is not None),
        ppu=ppu,
        ppl=ppl,
        n=int(flat.size),
    )
