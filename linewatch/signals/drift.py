"""Drift of each sensor feature against the training reference: PSI, KS and ADWIN.

Why
---
A detector is only as good as the "normal" it learned. When the distribution of a feature
moves - a new supplier's bearings run quieter, a recalibrated thermocouple reads 2 °C
higher - scores shift for reasons that are not faults. The right reaction is to retrain on
the new normal, not to raise the threshold. This module tells the engineer
*which* feature moved and how much, with three complementary views:

- **PSI** (population stability index) of the recent window against the reference, in
  reference-quantile bins: the credit-risk rule of thumb reads < 0.1 stable, 0.1-0.25
  moderate, > 0.25 a real shift;
- **KS** two-sample statistic and p-value: distribution-free, sensitive to location and shape;
- **ADWIN** (River; Bifet & Gavaldà, 2007) on each standardised feature, fed row by row: an
  adaptive window that signals *when* the mean changed, with a false-positive bound ``delta``.

PSI and KS compare the last ``window`` rows seen with the reference; ADWIN has its own
memory. A feature is reported as drifted when PSI exceeds ``psi_threshold``, or the KS
p-value is below ``ks_alpha``, or ADWIN detected a change since the last report.

State and persistence: the reference sample and the recent rows are saved as arrays; ADWIN's
internal buckets are not (River offers no safe serialisation), so :meth:`FeatureDriftMonitor.load`
re-warms ADWIN by replaying the saved recent rows - it remembers at most ``window`` rows
after a restart, which is documented and deterministic.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(2000, 2))
>>> mon = FeatureDriftMonitor(feature_names=["rms", "kurtosis"], window=500).fit(ref)
>>> new = np.column_stack([rng.normal(size=600), rng.normal(1.0, 1.0, size=600)])
>>> rep = mon.update(new)
>>> rep.drifted.tolist(), bool(rep.psi[1] > 0.25)
([False, True], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from linewatch.detectors.base import as_batch, check_fitted, load_state, save_state
from linewatch.errors import ConfigError, DataError

#: Share added to every PSI bin so an empty bin gives a large but finite term.
PSI_EPSILON = 1e-4
#: PSI above this is a material shift (industry rule of thumb, Siddiqi 2006).
DEFAULT_PSI_THRESHOLD = 0.25
#: Reference rows kept for KS; evenly thinned beyond this (KS error ~ 1/sqrt(n) is then negligible).
MAX_REFERENCE_ROWS = 5000
_KIND = "feature_drift_monitor"


def psi(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> np.ndarray:
    """Population stability index per column, in quantile bins of ``reference``.

    ``Σ (c - r) ln(c / r)`` over bins, where ``r`` and ``c`` are the reference and current
    shares; zero for identical distributions, symmetric in the two samples' shares.

    >>> rng = np.random.default_rng(1)
    >>> r = rng.normal(size=(5000, 1))
    >>> float(psi(r, rng.normal(size=(5000, 1)))[0]) < 0.01, float(psi(r, r + 1.0)[0]) > 0.5
    (True, True)
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise DataError(f"psi needs two (n, d) arrays with the same d, got {ref.shape} and {cur.shape}")
    if bins < 2:
        raise ConfigError(f"bins={bins} must be >= 2")
    edges = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1], axis=0)  # (bins - 1, d) inner edges

    def shares(x: np.ndarray) -> np.ndarray:
        # Bin index of each value = number of inner edges below it; vectorised over columns.
        idx = (x[:, None, :] > edges[None, :, :]).sum(axis=1)  # (n, d)
        counts = (idx[:, :, None] == np.arange(bins)[None, None, :]).sum(axis=0)  # (d, bins)
        return (counts + PSI_EPSILON * x.shape[0]) / (x.shape[0] * (1 + bins * PSI_EPSILON))

    r, c = shares(ref), shares(cur)
    return ((c - r) * np.log(c / r)).sum(axis=1)


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift verdicts at one moment."""

    feature_names: tuple[str, ...]
    psi: np.ndarray
    ks_statistic: np.ndarray
    ks_pvalue: np.ndarray
    adwin_changes: np.ndarray
    drifted: np.ndarray
    n_recent: int

    @property
    def retrain_recommended(self) -> bool:
        """Any feature drifted: the baseline moved, so refit on recent known-good data."""
        return bool(self.drifted.any())

    def drifted_features(self) -> list[str]:
        return [f for f, d in zip(self.feature_names, self.drifted, strict=True) if d]


class FeatureDriftMonitor:
    """Watches each feature's distribution against the training reference.

    Parameters
    ----------
    feature_names:
        Column names, in order (a report names the drifted ones).
    window:
        Recent rows compared with the reference by PSI and KS.
    min_window:
        Below this many recent rows, PSI/KS are not computed (reported as 0 and p = 1).
    psi_bins, psi_threshold, ks_alpha:
        PSI bins and the two tests' decision levels.
    adwin_delta:
        ADWIN's confidence parameter (smaller = fewer false detections, slower to react).
    """

    def __init__(
        self,
        *,
        feature_names: Sequence[str],
        window: int = 1000,
        min_window: int = 100,
        psi_bins: int = 10,
        psi_threshold: float = DEFAULT_PSI_THRESHOLD,
        ks_alpha: float = 1e-3,
        adwin_delta: float = 0.002,
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.window = window
        self.min_window = min_window
        self.psi_bins = psi_bins
        self.psi_threshold = psi_threshold
        self.ks_alpha = ks_alpha
        self.adwin_delta = adwin_delta
        if not 1 <= min_window <= window:
            raise ConfigError(f"need 1 <= min_window ({min_window}) <= window ({window})")
        self.reference_: np.ndarray | None = None
        self.center_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.recent_: np.ndarray | None = None
        self._adwins: list[Any] = []
        self._changes: np.ndarray | None = None

    def _new_adwins(self) -> None:
        from river.drift import ADWIN

        self._adwins = [ADWIN(delta=self.adwin_delta) for _ in self.feature_names]
        self._changes = np.zeros(len(self.feature_names), dtype=np.int64)

    def fit(self, reference: np.ndarray) -> FeatureDriftMonitor:
        """Store the training reference (thinned to :data:`MAX_REFERENCE_ROWS`) and reset the stream state."""
        ref = as_batch(reference, n_features=len(self.feature_names))
        if ref.shape[0] < self.min_window:
            raise DataError(f"the drift reference needs at least min_window={self.min_window} rows")
        if ref.shape[0] > MAX_REFERENCE_ROWS:
            ref = ref[np.linspace(0, ref.shape[0] - 1, MAX_REFERENCE_ROWS).round().astype(np.int64)]
        self.reference_ = ref
        self.center_ = ref.mean(axis=0)
        sd = ref.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        self.recent_ = np.empty((0, ref.shape[1]))
        self._new_adwins()
        return self

    def _feed_adwin(self, X: np.ndarray) -> None:
        Z = (X - self.center_) / self.scale_
        for row in Z:  # ADWIN is inherently sequential; per-row cost is in River's C code
            for j, v in enumerate(row):
                adwin = self._adwins[j]
                adwin.update(float(v))
                if adwin.drift_detected and self._changes is not None:
                    self._changes[j] += 1

    def update(self, X: np.ndarray) -> DriftReport:
        """Feed ordered rows ``(n, d)`` and return the report after them."""
        check_fitted(self, "reference_")
        X = as_batch(X, n_features=len(self.feature_names))
        self._feed_adwin(X)
        self.recent_ = np.vstack([self.recent_, X])[-self.window :]
        return self.report()

    def report(self, *, reset_changes: bool = True) -> DriftReport:
        """Current verdicts; ADWIN change counts restart from zero unless ``reset_changes=False``."""
        check_fitted(self, "reference_")
        d = len(self.feature_names)
        n = self.recent_.shape[0]
        if n >= self.min_window:
            p = psi(self.reference_, self.recent_, bins=self.psi_bins)
            ks = stats.ks_2samp(self.reference_, self.recent_, axis=0)
            ks_stat = np.asarray(ks.statistic, dtype=np.float64)
            ks_p = np.asarray(ks.pvalue, dtype=np.float64)
        else:
            p, ks_stat, ks_p = np.zeros(d), np.zeros(d), np.ones(d)
        changes = self._changes.copy()
        drifted = (p > self.psi_threshold) | (ks_p < self.ks_alpha) | (changes > 0)
        if reset_changes:
            self._changes[:] = 0
        return DriftReport(self.feature_names, p, ks_stat, ks_p, changes, drifted, n)

    def save(self, path: str | Path) -> None:
        check_fitted(self, "reference_")
        params = {
            "feature_names": list(self.feature_names),
            "window": self.window,
            "min_window": self.min_window,
            "psi_bins": self.psi_bins,
            "psi_threshold": self.psi_threshold,
            "ks_alpha": self.ks_alpha,
            "adwin_delta": self.adwin_delta,
        }
        arrays = {"reference": self.reference_, "recent": self.recent_}
        save_state(path, kind=_KIND, params=params, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> FeatureDriftMonitor:
        """Restore; ADWIN is re-warmed from the saved recent rows (see the module docstring)."""
        params, arrays = load_state(path, kind=_KIND)
        mon = cls(**params).fit(arrays["reference"])
        mon._feed_adwin(arrays["recent"])
        mon._changes[:] = 0
        mon.recent_ = arrays["recent"]
        return mon
