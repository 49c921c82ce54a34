"""A deployable model: detector + calibrator + feature order + provenance, saved as one directory.

The bundle is what ``linewatch train`` writes, what a worker loads and what a backtest
evaluates, so all three score with identical code. Fitting splits the known-good rows:
the detector learns from one part and the calibrator from the detector's scores on the
other, because in-sample scores are optimistically low and would put the threshold too
low (too many false alarms in production).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(3000, 3))
>>> b = ModelBundle.fit("robust_mahalanobis", X, feature_names=["a", "b", "c"], target_far=0.01, seed=0)
>>> out = b.score(np.array([[0.0, 0.0, 0.0], [0.0, 9.0, 0.0]]))
>>> out.is_anomaly.tolist(), out.top_features()[1]
([False, True], 'b')
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.detectors.base import Explainer, as_batch, get_detector
from linewatch.detectors.calibration import (
    Calibrator,
    calibration_split,
    calibrator_from_dict,
    make_calibrator,
    surprise,
)
from linewatch.errors import ConfigError

BUNDLE_FILE = "bundle.json"
DETECTOR_DIR = "detector"
#: Share of known-good rows held out to calibrate on; the rest trains the detector.
DEFAULT_CALIBRATION_FRACTION = 0.3


@dataclass(frozen=True)
class BundleScores:
    """Everything the agents publish about a batch, as arrays aligned with its rows."""

    raw: np.ndarray
    tail_probability: np.ndarray
    calibrated: np.ndarray  # -log10(tail probability)
    is_anomaly: np.ndarray
    contributions: np.ndarray | None  # (n, d) or None when the detector cannot explain
    feature_names: tuple[str, ...]
    threshold: float  # on the calibrated scale

    def top_features(self) -> list[str | None]:
        if self.contributions is None:
            return [None] * len(self.raw)
        idx = np.argmax(self.contributions, axis=1)
        return [self.feature_names[i] for i in idx]


def data_hash(X: np.ndarray) -> str:
    """Fingerprint of the training data, stored with the model so a version can be traced to its data."""
    return hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes()).hexdigest()[:16]


@dataclass
class ModelBundle:
    detector: Any
    calibrator: Calibrator
    feature_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def detector_name(self) -> str:
        return type(self.detector).name

    @property
    def threshold(self) -> float:
        """Alarm threshold on the calibrated scale (-log10 of the target false-alarm rate)."""
        return float(-np.log10(self.calibrator.target_far))

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unversioned"))

    @classmethod
    def fit(
        cls,
        detector: str | Any,
        X: np.ndarray,
        *,
        feature_names: list[str] | tuple[str, ...],
        calibration: str = "auto",
        target_far: float = 1e-3,
        calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION,
        seed: int = 0,
        detector_params: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ModelBundle:
        """Fit on known-good rows only; ``detector`` is a registered name or an unfitted instance."""
        X = as_batch(X)
        if X.shape[1] != len(feature_names):
            raise ConfigError(f"{len(feature_names)} feature names for {X.shape[1]} columns")
        if not 0.05 <= calibration_fraction <= 0.9:
            raise ConfigError("calibration_fraction must be between 0.05 and 0.9")
        if isinstance(detector, str):
            detector = get_detector(detector)(**_with_seed(get_detector(detector), detector_params, seed))
        fit_rows, cal_rows = calibration_split(len(X), calibration_fraction, seed=seed)
        detector.fit(X[fit_rows])
        cal_scores = detector.score(X[cal_rows])
        calibrator = make_calibrator(calibration, target_far, n_normal=len(cal_rows)).fit(cal_scores)
        now = datetime.now(UTC)
        info = {
            "version": now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + data_hash(X)[:8],
            "trained_at": now.isoformat(),
            "n_samples": len(X),
            "n_fit": len(fit_rows),
            "n_calibration": len(cal_rows),
            "data_hash": data_hash(X),
            "seed": seed,
        }
        info.update(meta or {})
        return cls(detector=detector, calibrator=calibrator, feature_names=tuple(feature_names), meta=info)

    @property
    def stateful(self) -> bool:
        """True for detectors with memory (EWMA, CUSUM, MEWMA, online models): they score a stream."""
        return hasattr(self.detector, "update")

    def score(self, X: np.ndarray) -> BundleScores:
        """Score independent rows (stateful detectors treat ``X`` as a fresh series)."""
        X = as_batch(X, n_features=len(self.feature_names))
        raw = self.detector.score(X)
        contributions = self.detector.explain(X) if isinstance(self.detector, Explainer) else None
        return self.calibrate(raw, contributions)

    def score_stream(self, X: np.ndarray, detector: Any) -> BundleScores:
        """Score ``X`` as the continuation of one asset's stream, carrying ``detector``'s state.

        ``detector`` is that asset's own copy (see :meth:`new_stream`): chart memory belongs to
        one asset's sequence of parts, never to the model shared by all assets.
        """
        X = as_batch(X, n_features=len(self.feature_names))
        if hasattr(detector, "update_explain"):
            contributions = detector.update_explain(X)
            raw = contributions.max(axis=1) if len(contributions) else np.empty(0)
        else:
            raw, contributions = detector.update(X), None
        return self.calibrate(np.asarray(raw, dtype=np.float64), contributions)

    def new_stream(self) -> Any:
        """A fresh copy of the fitted detector with its stream state reset, for one asset."""
        import copy

        det = copy.deepcopy(self.detector)
        if hasattr(det, "reset"):
            det.reset()
        return det

    def calibrate(self, raw: np.ndarray, contributions: np.ndarray | None) -> BundleScores:
        p = self.calibrator.tail_probability(raw)
        return BundleScores(
            raw=raw,
            tail_probability=p,
            calibrated=surprise(p),
            is_anomaly=self.calibrator.is_alarm(raw),
            contributions=contributions,
            feature_names=self.feature_names,
            threshold=self.threshold,
        )

    def save(self, path: str | Path) -> Path:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.detector.save(root / DETECTOR_DIR)
        doc = {
            "detector": self.detector_name,
            "feature_names": list(self.feature_names),
            "calibration": self.calibrator.to_dict(),
            "meta": self.meta,
        }
        (root / BUNDLE_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return root

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        root = Path(path)
        file = root / BUNDLE_FILE
        if not file.exists():
            raise FileNotFoundError(f"no {BUNDLE_FILE} in {root}; train a model with `linewatch train`")
        doc = json.loads(file.read_text())
        detector = get_detector(doc["detector"]).load(root / DETECTOR_DIR)
        return cls(
            detector=detector,
            calibrator=calibrator_from_dict(doc["calibration"]),
            feature_names=tuple(doc["feature_names"]),
            meta=doc["meta"],
        )


def _with_seed(cls: type, params: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    params = dict(params or {})
    import inspect

    if "seed" in inspect.signature(cls).parameters:
        params.setdefault("seed", seed)
    return params
