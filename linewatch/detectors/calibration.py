"""Raw score -> tail probability under normal data, and a threshold from a false-alarm target.

Every detector speaks its own units (a Mahalanobis distance, a reconstruction error, a
patch distance). Fusion and alerting need one scale on which "0.001" means the same thing
everywhere: the probability that a *normal* event scores at least this high. A threshold
then reads as "one false alarm per 1/target_far normal events", whatever the modality.

Two calibrators share one small interface:

- :class:`EmpiricalCalibrator` ranks a raw score among held-out normal scores. Honest and
  assumption-free, but it cannot resolve probabilities below ``1/(n+1)``.
- :class:`PotCalibrator` (peaks over threshold) fits a generalized Pareto distribution to
  the top of the normal scores, so it can place a 1-in-100,000 threshold from 5,000
  normal samples. This is the extreme value theory result (Pickands-Balkema-de Haan)
  that SPOT-style detectors rely on.

``make_calibrator("auto", target_far)`` picks the empirical one when the sample resolves
the target with room to spare, POT otherwise.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> cal = EmpiricalCalibrator(target_far=0.01).fit(rng.normal(size=5000))
>>> bool(cal.is_alarm(np.array([0.0]))[0]), bool(cal.is_alarm(np.array([4.0]))[0])
(False, True)
>>> round(float(cal.threshold_), 1)
2.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from linewatch.errors import ConfigError, DataError, NotFittedError

#: Smallest probability we report; beyond this, extra digits are noise and -log10 stays finite.
MIN_TAIL_PROBABILITY = 1e-12
#: Empirical quantiles need several normal samples beyond the threshold to be stable.
MIN_EXCEEDANCES_FOR_EMPIRICAL = 10
#: POT fits the GPD to this upper fraction of the normal scores (a common, robust choice).
DEFAULT_POT_TAIL_FRACTION = 0.05
#: POT never models more than this share of the sample as "tail".
MAX_POT_TAIL_FRACTION = 0.5
#: Below this many exceedances a GPD fit is not trustworthy.
MIN_POT_EXCEEDANCES = 20


def calibration_split(n: int, fraction: float, *, what: str = "rows") -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered (fit, calibration) index arrays: calibrate on the *last* ``fraction`` of the data.

    In-sample scores are optimistically low, and so are the scores of rows that sit between
    fitting rows in an autocorrelated series (what a random hold-out gives), so the hold-out is
    the most recent stretch. Cross-fitting (:mod:`linewatch.detectors.cross_fit`) is the default
    and uses all the data; this is the explicit hold-out of ``calibration_fraction``.

    >>> fit, cal = calibration_split(10, 0.3)
    >>> fit.tolist(), cal.tolist()
    ([0, 1, 2, 3, 4, 5, 6], [7, 8, 9])
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"calibration_fraction={fraction!r} must be in (0, 1), e.g. 0.3")
    n_cal = round(fraction * n)
    if n_cal < 1 or n_cal >= n:
        raise DataError(
            f"{n} {what} cannot be split {1 - fraction:.0%} / {fraction:.0%} into fitting and calibration; "
            f"give more known-good {what}"
        )
    return np.arange(n - n_cal), np.arange(n - n_cal, n)


def too_few_normal_scores(n: int, target_far: float) -> str:
    """What to do when ``n`` held-out normal scores cannot place a threshold at ``target_far``."""
    far_ok = MIN_EXCEEDANCES_FOR_EMPIRICAL / n
    return (
        f"{n} held-out normal scores cannot calibrate target_far={target_far:g}: the empirical calibrator "
        f"needs {math.ceil(MIN_EXCEEDANCES_FOR_EMPIRICAL / target_far)} and POT at least "
        f"{math.ceil((MIN_POT_EXCEEDANCES + 1) / MAX_POT_TAIL_FRACTION)}; train on more known-good data "
        "(or, with an explicit hold-out, a larger --calibration-fraction)"
        + (f" or raise target_far to {far_ok:.2g} or more" if far_ok < 1 else "")
    )


def surprise(p: np.ndarray) -> np.ndarray:
    """``-log10(p)``: a calibrated score where 3 means "one in a thousand normal events"."""
    return -np.log10(np.clip(p, MIN_TAIL_PROBABILITY, 1.0))


def _validate_scores(scores: np.ndarray, *, what: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0:
        raise DataError(f"{what}: no scores given")
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: scores contain NaN or infinite values")
    return arr


def _validate_far(target_far: float) -> float:
    if not 0.0 < target_far < 1.0:
        raise ConfigError(
            f"target_far={target_far!r} must be a probability in (0, 1), e.g. 0.001 for one false alarm "
            "per thousand normal events"
        )
    return float(target_far)


@dataclass
class EmpiricalCalibrator:
    """Tail probability = share of held-out normal scores at least as high (with +1 smoothing)."""

    target_far: float = 1e-3
    reference_: np.ndarray | None = field(default=None, repr=False)
    threshold_: float | None = None

    kind = "empirical"

    def fit(self, normal_scores: np.ndarray) -> EmpiricalCalibrator:
        far = _validate_far(self.target_far)
        ref = np.sort(_validate_scores(normal_scores, what="EmpiricalCalibrator.fit"))
        needed = math.ceil(MIN_EXCEEDANCES_FOR_EMPIRICAL / far)
        if ref.size < needed:
            raise ConfigError(
                f"an empirical threshold at target_far={far:g} needs at least {needed} normal scores "
                f"(got {ref.size}); use PotCalibrator (method 'pot' or 'auto') or a larger target_far"
            )
        self.reference_ = ref
        # The smallest score whose smoothed tail probability is at most the target.
        k = math.floor(far * (ref.size + 1)) - 1  # number of reference scores allowed at or above
        self.threshold_ = float(ref[ref.size - 1 - k]) if k >= 0 else float(np.nextafter(ref[-1], np.inf))
        return self

    def tail_probability(self, raw: np.ndarray) -> np.ndarray:
        if self.reference_ is None:
            raise NotFittedError("EmpiricalCalibrator is not fitted; call fit() on normal scores first")
        raw = np.asarray(raw, dtype=np.float64)
        at_or_above = self.reference_.size - np.searchsorted(self.reference_, raw, side="left")
        return (at_or_above + 1.0) / (self.reference_.size + 1.0)

    def is_alarm(self, raw: np.ndarray) -> np.ndarray:
        if self.threshold_ is None:
            raise NotFittedError("EmpiricalCalibrator is not fitted; call fit() on normal scores first")
        return np.asarray(raw, dtype=np.float64) > self.threshold_

    def to_dict(self) -> dict[str, Any]:
        if self.reference_ is None:
            raise NotFittedError("cannot save an unfitted calibrator")
        return {
            "kind": self.kind,
            "target_far": self.target_far,
            "threshold": self.threshold_,
            "reference": self.reference_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmpiricalCalibrator:
        return cls(
            target_far=d["target_far"],
            reference_=np.asarray(d["reference"], dtype=np.float64),
            threshold_=d["threshold"],
        )


@dataclass
class PotCalibrator:
    """Empirical body, generalized-Pareto tail above the ``1 - tail_fraction`` quantile."""

    target_far: float = 1e-3
    tail_fraction: float = DEFAULT_POT_TAIL_FRACTION
    body_: EmpiricalCalibrator | None = field(default=None, repr=False)
    u_: float | None = None
    shape_: float | None = None
    scale_: float | None = None
    zeta_: float | None = None
    threshold_: float | None = None
    tail_fraction_: float | None = None  # the fraction actually fitted (wider on small samples)

    kind = "pot"

    def fit(self, normal_scores: np.ndarray) -> PotCalibrator:
        far = _validate_far(self.target_far)
        ref = np.sort(_validate_scores(normal_scores, what="PotCalibrator.fit"))
        # Small calibration sets (image models hold out tens of good frames) widen the tail, up to
        # half the sample, until it keeps one score more than a stable GPD fit needs (the spare one
        # absorbs the quantile's interpolation and ties); the fraction actually used is saved.
        needed = (MIN_POT_EXCEEDANCES + 1) / ref.size
        if needed > MAX_POT_TAIL_FRACTION:
            raise ConfigError(too_few_normal_scores(ref.size, far))
        fraction = max(self.tail_fraction, needed)
        u = float(np.quantile(ref, 1.0 - fraction))
        excess = ref[ref > u] - u
        if excess.size < MIN_POT_EXCEEDANCES:
            raise ConfigError(
                f"POT needs at least {MIN_POT_EXCEEDANCES} distinct normal scores above the "
                f"{1 - fraction:.0%} quantile (got {excess.size} from {ref.size}: many scores are tied); "
                "calibrate on more, or more varied, known-good data"
            )
        self.tail_fraction_ = fraction
        shape, _, scale = stats.genpareto.fit(excess, floc=0.0)
        body = EmpiricalCalibrator(target_far=0.5)
        body.reference_, body.threshold_ = ref, float(ref[-1])
        self.body_, self.u_, self.shape_, self.scale_ = body, u, float(shape), float(scale)
        self.zeta_ = excess.size / ref.size
        if far >= self.zeta_:
            k = math.floor(far * (ref.size + 1)) - 1
            self.threshold_ = float(ref[ref.size - 1 - k])
        else:
            self.threshold_ = u + float(stats.genpareto.ppf(1.0 - far / self.zeta_, shape, 0.0, scale))
        return self

    def tail_probability(self, raw: np.ndarray) -> np.ndarray:
        if self.body_ is None:
            raise NotFittedError("PotCalibrator is not fitted; call fit() on normal scores first")
        raw = np.asarray(raw, dtype=np.float64)
        p = self.body_.tail_probability(raw)
        above = raw > self.u_
        if above.any():
            tail = self.zeta_ * stats.genpareto.sf(raw[above] - self.u_, self.shape_, 0.0, self.scale_)
            p = p.copy()
            p[above] = np.maximum(tail, MIN_TAIL_PROBABILITY)
        return p

    def is_alarm(self, raw: np.ndarray) -> np.ndarray:
        if self.threshold_ is None:
            raise NotFittedError("PotCalibrator is not fitted; call fit() on normal scores first")
        return np.asarray(raw, dtype=np.float64) > self.threshold_

    def to_dict(self) -> dict[str, Any]:
        if self.body_ is None:
            raise NotFittedError("cannot save an unfitted calibrator")
        return {
            "kind": self.kind,
            "target_far": self.target_far,
            "tail_fraction": self.tail_fraction,
            "threshold": self.threshold_,
            "u": self.u_,
            "shape": self.shape_,
            "scale": self.scale_,
            "zeta": self.zeta_,
            "tail_fraction_used": self.tail_fraction_,
            "reference": self.body_.reference_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PotCalibrator:
        body = EmpiricalCalibrator(target_far=0.5)
        body.reference_ = np.asarray(d["reference"], dtype=np.float64)
        body.threshold_ = float(body.reference_[-1])
        return cls(
            target_far=d["target_far"],
            tail_fraction=d["tail_fraction"],
            body_=body,
            u_=d["u"],
            shape_=d["shape"],
            scale_=d["scale"],
            zeta_=d["zeta"],
            threshold_=d["threshold"],
            tail_fraction_=d.get("tail_fraction_used", d["tail_fraction"]),
        )


Calibrator = EmpiricalCalibrator | PotCalibrator


def make_calibrator(method: str, target_far: float, n_normal: int | None = None) -> Calibrator:
    """Build a calibrator by name: ``empirical``, ``pot`` or ``auto`` (empirical when it resolves the target)."""
    _validate_far(target_far)
    if method == "empirical":
        return EmpiricalCalibrator(target_far=target_far)
    if method == "pot":
        return PotCalibrator(target_far=target_far)
    if method == "auto":
        enough = n_normal is not None and n_normal >= math.ceil(MIN_EXCEEDANCES_FOR_EMPIRICAL / target_far)
        return EmpiricalCalibrator(target_far=target_far) if enough else PotCalibrator(target_far=target_far)
    raise ConfigError(f"unknown calibration method {method!r}; use 'empirical', 'pot' or 'auto'")


def calibrator_from_dict(d: dict[str, Any]) -> Calibrator:
    """Restore a calibrator saved with ``to_dict``."""
    kinds = {"empirical": EmpiricalCalibrator, "pot": PotCalibrator}
    if d.get("kind") not in kinds:
        raise ValueError(f"unknown calibrator kind {d.get('kind')!r} in saved model")
    return kinds[d["kind"]].from_dict(d)
