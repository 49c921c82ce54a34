"""Drift of a model's inputs against the reference sample it was trained on, per model version and asset.

The reference is the thinned training rows saved with the model
(:attr:`ModelBundle.input_reference <linewatch.detectors.bundle.ModelBundle.input_reference>`).
The statistics are :class:`~linewatch.signals.drift.FeatureDriftMonitor`'s (PSI in reference
quantile bins, two-sample KS, ADWIN per standardised feature); the verdicts are those of
:mod:`linewatch.detectors.score_drift` (a PSI counts only beyond its sampling noise; retraining is
recommended once two disjoint windows of a feature have drifted), per feature, so a report names
the inputs that moved: a recalibrated gauge moves its own characteristic, a re-gained
accelerometer its level features but not its shape features (kurtosis, crest factor).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> mon = InputDriftMonitor(feature_names=["bore", "depth"], reference=rng.normal(size=(2000, 2)))
>>> X = rng.normal(size=(1500, 2)) + np.array([0.0, 1.0])
>>> mon.update(np.arange(1500), X)[-1].drifted_features()
['depth']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from linewatch.detectors.score_drift import (
    DEFAULT_KS_ALPHA,
    DEFAULT_REPORT_EVERY,
    DEFAULT_WINDOW,
    MIN_WINDOW,
    SustainedDrift,
    psi_noise_level,
)
from linewatch.errors import ConfigError, DataError
from linewatch.signals.drift import DEFAULT_PSI_THRESHOLD, FeatureDriftMonitor


@dataclass(frozen=True)
class InputDriftReport:
    """One model's input features on one asset at one moment (per-feature arrays in feature order)."""

    ts: Any
    feature_names: tuple[str, ...]
    n: np.ndarray  # rows in each feature's window
    psi: np.ndarray
    ks_statistic: np.ndarray
    ks_pvalue: np.ndarray
    adwin: np.ndarray
    drifted: np.ndarray
    retrain_recommended: np.ndarray
    new_recommendation: np.ndarray

    def drifted_features(self) -> list[str]:
        return [f for f, d in zip(self.feature_names, self.drifted, strict=True) if d]


class InputDriftMonitor:
    """Rolling drift checks of one (model version, asset)'s inputs against the training reference sample.

    The statistics are :class:`~linewatch.signals.drift.FeatureDriftMonitor`'s (PSI in reference
    quantile bins, two-sample KS, ADWIN per standardised feature); this adds the report cadence
    and the sustained rule of :class:`ScoreDriftMonitor`, per feature. Rows may hold NaN where a
    feature was not observed at that time (long-format inputs): the NaN rows of a feature are left
    out of that feature's checks by monitoring each feature on its own.
    """

    def __init__(
        self,
        *,
        feature_names: Sequence[str],
        reference: np.ndarray,
        window: int = DEFAULT_WINDOW,
        report_every: int = DEFAULT_REPORT_EVERY,
        min_window: int = MIN_WINDOW,
        psi_threshold: float = DEFAULT_PSI_THRESHOLD,
        ks_alpha: float = DEFAULT_KS_ALPHA,
    ) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != len(feature_names):
            raise DataError(f"the input reference is {ref.shape} for {len(feature_names)} features")
        if report_every < 1:
            raise ConfigError(f"report_every={report_every} must be >= 1")
        self.feature_names = tuple(feature_names)
        self.window = window
        self.report_every = report_every
        self._psi_threshold, self._ks_alpha = psi_threshold, ks_alpha
        self._monitors = [
            FeatureDriftMonitor(feature_names=[name], window=window, min_window=min_window,
                                psi_threshold=psi_threshold, ks_alpha=ks_alpha).fit(col[np.isfinite(col)][:, None])
            for name, col in zip(self.feature_names, ref.T, strict=True)
        ]
        d = len(self.feature_names)
        self._since_report = np.zeros(d, dtype=np.int64)
        self._n_seen = np.zeros(d, dtype=np.int64)
        # Each feature's latest verdicts (features report at their own pace when some are missing).
        self._psi, self._ks, self._ks_p = np.zeros(d), np.zeros(d), np.ones(d)
        self._n, self._adwin, self._drifted = np.zeros(d, dtype=np.int64), np.zeros(d, bool), np.zeros(d, bool)
        self._streaks = [SustainedDrift.new(1, window) for _ in self.feature_names]
        self._sustained, self._new = np.zeros(d, dtype=bool), np.zeros(d, dtype=bool)
        # ADWIN changes since each feature's last report (every update's own report resets the monitor's count).
        self._adwin_pending = np.zeros(d, dtype=bool)

    def update(self, ts: Sequence[Any] | np.ndarray, X: np.ndarray) -> list[InputDriftReport]:
        """Feed rows ``(n, d)`` in event order; a report whenever some feature completes ``report_every`` rows."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names) or len(ts) != len(X):
            raise DataError(f"input rows {X.shape} with {len(ts)} times do not match {len(self.feature_names)} "
                            "features")
        reports: list[InputDriftReport] = []
        cum = np.cumsum(np.isfinite(X), axis=0)  # observed values per feature up to each row
        start = 0
        while start < len(X):
            # Rows until the next feature reaches a report: feed that chunk, report, go on.
            base = cum[start - 1] if start else np.zeros(X.shape[1], dtype=np.int64)
            need = base + self.report_every - self._since_report
            due = [int(np.searchsorted(cum[:, j], need[j])) for j in range(X.shape[1])]
            first = min(due)
            hit = first < len(X)
            stop = first + 1 if hit else len(X)
            chunk = X[start:stop]
            for j, mon in enumerate(self._monitors):
                col = chunk[:, j]
                col = col[np.isfinite(col)]
                if len(col):
                    rep = mon.update(col[:, None])
                    self._adwin_pending[j] |= bool(rep.adwin_changes[0] > 0)
                    self._n_seen[j] += len(col)
                    self._since_report[j] += len(col)
                    if self._since_report[j] >= self.report_every:
                        self._report_feature(j, rep)
            start = stop
            if hit:
                reports.append(self._snapshot(ts[stop - 1]))
                self._new[:] = False
        return reports

    def _report_feature(self, j: int, rep: Any) -> None:
        self._psi[j], self._ks[j], self._ks_p[j] = rep.psi[0], rep.ks_statistic[0], rep.ks_pvalue[0]
        self._n[j], self._adwin[j] = rep.n_recent, self._adwin_pending[j]
        # The score monitor's rule: a PSI counts only beyond the sampling noise of a window this size.
        material = rep.psi[0] > self._psi_threshold and rep.psi[0] > psi_noise_level(rep.n_recent, self._ks_alpha)
        self._drifted[j] = bool(material or rep.ks_pvalue[0] < self._ks_alpha or self._adwin_pending[j])
        self._adwin_pending[j] = False
        sustained, new = self._streaks[j].update(self._drifted[j:j + 1], int(self._n_seen[j]))
        self._sustained[j], self._new[j] = sustained[0], new[0]
        self._since_report[j] = 0

    def _snapshot(self, ts: Any) -> InputDriftReport:
        return InputDriftReport(
            ts=ts, feature_names=self.feature_names, n=self._n.copy(), psi=self._psi.copy(),
            ks_statistic=self._ks.copy(), ks_pvalue=self._ks_p.copy(), adwin=self._adwin.copy(),
            drifted=self._drifted.copy(), retrain_recommended=self._sustained.copy(),
            new_recommendation=self._new.copy(),
        )
