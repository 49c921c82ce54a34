"""Has a model's baseline moved? Drift of calibrated scores and of inputs, per model version and asset.

Why the score reference is known exactly
----------------------------------------
A calibrated tail probability is, by construction, Uniform(0, 1) on normal data (that is what
"P(a normal event scores at least this high)" means), so the calibrated score ``-log10 p`` is
exponential with mean ``1/ln 10``. Score drift therefore needs no stored reference sample: a
window of recent tail probabilities is compared with Uniform(0, 1) by

- **PSI** in ten equal-width bins (the uniform's deciles; :func:`linewatch.signals.drift.psi`
  with an exact uniform grid as the reference), read as < 0.1 stable, > 0.25 a real shift;
- **KS**, one sample against the uniform CDF (``scipy.stats.kstest``);
- **Page-Hinkley** (River) on the standardised score stream ``z = s·ln 10 - 1`` (mean 0, sd 1
  under the reference), which says *when* the mean moved;
- the window's **alarm rate** with its Clopper-Pearson interval against the false-alarm rate the
  calibration promised and its interval (the calibration report's ``far_interval_90``, else the
  point ``10**-threshold``): alarming significantly more often than promised is drift too.

A lighting change, a dirty lens or a recalibrated sensor moves every score a little; the fault
detector then alarms too often, and the right reaction is to retrain on the new normal. **A drift
verdict never raises a threshold** (DESIGN.md): it recommends retraining, as its own alert kind.

The two verdicts
----------------
``drifted`` (one window): PSI > ``psi_threshold`` (0.25) *and* beyond what sampling noise gives a
window of that size (under the reference ``n·PSI`` is about χ² with ``bins - 1`` degrees of freedom,
so the PSI must also exceed its ``1 - ks_alpha`` quantile ``χ²_9(0.999)/n``: 0.056 at n = 500, 0.56
at n = 50, where the 0.25 rule of thumb alone would flag one normal window in five), or KS p <
``ks_alpha`` (1e-3), or Page-Hinkley fired since the last report, or the alarm rate's interval lies
wholly above the promised interval. ``retrain_recommended`` (sustained): the window has drifted at
every report for at least one full window of new scores, i.e. two *disjoint* windows both drifted. Why that rule
rather than "two consecutive reports": reports come every ``report_every`` scores from an
overlapping window, so two consecutive reports share most of their scores and one unlucky
stretch would count twice; a Page-Hinkley hit is momentary and cannot carry a streak by itself.
The false-positive rate of the rule on calibrated uniform input is measured in
``tests/detectors/test_score_drift.py`` (200,000 uniform tails: no recommendation).

What it cannot see: autocorrelated normal scores make a window worth fewer independent scores
than its length, so KS and PSI flag more often on such streams than on i.i.d. ones. The sustained
rule keeps a short unlucky stretch from becoming a recommendation, but not a slow regime the
training data never covered (a load that steps every half hour, the day cycle of a hall): train on
data that covers the operating range (``docs/drift.md``).

Inputs: :class:`~linewatch.detectors.input_drift.InputDriftMonitor` applies the same verdicts to
the model's input features against the reference sample stored with the model.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> mon = ScoreDriftMonitor(promised=(1e-3, 5e-4, 2e-3), window=500, report_every=250)
>>> calm = mon.update(np.arange(2000.0), rng.uniform(size=2000), np.zeros(2000, bool))
>>> any(r.drifted for r in calm)
False
>>> moved = mon.update(np.arange(2000.0, 4000.0), rng.uniform(size=2000) ** 3, np.zeros(2000, bool))
>>> moved[-1].drifted, moved[-1].retrain_recommended
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from linewatch.detectors.calibration import MIN_TAIL_PROBABILITY
from linewatch.errors import ConfigError, DataError
from linewatch.signals.drift import DEFAULT_PSI_THRESHOLD, psi

#: Recent scores compared with the reference: enough for KS to see a 0.1 shift in the CDF
#: (its 1e-3 critical distance at n = 500 is ~0.087), few enough to react within a shift.
DEFAULT_WINDOW = 500
#: A report (one drift row) every this many scores.
DEFAULT_REPORT_EVERY = 100
#: Below this many scores in the window a report says nothing (PSI 0, KS p 1).
MIN_WINDOW = 100
#: KS p-value below which a window has drifted.
DEFAULT_KS_ALPHA = 1e-3
#: Coverage of the Clopper-Pearson interval of the window's alarm rate (two-sided).
ALARM_RATE_COVERAGE = 0.99
#: PSI bins for tail probabilities: the uniform's deciles.
PSI_BINS = 10
#: An exact Uniform(0, 1) grid: its quantiles are the deciles, so :func:`psi` bins at 0.1, ..., 0.9.
UNIFORM_GRID = np.linspace(0.0, 1.0, 1001)[:, None]
#: Page-Hinkley on z = s·ln10 - 1 (sd 1 under the reference). delta is the slack per score and
#: threshold the evidence needed: a 0.5-sd mean shift is found after about 2 * threshold scores,
#: and 200,000 uniform tails give no detection (the test measures it).
PH_DELTA = 0.1
PH_THRESHOLD = 100.0
#: Calibrated scores are capped here for Page-Hinkley so one extreme event cannot fire it alone.
PH_SCORE_CAP = 6.0


def uniform_tail_drift(p: np.ndarray) -> tuple[float, float, float]:
    """``(psi, ks_statistic, ks_pvalue)`` of tail probabilities against Uniform(0, 1).

    >>> rng = np.random.default_rng(3)
    >>> a, _, pa = uniform_tail_drift(rng.uniform(size=1000))
    >>> b, _, pb = uniform_tail_drift(rng.uniform(size=1000) ** 2)
    >>> bool(a < 0.05 < 0.25 < b), bool(pa > 1e-3 > pb)
    (True, True)
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    value = float(psi(UNIFORM_GRID, p[:, None], bins=PSI_BINS)[0])
    ks = stats.kstest(p, "uniform")
    return value, float(ks.statistic), float(ks.pvalue)


