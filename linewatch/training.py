"""Fit a model of any modality on known-good data, save it as a version and make it the active one.

The one training path of the CLI, the demo, the benchmarks and the tests. It takes arrays (an
``(n, d)`` table of SPC characteristics or signal-frame features, or a batch of camera frames)
and knows nothing of where they came from: files, the database, a topic or a simulator each
bring their own adapter (:mod:`linewatch.loaders`, :mod:`linewatch.signals.framing`).

Image models get their own false-alarm default, because image datasets are small: 1 % (200
cross-fitted good frames place it with POT; the 0.1 % of SPC would be an extrapolation, and the
model would be provisional). Every modality calibrates by blocked cross-fitting unless a
``calibration_fraction`` asks for a time-ordered hold-out (:class:`ModelBundle`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from linewatch.coverage import Coverage
from linewatch.detectors.bundle import ANY, ModelBundle, Scope
from linewatch.detectors.spc_rules import DEFAULT_RULE_SET, rule_baseline
from linewatch.errors import ConfigError
from linewatch.storage.connection import connect
from linewatch.storage.model_registry import ModelRef, save_and_register

#: The false-alarm target of a new image model when none is given.
IMAGE_TARGET_FAR = 0.01
#: The detector a new model of each modality gets when none is named.
DEFAULT_DETECTORS = {"spc": "robust_mahalanobis", "signals": "robust_mahalanobis", "frames": "patchcore"}


def fit_model(
    X: Any,
    *,
    modality: str = "spc",
    detector: str | Any | None = None,
    feature_names: Sequence[str] = (),
    scope: Scope | None = None,
    calibration: str = "auto",
    target_far: float | None = None,
    calibration_fraction: float | None = None,
    seed: int = 0,
    train_start: datetime | None = None,
    train_end: datetime | None = None,
    context: Mapping[str, Any] | None = None,
    run_rules: str | None = DEFAULT_RULE_SET,
    **fit_kwargs: Any,
) -> ModelBundle:
    """A fitted, calibrated bundle for ``modality`` and ``scope`` (not registered yet).

    ``context`` (dimension -> one value per training row: ``shift``, ``lot``, ``sku``, ``asset``,
    ``machine_state``, ``hour`` as hours or timestamps) is counted into ``meta["coverage"]``
    (:class:`~linewatch.coverage.Coverage`), so live records from a context the model never saw
    are flagged. An SPC model also stores its characteristics' Phase I centre and within-σ as
    ``meta["run_rules"]`` (``run_rules`` names the rule set, ``None`` turns live run rules off),
    whatever the detector, so the live agent can apply the run rules to its stream.
    ``fit_kwargs`` go to :meth:`ModelBundle.fit` (``detector_params``, ``calibration_data``,
    ``progress``, ``meta``).
    """
    scope = scope or Scope()
    frames = modality == "frames"
    if frames and scope.sku == ANY:
        raise ConfigError("an image model is for one SKU; pass the SKU (a model knows one kind of part)")
    meta = {"train_start": train_start.isoformat() if train_start else None,
            "train_end": train_end.isoformat() if train_end else None,
            **fit_kwargs.pop("meta", {})}
    if context is not None:
        wrong = {dim: len(v) for dim, v in context.items() if v is not None and len(v) != len(X)}
        if wrong:
            raise ConfigError(f"context columns {wrong} do not have one value per training row ({len(X)}); "
                              "pass the context of exactly the rows being fitted")
        meta["coverage"] = Coverage.from_context(context).to_dict()
    if modality == "spc" and run_rules is not None:
        meta["run_rules"] = rule_baseline(X, rules=run_rules)
    return ModelBundle.fit(
        detector or DEFAULT_DETECTORS[modality], X, feature_names=feature_names, modality=modality, scope=scope,
        calibration=calibration,
        target_far=target_far if target_far is not None else (IMAGE_TARGET_FAR if frames else 1e-3),
        calibration_fraction=calibration_fraction,
        seed=seed, meta=meta, **fit_kwargs,
    )


def register(bundle: ModelBundle, *, database_url: str, model_dir: Path, shadow: bool = False) -> ModelRef:
    """Save ``bundle`` under ``model_dir`` and make it the active version of its model id.

    ``shadow=True`` registers it as a challenger: it scores beside the champion into
    ``shadow_scores`` and is never routed until ``linewatch models promote`` makes it the champion.
    """
    with connect(database_url) as conn:
        return save_and_register(conn, bundle, model_dir=model_dir, shadow=shadow)


def train_and_register(X: Any, *, database_url: str, model_dir: Path, shadow: bool = False,
                       **fit: Any) -> tuple[ModelBundle, ModelRef]:
    """Fit (:func:`fit_model`, same keywords) and register in one call (``shadow``: as a challenger)."""
    bundle = fit_model(X, **fit)
    return bundle, register(bundle, database_url=database_url, model_dir=model_dir, shadow=shadow)
