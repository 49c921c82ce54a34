"""Noise that looks like a plant's: stationary AR(1) series that keep the i.i.d. marginals.

Shared by the SPC and machine simulators, whose normal behaviour carries over from one part (or
snapshot) to the next: a thermal state, a tool's condition, a machine's mount.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


def ar1(e: np.ndarray, phi: float) -> np.ndarray:
    """Unit-variance noise (columns along axis 0) -> a stationary AR(1) series with lag-1 correlation ``phi``.

    ``x_0 = e_0`` and ``x_t = phi x_{t-1} + sqrt(1 - phi^2) e_t`` keep every marginal (and the
    cross-correlation between columns) exactly that of ``e``.

    >>> x = ar1(np.random.default_rng(0).standard_normal(100_000), 0.8)
    >>> round(float(np.corrcoef(x[:-1], x[1:])[0, 1]), 2), round(float(x.std()), 2)
    (0.8, 1.0)
    """
    if phi == 0.0 or len(e) < 2:
        return e
    x = np.empty_like(e, dtype=np.float64)
    x[0] = e[0]
    zi = np.asarray(phi * e[0], dtype=np.float64)[None, ...]
    x[1:] = lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], e[1:], axis=0, zi=zi)[0]
    return x
