"""Combining calibrated tail probabilities: Bonferroni within an event, Fisher-Brown across modalities.

Why these two
-------------
Every detector's score is a calibrated tail probability ``p`` (uniform on normal data), so
evidence from different modalities is comparable and can be combined by the rules of
p-values instead of by ad-hoc weights.

- **Within one event** (one SPC record, one frame, one signals frame) several detectors look at
  the *same* data (a robust Mahalanobis model and EWMA charts on the same characteristics), so
  their p-values are strongly and unknowably dependent. The Bonferroni-corrected minimum,
  ``min(1, n * min p)``, is valid under any dependence: adding a detector can never raise the
  false-alarm rate, and one strong detector is not diluted by quiet ones.
- **Across modalities of one part** (its dimensions, its image, the machine's signals while it
  was made) the evidence comes from different sensors and should *add up*: two moderately unusual
  modalities should alert when neither does alone. Fisher's method (``X = -2 sum ln p``,
  chi-squared with ``2k`` degrees of freedom under independence) does exactly that. Modalities of
  one machine are not quite independent (a worn tool shows in dimensions *and* the surface; a
  shared lot or ambient condition moves several), and Fisher under positive dependence is
  anti-conservative, so the statistic is referred to Brown's scaled chi-squared instead
  (Brown 1975): ``X / c ~ chi2(f)`` with ``c = Var X / (2 E X)`` and ``f = 2 (E X)^2 / Var X``,
  where the covariance of ``-2 ln p_i`` and ``-2 ln p_j`` comes from the correlation ``rho`` of the
  underlying normal scores through Kost & McDermott's (2002) fit
  ``cov = 3.263 rho + 0.710 rho^2 + 0.027 rho^3``. ``rho = 0`` is Fisher's method exactly.

A Cauchy combination or a plain minimum across modalities would keep single strong evidence
sharper but cannot make two moderate signals significant (the combination of two p-values of
0.003 stays 0.003), which is the one thing fusion is for; Fisher-Brown of a strong p and two
neutral ones still keeps it strong (1e-6 with two 0.5s fuses to about 1e-4).

>>> import numpy as np
>>> float(fisher_brown(np.array([[0.003, 0.003, 0.5]]), rho=0.0)[0]) < 1e-3  # two moderate ones alert
True
>>> float(fisher_brown(np.array([[0.003, 0.5, 0.5]]), rho=0.0)[0]) > 1e-2  # one alone does not
True
>>> bonferroni_min(0.001, 2)
0.002
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Smallest tail probability combined; calibrators never report 0, but a bug upstream must not give -inf.
P_FLOOR = 1e-300


def bonferroni_min(p_min: float, n: int) -> float:
    """``min(1, n * min p)`` of one event's ``n`` detectors (``p_min``: their smallest); valid under any dependence."""
    if n <= 0:
        return 1.0
    return min(1.0, n * max(float(p_min), P_FLOOR))


def log_covariance(rho: float) -> float:
    """Covariance of ``-2 ln p_i`` and ``-2 ln p_j`` for one-sided p-values of normals with correlation ``rho``.

    Kost & McDermott (2002), eq. 3 (their fit is within 0.0006 of the exact value for rho in [-0.98, 1]).

    >>> round(log_covariance(0.0), 3), round(log_covariance(1.0), 3)
    (0.0, 4.0)
    """
    return 3.263 * rho + 0.710 * rho**2 + 0.027 * rho**3


def fisher_brown(p: np.ndarray, *, rho: float) -> np.ndarray:
    """Fused tail probability per row of ``p`` (``(n, k)``; NaN marks a missing modality).

    Rows with a single p-value return it unchanged; rows with none return 1.
    """
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    present = ~np.isnan(p)
    k = present.sum(axis=1)
    logs = np.where(present, -2.0 * np.log(np.clip(np.where(present, p, 1.0), P_FLOOR, 1.0)), 0.0)
    x = logs.sum(axis=1)
    mean = 2.0 * k
    var = 4.0 * k + 2.0 * (k * (k - 1) / 2.0) * log_covariance(rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(k > 0, var / (2.0 * mean), 1.0)
        f = np.where(k > 0, 2.0 * mean**2 / var, 2.0)
        fused = stats.chi2.sf(x / c, f)
    single = k == 1
    if single.any():
        fused[single] = np.nanmin(np.where(present[single], p[single], np.inf), axis=1)
    fused[k == 0] = 1.0
    return np.clip(fused, P_FLOOR, 1.0)


def modality_shares(p: np.ndarray) -> np.ndarray:
    """Each present modality's share of Fisher's statistic (``-2 ln p_i / X``): its weight in the explanation."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    present = ~np.isnan(p)
    logs = np.where(present, -np.log(np.clip(np.where(present, p, 1.0), P_FLOOR, 1.0)), 0.0)
    total = logs.sum(axis=1, keepdims=True)
    return np.divide(logs, total, out=np.where(present, 1.0 / np.maximum(present.sum(axis=1, keepdims=True), 1),
                                                0.0), where=total > 0)


def calibrated_score(p: float) -> float:
    """``-log10 p``, the scale every threshold in linewatch is on."""
    return float(-np.log10(max(p, P_FLOOR)))
