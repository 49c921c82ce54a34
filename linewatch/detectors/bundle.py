"""A deployable model of any modality: detector + calibrator + input spec + scope + provenance.

The bundle is what every ``linewatch train`` command writes, what a worker loads and what a
backtest evaluates, so all of them score with identical code, whatever the input: tabular SPC
rows, signal frames or camera frames. The calibrator learns from *out-of-sample* normal scores,
because in-sample scores are optimistically low and would put the threshold too low (too many
false alarms in production): by default time-ordered blocked cross-fitting
(:mod:`linewatch.detectors.cross_fit`), then a refit on all the data. Image detectors are
calibrated here too, exactly like the others. Every bundle carries a calibration report
(``meta["calibration_report"]``: effective sample size, the false-alarm interval, warnings); a
bundle whose data cannot resolve its target is ``provisional``: its threshold is never below the
highest normal scores its data can vouch for.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(3000, 3))
>>> b = ModelBundle.fit("robust_mahalanobis", X, feature_names=["a", "b", "c"], target_far=0.01, seed=0)
>>> out = b.score(np.array([[0.0, 0.0, 0.0], [0.0, 9.0, 0.0]]))
>>> out.is_anomaly.tolist(), out.top_features()[1]
([False, True], 'b')
>>> b.scope, b.inputs.kind
(Scope(asset='*', sku='*', camera='*'), 'table')
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.detectors import table
from linewatch.detectors.base import METADATA_FILE, Explainer, as_batch
from linewatch.detectors.calibration import (
    Calibrator,
    PotCalibrator,
    calibration_split,
    calibrator_from_dict,
    make_calibrator,
    surprise,
    too_few_normal_scores,
)
from linewatch.detectors.cross_fit import (
    DEFAULT_FOLDS,
    blocked_folds,
    calibration_report,
    out_of_fold_scores,
    purge_rows,
    score_as_live,
    take_rows,
)
from linewatch.detectors.table import get_detector
from linewatch.errors import ConfigError, DataError

BUNDLE_FILE = "bundle.json"
DETECTOR_DIR = "detector"
#: Written by image models saved before bundles covered every modality; still loaded.
LEGACY_IMAGE_FILE = "image_model.json"
#: A scope part that matches anything.
ANY = "*"
TABLE_INPUT = "table"
IMAGE_INPUT = "image"
#: A thinned sample of the training inputs, the reference input drift is measured against.
INPUT_REFERENCE_FILE = "input_reference.npy"
#: Rows kept in it: KS and decile PSI are stable at this size, and the bundle stays small.
MAX_INPUT_REFERENCE_ROWS = 2000


@dataclass(frozen=True)
class Scope:
    """Which events a model is for; ``*`` matches any. The most specific scope wins per detector.

    Tabular and signal models are scoped by asset and SKU; image models by SKU and camera (an
    image model knows one kind of part, seen by one camera or by any).
    """

    asset: str = ANY
    sku: str = ANY
    camera: str = ANY

    def candidates(self) -> list[Scope]:
        """This scope and its generalisations, most specific first (asset, then SKU, then camera)."""
        return [
            Scope(a, s, c)
            for a in dict.fromkeys((self.asset, ANY))
            for s in dict.fromkeys((self.sku, ANY))
            for c in dict.fromkeys((self.camera, ANY))
        ]


@dataclass(frozen=True)
class InputSpec:
    """What the detector reads: a table in ``feature_names`` order, or frames resized to ``image_size``."""

    kind: str = TABLE_INPUT
    feature_names: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None


def input_kind(detector: Any) -> str:
    """``"image"`` for detectors that take frames, ``"table"`` for the rest, as the detector table says.

    A detector class not in the table (a stand-in in a test, a plant's own experiment) reads tables.
    """
    name = getattr(type(detector), "name", None)
    return table.input_kind(name) if name in table.DETECTORS else TABLE_INPUT


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


def data_hash(X: np.ndarray | Sequence[np.ndarray]) -> str:
    """Fingerprint of the training data, stored with the model so a version can be traced to its data.

    Tables hash as float64 (as they are fitted); frames hash their pixels, one frame after another.
    """
    if isinstance(X, np.ndarray) and X.dtype != np.uint8:
        return hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes()).hexdigest()[:16]
    h = hashlib.sha256()
    for frame in X if not isinstance(X, np.ndarray) else (X,):
        h.update(np.ascontiguousarray(frame).tobytes())
    return h.hexdigest()[:16]


@dataclass
class ModelBundle:
    detector: Any
    calibrator: Calibrator
    feature_names: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    modality: str = "spc"
    scope: Scope = field(default_factory=Scope)
    #: Thinned training rows ``(<= MAX_INPUT_REFERENCE_ROWS, d)`` for input drift; None for image models and
    #: for bundles saved before it was kept (they simply skip input drift).
    input_reference: np.ndarray | None = None

    @property
    def detector_name(self) -> str:
        return type(self.detector).name

    @property
    def threshold(self) -> float:
        """Alarm threshold on the calibrated scale (-log10 of the target false-alarm rate)."""
        return float(-np.log10(self.calibrator.target_far))

    @property
    def raw_threshold(self) -> float:
        """The same threshold in the detector's own units (what heat maps are read against)."""
        assert self.calibrator.threshold_ is not None
        return float(self.calibrator.threshold_)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unversioned"))

    @property
    def inputs(self) -> InputSpec:
        kind = input_kind(self.detector)
        if kind == IMAGE_INPUT:
            from linewatch.detectors.patchcore import as_size

            return InputSpec(kind, (), as_size(self.detector.image_size))
        return InputSpec(kind, tuple(self.feature_names))

    @classmethod
    def fit(
        cls,
        detector: str | Any,
        X: Any,
        *,
        feature_names: Sequence[str] = (),
        modality: str = "spc",
        scope: Scope | None = None,
        calibration: str = "auto",
        target_far: float = 1e-3,
        calibration_fraction: float | None = None,
        calibration_data: Any = None,
        folds: int = DEFAULT_FOLDS,
        fold_order: str = "time",
        groups: Sequence[Any] | np.ndarray | None = None,
        seed: int = 0,
        detector_params: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ModelBundle:
        """Fit on known-good data only; ``detector`` is a registered name or an unfitted instance.

        ``X`` is an ``(n, d)`` table for tabular and signal detectors, frames for image detectors,
        in time order. By default the calibrator learns from ``folds``-fold blocked cross-fitted
        scores and the detector is then refitted on all of ``X``. ``calibration_fraction`` instead
        holds out the *last* share of ``X`` (the detector never sees it), and ``calibration_data``
        gives the held-out known-good data explicitly. ``fold_order="shuffled"`` cuts the folds
        from a seeded permutation instead of time order: only for exchangeable data whose order
        means nothing (a folder of images sorted by file name, where names group similar parts),
        never for charts, online or windowed detectors, whose scores depend on order. ``groups``
        (one key per row of ``X``, e.g. the asset) makes charts and online models score each
        group's rows as its own stream when calibrating, as the agents keep state per asset.
        """
        if isinstance(detector, str):
            detector = get_detector(detector)(**_with_seed(get_detector(detector), detector_params, seed))
        image = input_kind(detector) == IMAGE_INPUT
        what = "good frames" if image else "rows"
        if image:
            from linewatch.detectors.image_backbone import as_frames

            X = as_frames(X)
            feature_names = ()
        else:
            X = as_batch(X)
            if X.shape[1] != len(feature_names):
                raise ConfigError(f"{len(feature_names)} feature names for {X.shape[1]} columns")
        fitter = _fit_explicit if calibration_data is not None else (
            _fit_cross if calibration_fraction is None else _fit_holdout)
        n_fit, blocks, how = fitter(detector, X, calibration_data=calibration_data, image=image, what=what,
                                    calibration_fraction=calibration_fraction, folds=folds, progress=progress,
                                    fold_order=fold_order, seed=seed, groups=_group_keys(groups, len(X)))
        cal_scores = np.concatenate(blocks)
        calibrator, report = _calibrate(cal_scores, blocks, method=calibration, target_far=target_far, how=how)
        now = datetime.now(UTC)
        digest = data_hash(X)
        info = {
            "version": now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + digest[:8],
            "trained_at": now.isoformat(),
            "n_samples": n_fit if calibration_data is None and calibration_fraction is None
            else n_fit + len(cal_scores),
            "n_fit": n_fit,
            "n_calibration": len(cal_scores),
            "calibration_report": report,
            "data_hash": digest,
            "seed": seed,
            "target_far": target_far,
        }
        info.update(meta or {})
        return cls(detector=detector, calibrator=calibrator, feature_names=tuple(feature_names), meta=info,
                   modality=modality, scope=scope or Scope(), input_reference=None if image else thin_rows(X))

    @property
    def calibration_report(self) -> dict[str, Any]:
        """How sure the threshold is (see :func:`linewatch.detectors.cross_fit.calibration_report`)."""
        return dict(self.meta.get("calibration_report") or {})

    @property
    def provisional(self) -> bool:
        """True when the training data could not resolve the false-alarm target (conservative threshold)."""
        return bool(self.calibration_report.get("provisional", False))

    @property
    def stateful(self) -> bool:
        """True for detectors with memory (EWMA, CUSUM, MEWMA, online models): they score a stream."""
        return hasattr(self.detector, "update")

    def score(self, X: Any) -> BundleScores:
        """Score independent rows or frames (stateful detectors treat ``X`` as a fresh series)."""
        if input_kind(self.detector) == IMAGE_INPUT:
            return self.calibrate(self.detector.score(X), None)
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

    def with_threshold(self, threshold: float, *, reason: str, dispositions: Sequence[str] = (),
                       actor: str | None = None) -> ModelBundle:
        """A copy alarming above ``threshold`` (calibrated scale), as a new version with the change on record.

        Operators' dispositions move thresholds, not training data: the detector and the fitted
        calibration curve stay as they are (so tail probabilities and calibrated scores do not
        change), only the alarm point does, to a false-alarm target of ``10**-threshold``. ``meta``
        keeps the previous version and threshold, the reason, who did it and the dispositions used,
        so a threshold can always be traced back to the feedback that set it.

        >>> import numpy as np
        >>> from linewatch.detectors.calibration import EmpiricalCalibrator
        >>> cal = EmpiricalCalibrator(target_far=0.01).fit(np.arange(1000.0))
        >>> b = ModelBundle(detector=None, calibrator=cal, meta={"version": "v1"})
        >>> b2 = b.with_threshold(2.5, reason="false alarms")
        >>> round(b2.threshold, 2), b2.meta["threshold_change"]["previous_threshold"], b.threshold
        (2.5, 2.0, 2.0)
        >>> bool(b2.calibrator.is_alarm(np.array([997.0]))[0]), bool(b.calibrator.is_alarm(np.array([997.0]))[0])
        (False, True)
        """
        if not np.isfinite(threshold) or threshold <= 0:
            raise ConfigError(f"threshold {threshold!r} must be a positive -log10 false-alarm rate (e.g. 3.5)")
        far = float(10.0 ** -threshold)
        calibrator = copy.deepcopy(self.calibrator)
        calibrator.target_far = far
        calibrator.threshold_ = raw_threshold_for(calibrator, far)
        now = datetime.now(UTC)
        meta = copy.deepcopy(self.meta)
        meta["version"] = now.strftime("%Y%m%dT%H%M%S%fZ") + f"-thr{threshold:.2f}".replace(".", "p")
        meta["target_far"] = far
        meta["threshold_change"] = {
            "previous_version": self.version,
            "previous_threshold": round(self.threshold, 6),
            "threshold": threshold,
            "reason": reason,
            "actor": actor,
            "dispositions": list(dispositions),
            "changed_at": now.isoformat(),
        }
        # every other field (input reference for drift, scope, modality) carries over unchanged
        return replace(self, calibrator=calibrator, meta=meta)

    def save(self, path: str | Path) -> Path:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.detector.save(root / DETECTOR_DIR)
        inputs = self.inputs
        doc = {
            "detector": self.detector_name,
            "modality": self.modality,
            "scope": asdict(self.scope),
            "input": {"kind": inputs.kind, "feature_names": list(inputs.feature_names),
                      "image_size": list(inputs.image_size) if inputs.image_size else None},
            "feature_names": list(self.feature_names),
            "calibration": self.calibrator.to_dict(),
            "meta": self.meta,
        }
        (root / BUNDLE_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))
        if self.input_reference is not None:
            np.save(root / INPUT_REFERENCE_FILE, self.input_reference, allow_pickle=False)
        return root

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        root = Path(path)
        file = root / BUNDLE_FILE
        if not file.exists():
            if (root / LEGACY_IMAGE_FILE).exists():
                return _load_legacy_image_model(root)
            raise FileNotFoundError(f"no {BUNDLE_FILE} in {root}; train a model with `linewatch train`")
        doc = json.loads(file.read_text())
        detector = get_detector(doc["detector"]).load(root / DETECTOR_DIR)
        meta = doc["meta"]
        # Bundles written before scopes were saved kept them in the training metadata.
        scope = Scope(**doc["scope"]) if "scope" in doc else Scope(
            meta.get("scope_asset") or ANY, meta.get("scope_sku") or ANY)
        return cls(
            detector=detector,
            calibrator=calibrator_from_dict(doc["calibration"]),
            feature_names=tuple(doc["feature_names"]),
            meta=meta,
            modality=doc.get("modality", "spc"),
            scope=scope,
            input_reference=load_input_reference(root),
        )


def thin_rows(X: np.ndarray, max_rows: int = MAX_INPUT_REFERENCE_ROWS) -> np.ndarray:
    """At most ``max_rows`` rows of ``X``, evenly spaced in time order (so every stretch of training is in it).

    >>> thin_rows(np.arange(10.0)[:, None], 4).ravel().tolist()
    [0.0, 3.0, 6.0, 9.0]
    """
    X = np.asarray(X, dtype=np.float64)
    if len(X) <= max_rows:
        return X.copy()
    return X[np.linspace(0, len(X) - 1, max_rows).round().astype(np.int64)]


def load_input_reference(root: str | Path) -> np.ndarray | None:
    """The input reference saved with the bundle in ``root``, or None when it has none (older bundles)."""
    file = Path(root) / INPUT_REFERENCE_FILE
    return np.load(file, allow_pickle=False) if file.exists() else None


def _load_legacy_image_model(root: Path) -> ModelBundle:
    """An image model of the first release: PatchCore's own files, its calibrator among them."""
    doc = json.loads((root / LEGACY_IMAGE_FILE).read_text())
    fitted = json.loads((root / METADATA_FILE).read_text())["params"]["fitted"]
    if fitted.get("calibrator") is None:
        raise ConfigError(f"image model in {root} is not calibrated; retrain it with `linewatch train frames`")
    return ModelBundle(
        detector=get_detector("patchcore").load(root),
        calibrator=calibrator_from_dict(fitted["calibrator"]),
        meta=doc["meta"],
        modality="frames",
        scope=Scope(sku=doc["sku"], camera=doc["camera"]),
    )


FitResult = tuple[int, list[np.ndarray], dict[str, Any]]
#: How cross-fitting cuts its folds: contiguous blocks in time order, or from a seeded permutation.
FOLD_ORDERS = ("time", "shuffled")


def _fit_cross(detector: Any, X: Any, *, folds: int, progress: Any, what: str, fold_order: str, seed: int,
               groups: np.ndarray | None, **_: Any) -> FitResult:
    """Blocked cross-fitting in time order (or shuffled), then a refit on everything (module docstring)."""
    if fold_order not in FOLD_ORDERS:
        raise ConfigError(f"fold_order={fold_order!r}; use one of {', '.join(FOLD_ORDERS)}")
    shuffled = fold_order == "shuffled"
    if shuffled and (hasattr(detector, "update") or hasattr(detector, "ready_mask")):
        raise ConfigError(f"{type(detector).__name__} scores depend on row order; it needs fold_order='time'")
    purge = 0 if shuffled else purge_rows(X, folds)
    try:
        plan = blocked_folds(len(X), folds, purge=purge)
    except DataError as e:
        raise DataError(f"{e} (have {len(X)} {what})") from e
    if shuffled:
        perm = np.random.default_rng(seed).permutation(len(X))
        plan = [(np.sort(perm[fit]), np.sort(perm[held])) for fit, held in plan]
    oof = out_of_fold_scores(detector, X, plan, groups=groups, progress=progress)
    blocks = _streams(oof, [held for _, held in plan], groups)
    if not all(np.isfinite(b).all() for b in blocks):
        raise DataError(f"{type(detector).__name__} gave NaN or infinite scores to known-good {what}")
    _fit(detector, X, progress)
    method = "shuffled cross-fitting" if shuffled else "blocked cross-fitting"
    return len(X), blocks, {"method": method, "folds": folds, "purge": purge}


def _fit_holdout(detector: Any, X: Any, *, calibration_fraction: float, progress: Any, what: str,
                 groups: np.ndarray | None, **_: Any) -> FitResult:
    """Fit on the first part, calibrate on the last ``calibration_fraction`` (time-ordered hold-out)."""
    if not 0.05 <= calibration_fraction <= 0.9:
        raise ConfigError(f"calibration_fraction={calibration_fraction!r} must be between 0.05 and 0.9")
    fit_rows, cal_rows = calibration_split(len(X), calibration_fraction, what=what)
    purge = purge_rows(X, 2)
    fit_rows = fit_rows[: max(1, len(fit_rows) - purge)]
    _fit(detector, take_rows(X, fit_rows), progress)
    held_groups = None if groups is None else groups[cal_rows]
    scores = score_as_live(detector, take_rows(X, cal_rows), held_groups)
    return len(fit_rows), _streams(scores, [np.arange(len(cal_rows))], held_groups), {
        "method": "time-ordered hold-out", "folds": 1, "purge": purge}


def _fit_explicit(detector: Any, X: Any, *, calibration_data: Any, image: bool, progress: Any,
                  **_: Any) -> FitResult:
    """Fit on ``X``, calibrate on the known-good data the caller held out."""
    _fit(detector, X, progress)
    held = calibration_data if image else as_batch(calibration_data)
    return len(X), [score_as_live(detector, held)], {"method": "explicit hold-out", "folds": 1, "purge": 0}


def _group_keys(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    keys = np.asarray(groups)
    if keys.shape != (n,):
        raise ConfigError(f"groups has shape {keys.shape}; give one key (e.g. the asset) per training row ({n})")
    return keys


def _streams(scores: np.ndarray, blocks: list[np.ndarray], groups: np.ndarray | None) -> list[np.ndarray]:
    """Calibration scores as the ordered streams they came from: per block, and per group within it.

    The effective sample size is an autocorrelation within one stream, so each asset's run of a
    block counts as its own series.
    """
    if groups is None:
        return [scores[b] for b in blocks]
    out = []
    for b in blocks:
        keys = groups[b]
        out += [scores[b[keys == g]] for g in dict.fromkeys(keys.tolist())]
    return out


def _fit(detector: Any, X: Any, progress: Any) -> None:
    if progress is not None and "progress" in inspect.signature(detector.fit).parameters:
        detector.fit(X, progress=progress)
    else:
        detector.fit(X)


def _calibrate(scores: np.ndarray, blocks: list[np.ndarray], *, method: str, target_far: float,
               how: dict[str, Any]) -> tuple[Calibrator, dict[str, Any]]:
    """Fit the calibrator and say what it can promise; too little data gives a provisional one.

    A provisional calibrator keeps its tail model (so calibrated scores stay meaningful) but its
    alarm threshold never goes below the normal score that only one effective sample's worth of
    the calibration scores exceeds (their ``1 - min_resolvable_far`` quantile): the target is an
    extrapolation, so the threshold is at least as high as anything the data can vouch for. Not
    the highest normal score: one outlier among them would blind the model.
    """
    report = calibration_report(scores, blocks, target_far=target_far, n_folds=how["folds"],
                                purge=how["purge"], method=how["method"])
    try:
        calibrator = make_calibrator(method, target_far, n_normal=len(scores)).fit(scores)
    except ConfigError as e:
        if report["provisional"] and method == "auto":
            raise ConfigError(too_few_normal_scores(len(scores), target_far)) from e
        raise
    if report["provisional"]:
        floor = float(np.quantile(scores, 1.0 - min(report["min_resolvable_far"], 1.0)))
        calibrator.threshold_ = max(float(calibrator.threshold_), floor)
    report["raw_threshold"] = float(calibrator.threshold_)
    return calibrator, report


def _with_seed(cls: type, params: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    params = dict(params or {})
    if "seed" in inspect.signature(cls).parameters:
        params.setdefault("seed", seed)
    return params


def raw_threshold_for(calibrator: Calibrator, far: float) -> float:
    """The raw score above which ``calibrator`` alarms at false-alarm rate ``far``, without refitting it.

    The same rule the calibrators' ``fit`` uses: the empirical quantile of the reference scores
    (the smallest score whose smoothed tail probability is at most ``far``), or the generalized
    Pareto tail's quantile beyond the POT threshold.
    """
    if isinstance(calibrator, PotCalibrator) and calibrator.zeta_ is not None and far < calibrator.zeta_:
        from scipy import stats

        return float(calibrator.u_ + stats.genpareto.ppf(1.0 - far / calibrator.zeta_, calibrator.shape_, 0.0,
                                                          calibrator.scale_))
    body = calibrator.body_ if isinstance(calibrator, PotCalibrator) else calibrator
    ref = body.reference_ if body is not None else None
    if ref is None:
        raise ConfigError("the model's calibrator is not fitted; retrain it before changing its threshold")
    k = math.floor(far * (ref.size + 1)) - 1
    return float(ref[ref.size - 1 - k]) if k >= 0 else float(np.nextafter(ref[-1], np.inf))
