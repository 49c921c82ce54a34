"""Train every model the simulated plant needs, on its own known-good data, in seconds.

The demo has 60 s for everything, so the plant's models are fitted on small but sufficient
known-good sets drawn by the plant's own generators (:func:`~linewatch.simulation.plant.training_spc`,
``training_signals``, ``training_frames``): the models then know the normal the plant streams.
Each modality goes through the one training path (:func:`linewatch.training.fit_model`):

- SPC: ``robust_mahalanobis`` and ``ewma`` over the six characteristics, calibrated per asset
  stream (``groups``), as the demo's SPC models are;
- signals: the default multi-sensor model of ``train signals`` (``dynamic_pca``) on frames built
  exactly as the live agent builds them (:func:`linewatch.signals.framing.training_frames`, with
  the windows' shaft speeds, so the bearing envelope features are in);
- frames: PatchCore's ``fast`` preset per SKU (any camera), at the plant's frame size.

The sizes below keep every calibration report non-provisional at the default targets (SPC and
signals at 1e-3 per event, images at 1e-2 per part) and the whole fit under ~20 s on 2 cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from linewatch.detectors.bundle import ANY, ModelBundle, Scope
from linewatch.signals.framing import BearingEnvelope, training_frames
from linewatch.simulation.plant import PlantConfig, training_signals, training_spc
from linewatch.simulation.plant import training_frames as plant_training_frames
from linewatch.storage.model_registry import ModelRef
from linewatch.training import IMAGE_TARGET_FAR, fit_model, register

#: SPC detectors the plant's parts are scored by (as in the demo).
SPC_DETECTORS: tuple[str, ...] = ("robust_mahalanobis", "ewma")
#: The signals detector (``linewatch train signals``' default).
SIGNALS_DETECTOR = "dynamic_pca"
#: Known-good parts per SPC detector: the robust fit (six MCD fits with cross-fitting, ~0.5-1 s each
#: on 2 cores) resolves 1e-3 from 2,000 parts (down to 5e-4); EWMA's autocorrelated chart statistic
#: needs 9,000 to resolve it, which costs it a tenth of a second.
TRAIN_PARTS = {"robust_mahalanobis": 2_000, "ewma": 9_000}
#: Known-good signals: 12 plant hours at one snapshot per 30 s = 1,440 frames per asset. Spaced
#: wider than the plant's 10 s, each row is closer to independent (autocorrelation time ~3.5
#: rows instead of ~15): 4,320 rows then resolve 1e-3, which 10 s snapshots need 15,000 rows for.
TRAIN_SIGNAL_S = 12 * 3600.0
TRAIN_SIGNAL_INTERVAL_S = 30.0
#: Known-good images per SKU: 200 cross-fitted good frames place 1e-2 (see linewatch.training).
TRAIN_FRAMES = 200
#: PatchCore parameters: the fast preset at the plant's own frame size (no upsampling to 224 px).
FRAME_PRESET = "fast"


@dataclass
class PlantModels:
    """The fitted bundles by role, the registered versions, and how long each fit took (seconds)."""

    spc: dict[str, ModelBundle] = field(default_factory=dict)  # by detector
    signals: ModelBundle | None = None
    frames: dict[str, ModelBundle] = field(default_factory=dict)  # by SKU
    refs: list[ModelRef] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def bundles(self) -> list[ModelBundle]:
        return [*self.spc.values(), *([self.signals] if self.signals else []), *self.frames.values()]

    @property
    def versions(self) -> dict[str, str]:
        """``model id -> version`` of everything registered."""
        return {r.model_id: r.version for r in self.refs}

    def provisional(self) -> list[str]:
        """Models whose calibration could not resolve their target (empty when all are sound)."""
        return [f"{b.modality}/{b.detector_name}" for b in self.bundles() if b.provisional]


def fit_plant_models(
    config: PlantConfig,
    *,
    target_far: float = 1e-3,
    image_target_far: float = IMAGE_TARGET_FAR,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> PlantModels:
    """Fit (not register) the plant's SPC, signals and frames models on its known-good data."""
    say = progress or (lambda _msg: None)
    out = PlantModels()
    t = time.perf_counter()
    for det in SPC_DETECTORS:
        parts = training_spc(config, TRAIN_PARTS[det])
        out.spc[det] = fit_model(parts.X, feature_names=parts.feature_names, detector=det, target_far=target_far,
                                 seed=seed, groups=parts.asset_id, context={"asset": parts.asset_id})
    out.seconds["spc"] = time.perf_counter() - t
    say(f"spc: {', '.join(f'{d} on {n} parts' for d, n in TRAIN_PARTS.items())} in {out.seconds['spc']:.1f} s")

    t = time.perf_counter()
    frames = training_frames(training_signals(config, TRAIN_SIGNAL_S, snapshot_interval_s=TRAIN_SIGNAL_INTERVAL_S),
                             envelope=BearingEnvelope())
    out.signals = fit_model(frames.X, modality="signals", detector=SIGNALS_DETECTOR, target_far=target_far,
                            seed=seed, scope=Scope(), **frames.provenance())
    out.seconds["signals"] = time.perf_counter() - t
    say(f"signals: {SIGNALS_DETECTOR} on {len(frames.X)} frames x {len(frames.feature_names)} features "
        f"in {out.seconds['signals']:.1f} s")

    t = time.perf_counter()
    for sku in dict.fromkeys(config.skus):
        images = list(plant_training_frames(config, TRAIN_FRAMES, sku))
        out.frames[sku] = fit_model(images, modality="frames", scope=Scope(sku=sku, camera=ANY),
                                    target_far=image_target_far, seed=seed,
                                    detector_params={"preset": FRAME_PRESET, "image_size": config.frame_size})
    out.seconds["frames"] = time.perf_counter() - t
    say(f"frames: patchcore ({FRAME_PRESET}) on {TRAIN_FRAMES} frames per SKU x {len(out.frames)} SKU(s) "
        f"in {out.seconds['frames']:.1f} s")
    return out


def train_plant_models(
    config: PlantConfig,
    *,
    database_url: str,
    model_dir: Path,
    target_far: float = 1e-3,
    image_target_far: float = IMAGE_TARGET_FAR,
    seed: int = 0,
    console: object | None = None,
) -> PlantModels:
    """Fit the plant's models (:func:`fit_plant_models`) and register each as its model id's active version.

    ``console`` (anything with ``print``, e.g. a rich Console) gets one line per modality.
    """
    printer = getattr(console, "print", None)
    models = fit_plant_models(config, target_far=target_far, image_target_far=image_target_far, seed=seed,
                              progress=printer)
    return register_plant_models(models, database_url=database_url, model_dir=model_dir)


def register_plant_models(models: PlantModels, *, database_url: str, model_dir: Path) -> PlantModels:
    """Register every fitted bundle of ``models`` as its model id's active version (``models.refs``)."""
    t = time.perf_counter()
    models.refs = [register(b, database_url=database_url, model_dir=model_dir) for b in models.bundles()]
    models.seconds["register"] = time.perf_counter() - t
    return models