def psi_noise_level(n: int, alpha: float = DEFAULT_KS_ALPHA, bins: int = PSI_BINS) -> float:
    """The PSI that ``n`` reference-distributed values exceed with probability ``alpha``.

    For small shifts PSI ≈ Σ (c - r)² / r, i.e. Pearson's χ² over ``n``, with ``bins - 1`` degrees
    of freedom under the reference: a window's PSI must beyond this to be more than noise.

    >>> round(psi_noise_level(500), 3), round(psi_noise_level(100), 3)
    (0.056, 0.279)
    """
    return float(stats.chi2.ppf(1.0 - alpha, bins - 1)) / max(n, 1)


def clopper_pearson(k: int, n: int, coverage: float = ALARM_RATE_COVERAGE) -> tuple[float, float]:
    """Exact binomial interval of a rate from ``k`` hits in ``n`` trials.

    >>> lo, hi = clopper_pearson(0, 500)
    >>> lo, round(hi, 4)
    (0.0, 0.0105)
    """
    if n <= 0:
        return 0.0, 1.0
    a = (1.0 - coverage) / 2.0
    lo = float(stats.beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    hi = float(stats.beta.ppf(1.0 - a, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def promise_from_threshold(threshold: float) -> tuple[float, float, float]:
    """The point promise of a calibrated threshold: ``threshold = -log10(target FAR)``."""
    far = float(10.0 ** -threshold)
    return far, far, far


def promise_from_report(report: dict[str, Any], threshold: float) -> tuple[float, float, float]:
    """``(far, low, high)`` from a calibration report (``target_far``, ``far_interval_90``), else the threshold's."""
    interval = report.get("far_interval_90") if report else None
    far = report.get("target_far") if report else None
    if far is None or not interval or len(interval) != 2:
        return promise_from_threshold(threshold)
    return float(far), float(interval[0]), float(interval[1])


@dataclass
class SustainedDrift:
    """The retrain rule per item: drifted at every report since ``start``, for at least ``span`` items seen."""

    span: int
    start: np.ndarray  # n_seen when the current drifted streak began, -1 when none
    announced: np.ndarray  # a recommendation was already made for this streak

    @classmethod
    def new(cls, n_items: int, span: int) -> SustainedDrift:
        return cls(span, np.full(n_items, -1, dtype=np.int64), np.zeros(n_items, dtype=bool))

    def update(self, drifted: np.ndarray, n_seen: int) -> tuple[np.ndarray, np.ndarray]:
        """``(sustained, newly_sustained)`` after a report at ``n_seen`` items."""
        self.start = np.where(drifted, np.where(self.start < 0, n_seen, self.start), -1)
        # The streak began at the report whose window ended at `start`; it is sustained once a whole
        # window of scores newer than that report has drifted too.
        sustained = drifted & (self.start >= 0) & (n_seen - self.start >= self.span)
        new = sustained & ~self.announced
        self.announced = sustained
        return sustained, new


@dataclass(frozen=True)
class ScoreDriftReport:
    """The calibrated score stream of one model version on one asset at one moment."""

    ts: Any  # event time of the newest score in the window (whatever the caller fed: datetime or float)
    n: int
    n_seen: int
    psi: float
    ks_statistic: float
    ks_pvalue: float
    page_hinkley: bool
    alarm_rate: float
    alarm_rate_low: float
    alarm_rate_high: float
    promised_far: float
    promised_far_low: float
    promised_far_high: float
    alarm_excess: bool
    drifted: bool
    retrain_recommended: bool
    #: True only at the report where the sustained verdict first holds (one recommendation per episode).
    new_recommendation: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def detail(self) -> str:
        return "; ".join(self.reasons)


class ScoreDriftMonitor:
    """Rolling drift checks of one (model version, asset)'s calibrated tail probabilities.

    Parameters
    ----------
    promised:
        ``(far, low, high)``: the false-alarm rate the calibration promised and its interval.
    window, report_every:
        Rolling window length and report cadence, in scores.
    psi_threshold, ks_alpha:
        The window's PSI and KS decision levels.
    ph_delta, ph_threshold:
        Page-Hinkley's slack and detection threshold on the standardised score.
    """

    def __init__(
        self,
        *,
        promised: tuple[float, float, float],
        window: int = DEFAULT_WINDOW,
        report_every: int = DEFAULT_REPORT_EVERY,
        min_window: int = MIN_WINDOW,
        psi_threshold: float = DEFAULT_PSI_THRESHOLD,
        ks_alpha: float = DEFAULT_KS_ALPHA,
        ph_delta: float = PH_DELTA,
        ph_threshold: float = PH_THRESHOLD,
    ) -> None:
        if not 1 <= min_window <= window:
            raise ConfigError(f"need 1 <= min_window ({min_window}) <= window ({window})")
        if report_every < 1:
            raise ConfigError(f"report_every={report_every} must be >= 1")
        far, lo, hi = (float(v) for v in promised)
        if not 0.0 < far < 1.0 or not 0.0 <= lo <= far <= hi <= 1.0:
            raise ConfigError(f"promised false-alarm rate {promised} must be (far, low, high) with 0 <= low <= "
                              "far <= high <= 1; take it from the model's calibration report")
        self.promised = (far, lo, hi)
        self.window = window
        self.report_every = report_every
        self.min_window = min_window
        self.psi_threshold = psi_threshold
        self.ks_alpha = ks_alpha
        self.ph_delta = ph_delta
        self.ph_threshold = ph_threshold
        self._p = np.empty(0)
        self._alarm = np.empty(0, dtype=bool)
        self._n_seen = 0
        self._since_report = 0
        self._ph_fired = False
        self._ph: Any = None
        self._streak = SustainedDrift.new(1, window)

    def _page_hinkley(self) -> Any:
        if self._ph is None:
            from river.drift import PageHinkley

            self._ph = PageHinkley(min_instances=30, delta=self.ph_delta, threshold=self.ph_threshold, mode="both")
        return self._ph

    def update(self, ts: Sequence[Any] | np.ndarray, tail_probability: np.ndarray,
               is_anomaly: np.ndarray) -> list[ScoreDriftReport]:
        """Feed scores in event order; returns the reports due within them (one per ``report_every``)."""
        p = np.asarray(tail_probability, dtype=np.float64).ravel()
        alarm = np.asarray(is_anomaly, dtype=bool).ravel()
        if len(ts) != len(p) or len(p) != len(alarm):
            raise DataError(f"ts ({len(ts)}), tail_probability ({len(p)}) and is_anomaly ({len(alarm)}) "
                            "must have one value per score")
        if len(p) and (not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0):
            raise DataError("tail probabilities must lie in [0, 1]; they come from a calibrated detector")
        reports: list[ScoreDriftReport] = []
        start = 0
        while start < len(p):
            take = min(self.report_every - self._since_report, len(p) - start)
            self._feed(p[start:start + take], alarm[start:start + take])
            start += take
            if self._since_report == self.report_every:
                reports.append(self.report(ts[start - 1]))
        return reports

    def _feed_page_hinkley(self, p: np.ndarray) -> None:
        ph = self._page_hinkley()
        z = np.minimum(-np.log10(np.maximum(p, MIN_TAIL_PROBABILITY)), PH_SCORE_CAP) * math.log(10.0) - 1.0
        for v in z:  # Page-Hinkley is sequential; River's update is the per-score cost
            ph.update(float(v))
            self._ph_fired |= bool(ph.drift_detected)

    def _feed(self, p: np.ndarray, alarm: np.ndarray) -> None:
        self._feed_page_hinkley(p)
        self._p = np.concatenate([self._p, p])[-self.window:]
        self._alarm = np.concatenate([self._alarm, alarm])[-self.window:]
        self._n_seen += len(p)
        self._since_report += len(p)

    def state(self) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """``(counters, window tails, window alarms)``: what :meth:`restore` needs (JSON-ready counters)."""
        counters = {"n_seen": self._n_seen, "since_report": self._since_report,
                    "streak_start": int(self._streak.start[0]), "announced": bool(self._streak.announced[0])}
        return counters, self._p.copy(), self._alarm.copy()

    def restore(self, counters: dict[str, Any], p: np.ndarray, alarm: np.ndarray) -> ScoreDriftMonitor:
        """Continue from :meth:`state`. Page-Hinkley is re-warmed on the saved window (River's detectors
        have no safe serialisation), so after a restart it remembers at most ``window`` scores."""
        self._p, self._alarm = np.array(p, dtype=np.float64), np.array(alarm, dtype=bool)
        self._ph = None
        self._feed_page_hinkley(self._p)
        self._ph_fired = False
        self._n_seen, self._since_report = int(counters["n_seen"]), int(counters["since_report"])
        self._streak.start[0], self._streak.announced[0] = counters["streak_start"], counters["announced"]
        return self

    def report(self, ts: Any) -> ScoreDriftReport:
        """The verdicts on the current window; Page-Hinkley's flag restarts after each report."""
        n = len(self._p)
        far, far_lo, far_hi = self.promised
        k = int(self._alarm.sum())
        rate = k / n if n else 0.0
        rate_lo, rate_hi = clopper_pearson(k, n)
        reasons: list[str] = []
        if n >= self.min_window:
            value, ks_stat, ks_p = uniform_tail_drift(self._p)
        else:
            value, ks_stat, ks_p = 0.0, 0.0, 1.0
        excess = n >= self.min_window and rate_lo > far_hi
        if value > self.psi_threshold and value > psi_noise_level(n, self.ks_alpha):
            reasons.append(f"PSI {value:.2f} > {self.psi_threshold:g} against Uniform(0,1)")
        if ks_p < self.ks_alpha:
            reasons.append(f"KS {ks_stat:.3f} (p={ks_p:.1e}) against Uniform(0,1)")
        if self._ph_fired:
            reasons.append("Page-Hinkley: the mean calibrated score moved")
        if excess:
            reasons.append(f"alarm rate {rate:.2%} [{rate_lo:.2%}, {rate_hi:.2%}] above the promised "
                           f"{far:.2%} [{far_lo:.2%}, {far_hi:.2%}]")
        drifted = bool(reasons)
        sustained, new = self._streak.update(np.array([drifted]), self._n_seen)
        rep = ScoreDriftReport(
            ts=ts, n=n, n_seen=self._n_seen, psi=value, ks_statistic=ks_stat, ks_pvalue=ks_p,
            page_hinkley=self._ph_fired, alarm_rate=rate, alarm_rate_low=rate_lo, alarm_rate_high=rate_hi,
            promised_far=far, promised_far_low=far_lo, promised_far_high=far_hi, alarm_excess=excess,
            drifted=drifted, retrain_recommended=bool(sustained[0]), new_recommendation=bool(new[0]),
            reasons=tuple(reasons),
        )
        self._ph_fired = False
        self._since_report = 0
        return rep
