"""Image model versions: one calibrated PatchCore per SKU and camera, found by the frame's keys.

Why a separate path from :mod:`linewatch.training`: a tabular :class:`~linewatch.detectors.bundle.ModelBundle`
fits on an ``(n, d)`` table and splits rows itself; an image model fits on frames, needs its
held-out *good frames* for calibration (image datasets are small, so the split is explicit),
and is chosen by (SKU, camera) rather than by (asset, SKU). What is shared is everything
after the fit: the artifact lands under ``model_dir/<model_id>/<version>`` and one
``model_versions`` row (modality ``frames``, ``scope_asset`` = camera or ``*``, ``scope_sku``
= SKU, detector ``patchcore``, the calibrator without its reference scores) makes it the
active version, written by the very same :func:`~linewatch.storage.model_registry.save_and_register`
the tabular models use. :class:`ImageModel` carries the attributes that function reads
(``detector_name``, ``version``, ``feature_names``, ``meta``, ``calibrator``, ``save``), so
nothing about the registry is duplicated here.

A worker's :class:`ImageModelCache` looks for new versions every ``refresh_s`` seconds, like
:class:`~linewatch.storage.model_registry.ModelCache`, and answers ``for_frame(sku, camera)``
with the model for exactly that camera, else the SKU's any-camera model, else ``None``.
All models share one onnxruntime session per backbone configuration: the backbone is the same
file for every SKU, and a session per model would cost tens of MB each on a plant with dozens
of SKU/camera pairs.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> good = rng.integers(100, 140, size=(30, 64, 64), dtype=np.uint8)
>>> model = fit_image_model(good, sku="demo", target_far=0.5, calibration_fraction=0.7, image_size=64)
>>> model.scope, model.detector_name, model.meta["n_calibration"], round(model.threshold, 3)
(('*', 'demo'), 'patchcore', 21, 0.301)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from linewatch.detectors.calibration import Calibrator, calibration_split
from linewatch.detectors.image_backbone import ImageBackbone, as_frames
from linewatch.detectors.image_base import Images
from linewatch.detectors.patchcore import PatchCore, Progress
from linewatch.errors import ConfigError
from linewatch.storage.model_registry import ANY, ModelRef, RefreshingModelCache, save_and_register

log = logging.getLogger(__name__)

#: The ``model_versions.modality`` of image models (the ``frames`` topic's modality).
MODALITY = "frames"
#: Written next to the detector's own files: what the registry row does not hold.
META_FILE = "image_model.json"
#: One false alarm per hundred good parts: image datasets hold tens of held-out good frames,
#: which can place a 1 % threshold (POT, see ``docs/images.md``) but not the 0.1 % of SPC.
DEFAULT_TARGET_FAR = 0.01
#: Share of the good frames held out for calibration; 25 % of 200 frames (50) is enough for
#: POT at 1 %, whereas the backtest's 20 % (40) is not.
DEFAULT_CALIBRATION_FRACTION = 0.25


@dataclass
class ImageModel:
    """A fitted, calibrated image detector with its scope and provenance: what a worker loads."""

    detector: PatchCore
    sku: str
    camera: str = ANY
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def detector_name(self) -> str:
        return self.detector.name

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unversioned"))

    @property
    def scope(self) -> tuple[str, str]:
        """``(camera, sku)``: the ``(scope_asset, scope_sku)`` of the registry row."""
        return self.camera, self.sku

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Image models have no named input columns (the registry row's ``feature_names`` is empty)."""
        return ()

    @property
    def calibrator(self) -> Calibrator:
        cal = self.detector.calibrator_
        if cal is None:
            raise ConfigError(
                f"image model for SKU {self.sku!r} is not calibrated; an uncalibrated model would never "
                "alert, so it cannot be deployed (fit it with fit_image_model)"
            )
        return cal

    def check_calibrated(self) -> None:
        """Refuse a model that could never alert: saving, loading and serving all call this."""
        _ = self.calibrator

    @property
    def threshold(self) -> float:
        """Alarm threshold on the calibrated scale, ``-log10(target_far)``, as every modality publishes it."""
        return float(-math.log10(self.calibrator.target_far))

    @property
    def raw_threshold(self) -> float:
        """The same threshold in patch-distance units (what heat maps are read against)."""
        return self.detector.threshold_

    def save(self, path: str | Path) -> Path:
        """The detector's own files plus :data:`META_FILE` (scope and provenance)."""
        root = Path(path)
        self.check_calibrated()
        self.detector.save(root)
        doc = {"sku": self.sku, "camera": self.camera, "meta": self.meta}
        (root / META_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return root

    @classmethod
    def load(cls, path: str | Path) -> ImageModel:
        root = Path(path)
        file = root / META_FILE
        if not file.exists():
            raise FileNotFoundError(f"no {META_FILE} in {root}; train image models with `linewatch train frames`")
        doc = json.loads(file.read_text())
        model = cls(detector=PatchCore.load(root), sku=doc["sku"], camera=doc["camera"], meta=doc["meta"])
        model.check_calibrated()
        return model


def fit_image_model(
    images: Images,
    *,
    sku: str,
    camera: str | None = None,
    target_far: float = DEFAULT_TARGET_FAR,
    calibration: str = "auto",
    calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION,
    calibration_images: Images | None = None,
    image_size: int | tuple[int, int] = 224,
    coreset_ratio: float = 0.01,
    max_bank_size: int | None = 4096,
    projection_dim: int | None = None,
    provider: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
) -> ImageModel:
    """Fit PatchCore on known-good frames and calibrate it on good frames it did not see.

    ``calibration_images`` gives the held-out good frames explicitly; otherwise a seeded
    ``calibration_fraction`` of ``images`` is held out (training frames score low against a
    bank built from them, so calibrating on them would flood the line with false alarms).
    """
    if not sku or sku == ANY:
        raise ConfigError("an image model is for one SKU; pass sku='<your SKU>' (a model knows one kind of part)")
    frames = as_frames(images)
    n = len(frames)
    if calibration_images is None:
        fit_idx, cal_idx = calibration_split(n, calibration_fraction, seed=seed, what="good frames")
        if isinstance(frames, np.ndarray):  # keep one array: the backbone batch is built without copies
            fit_frames, cal_frames = frames[fit_idx], frames[cal_idx]
        else:
            fit_frames, cal_frames = [frames[i] for i in fit_idx], [frames[i] for i in cal_idx]
    else:
        fit_frames, cal_frames = frames, calibration_images  # type: ignore[assignment]
    det = PatchCore(
        image_size=image_size,
        coreset_ratio=coreset_ratio,
        max_bank_size=max_bank_size,
        projection_dim=projection_dim,
        provider=provider,
        seed=seed,
    )
    det.fit(fit_frames, progress=progress)
    cal_scores = det.score(cal_frames)
    det.calibrate_scores(cal_scores, target_far=target_far, method=calibration)
    now = datetime.now(UTC)
    digest = det.training_sha256_ or ""
    meta = {
        "version": now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + digest[:8],
        "trained_at": now.isoformat(),
        "n_samples": det.n_train_ + len(cal_scores),
        "n_fit": det.n_train_,
        "n_calibration": len(cal_scores),
        "data_hash": digest[:16],
        "seed": seed,
        "target_far": target_far,
        "bank_size": int(det.memory_bank_.shape[0]) if det.memory_bank_ is not None else 0,
        "image_size": det.get_params()["image_size"],
    }
    return ImageModel(detector=det, sku=sku, camera=camera or ANY, meta=meta)


def register_image_model(conn: psycopg.Connection, model: ImageModel, *, model_dir: Path) -> ModelRef:
    """Save ``model`` as a new version of ``frames:<camera>:<sku>:patchcore`` and make it the active one."""
    return save_and_register(
        conn, model, model_dir=model_dir, modality=MODALITY,  # type: ignore[arg-type]  # see module docstring
        scope_asset=model.camera, scope_sku=model.sku,
    )


def train_image_model(
    images: Images,
    *,
    sku: str,
    camera: str | None = None,
    database_url: str,
    model_dir: Path,
    target_far: float = DEFAULT_TARGET_FAR,
    **fit_kwargs: Any,
) -> tuple[ImageModel, ModelRef]:
    """The one image training path the CLI, the benchmark and the tests use: fit, calibrate, register.

    ``fit_kwargs`` go to :func:`fit_image_model` (``calibration_fraction``, ``image_size``,
    ``coreset_ratio``, ``max_bank_size``, ``seed``, ``progress``, ...).
    """
    model = fit_image_model(images, sku=sku, camera=camera, target_far=target_far, **fit_kwargs)
    with psycopg.connect(database_url) as conn:
        ref = register_image_model(conn, model, model_dir=model_dir)
    return model, ref


class ImageModelCache(RefreshingModelCache):
    """Loaded image models by (camera, SKU), refreshed from the database at most every ``refresh_s`` seconds.

    Owned by the frames agent and used from its one worker thread (refresh and lookups never
    run concurrently). A model whose version is deactivated disappears at the next refresh.
    """

    def __init__(
        self,
        *,
        database_url: str,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(database_url=database_url, modality=MODALITY, refresh_s=refresh_s, clock=clock)
        self._by_scope: dict[tuple[str, str], ImageModel] = {}  # (camera, sku) -> model
        self._backbones: dict[tuple[Any, ...], ImageBackbone] = {}

    def _load(self, ref: ModelRef) -> ImageModel:
        model = ImageModel.load(ref.artifact_path)
        self._share_backbone(model.detector)
        model.meta["version"] = ref.version
        return model

    def _remember(self, ref: ModelRef, model: ImageModel) -> None:
        self._by_scope[(ref.scope_asset, ref.scope_sku)] = model

    def _forget(self, ref: ModelRef) -> None:
        self._by_scope.pop((ref.scope_asset, ref.scope_sku), None)

    def _share_backbone(self, det: PatchCore) -> None:
        """Give ``det`` the session already open for its backbone file, provider and thread count."""
        key = (det.backbone_path, det.provider, det.intra_op_threads)
        if key not in self._backbones:
            # Open the session now: the first frames then do not wait for it, and scoring threads
            # never race to create it (ImageBackbone.session is created on first use, unlocked).
            _ = det.backbone.session
            self._backbones[key] = det.backbone
        # PatchCore opens its session lazily through this attribute; setting it shares one session.
        det._backbone = self._backbones[key]

    def add(self, model: ImageModel) -> None:
        """Serve ``model`` for its scope without the database (a replay from model files, tests).

        A later :meth:`refresh` replaces it if the database holds an active model for the same scope.
        """
        model.check_calibrated()
        self._share_backbone(model.detector)
        self._by_scope[model.scope] = model

    def for_frame(self, sku: str, camera: str) -> ImageModel | None:
        """The model for this SKU on this camera, else the SKU's any-camera model, else ``None``."""
        return self._by_scope.get((camera, sku)) or self._by_scope.get((ANY, sku))

    def __len__(self) -> int:
        return len(self._by_scope)
