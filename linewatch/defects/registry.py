"""Defect classifiers in the one model registry: ``model_versions`` rows and stored artifacts, hot-reloaded.

A classifier version is registered like every anomaly model (:mod:`linewatch.storage.model_registry`):
one ``model_versions`` row with ``detector = 'defect_classifier'`` and one content-addressed
artifact (``model.onnx`` + ``classifier.json``) in ``model_artifacts``, in one transaction, so a
version is never visible without its bytes. Its ``calibration`` column holds what an engineer
queries without unpacking anything: the classes, the unknown threshold, the target precision and
the cross-validated report. The model id follows the registry's rule
(``frames:*:washer:defect_classifier``), so ``linewatch models list`` and ``linewatch models
promote`` treat classifier versions like any other; a version with a class below
:data:`~linewatch.defects.classifier.MIN_EXAMPLES` is marked ``provisional``.

The anomaly models' :class:`~linewatch.storage.model_registry.ModelCache` never sees these rows
(:func:`~linewatch.storage.model_registry.active_models` leaves classifiers out unless asked);
:class:`ClassifierCache` is their cache: same refresh rule, same verified artifact cache, the
most specific scope wins. It serves champions only: a classifier registered with ``--shadow``
waits for ``linewatch models promote``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from linewatch.defects.classifier import MIN_EXAMPLES, DefectClassifier
from linewatch.detectors.bundle import ANY, ModelBundle, Scope
from linewatch.errors import ConfigError, LinewatchError
from linewatch.schemas.messages import Modality
from linewatch.storage.artifacts import ArtifactCache, pack_directory, read_artifact, store_artifact
from linewatch.storage.connection import connect
from linewatch.storage.model_registry import CLASSIFIER_DETECTOR, ModelCache, ModelRef, active_models, model_id_for

__all__ = ["DETECTOR", "ClassifierCache", "frames_model_for", "register_classifier"]

log = logging.getLogger(__name__)

#: ``model_versions.detector`` of every defect classifier version.
DETECTOR = CLASSIFIER_DETECTOR
MODALITIES = tuple(m.value for m in Modality)


def register_classifier(conn: psycopg.Connection, clf: DefectClassifier, *, modality: str, scope: Scope,
                        model_dir: Path, shadow: bool = False) -> ModelRef:
    """Save ``clf`` under ``model_dir/<model_id>/<version>``, store its files and record it as an active version.

    The artifact and the ``model_versions`` row commit together (in the caller's connection). With
    ``shadow=True`` the version waits for ``linewatch models promote`` before a worker uses it.
    """
    if modality not in MODALITIES:
        raise ConfigError(f"modality {modality!r}; a classifier is for one of {', '.join(MODALITIES)}")
    model_id = model_id_for(modality, DETECTOR, scope)
    path = (Path(model_dir) / model_id.replace(":", "__").replace("*", "any") / clf.version).resolve()
    clf.save(path)
    packed = pack_directory(path)
    report = clf.meta.get("report", {})
    calibration = {"classes": list(clf.classes), "unknown_below": clf.unknown_below,
                   "target_precision": report.get("target_precision"), "report": report}
    provisional = any(n < MIN_EXAMPLES for n in clf.meta.get("n_per_class", {}).values())
    with conn.transaction():
        sha256 = store_artifact(conn, packed)
        conn.execute(
            """INSERT INTO model_versions (model_id, version, modality, scope_asset, scope_sku, scope_camera,
                   detector, feature_names, n_samples, data_hash, calibration, artifact_path, artifact_sha256,
                   provisional, shadow)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (model_id, version) DO NOTHING""",
            (model_id, clf.version, modality, scope.asset, scope.sku, scope.camera, DETECTOR,
             list(clf.feature_names), int(clf.meta.get("n_samples", 0)), clf.meta.get("data_hash", ""),
             json.dumps(calibration, default=str), str(path), sha256, provisional, shadow),
        )
    return ModelRef(model_id, clf.version, modality, scope.asset, scope.sku, scope.camera, str(path), sha256, shadow)


class ClassifierCache:
    """Loaded defect classifiers by modality and scope, refreshed from ``model_versions`` every ``refresh_s``.

    Mirrors :class:`~linewatch.storage.model_registry.ModelCache`: owned by one agent and used from
    one thread; a deactivated version stops serving at the next refresh; an artifact that cannot
    be loaded is logged and skipped while the previous version keeps serving; artifacts are
    unpacked (verified) under ``cache_dir/<sha256>/``.
    """

    def __init__(self, database_url: str, *, refresh_s: float = 30.0, cache_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic, modalities: Sequence[str] = MODALITIES) -> None:
        self._url = database_url
        #: The modalities this cache serves: an agent loads its own modality's classifiers only.
        self._modalities = tuple(modalities)
        self._refresh_s = refresh_s
        self._artifacts = ArtifactCache(cache_dir)
        self._clock = clock
        self._next_refresh = 0.0
        #: model_id -> the version in memory.
        self._loaded: dict[str, ModelRef] = {}
        #: (modality, scope) -> classifier.
        self._by_scope: dict[tuple[str, Scope], DefectClassifier] = {}

    def refresh(self, *, force: bool = False) -> list[str]:
        """Load new versions if it is time; returns the ``model_id@version`` strings that changed."""
        now = self._clock()
        if not force and now < self._next_refresh:
            return []
        self._next_refresh = now + self._refresh_s
        try:
            with connect(self._url) as conn:
                refs = [r for r in active_models(conn, self._modalities, classifiers=True) if not r.shadow]
        except psycopg.Error as e:
            log.warning("cannot look for new defect classifiers (%s); keeping the %d loaded", e, len(self._loaded))
            return []
        changed = []
        for gone in set(self._loaded) - {r.model_id for r in refs}:
            old = self._loaded.pop(gone)
            self._by_scope.pop((old.modality, old.scope), None)
            changed.append(f"{old.model_id}@{old.version} (deactivated)")
        for ref in refs:
            if ref.model_id in self._loaded and self._loaded[ref.model_id].version == ref.version:
                continue
            try:
                clf = self._load(ref)
            except (OSError, ValueError, KeyError, LinewatchError) as e:
                log.error("cannot load defect classifier %s@%s: %s", ref.model_id, ref.version, e)
                continue
            self._by_scope[(ref.modality, ref.scope)] = clf
            self._loaded[ref.model_id] = ref
            changed.append(f"{ref.model_id}@{ref.version}")
        return changed

    def _load(self, ref: ModelRef) -> DefectClassifier:
        label = f"defect classifier {ref.model_id}@{ref.version}"
        if ref.artifact_sha256 is None:
            raise LinewatchError(f"{label} has no stored artifact; register it again")
        sha256, url = ref.artifact_sha256, self._url
        directory = self._artifacts.get(sha256, lambda: read_artifact(url, sha256, what=label), what=label)
        return DefectClassifier.load(directory)

    def classifier_for(self, modality: str, asset: str, sku: str, camera: str = ANY) -> DefectClassifier | None:
        """The classifier of the most specific scope that has one (asset, then SKU, then camera), or None."""
        for scope in Scope(asset, sku, camera).candidates():
            clf = self._by_scope.get((modality, scope))
            if clf is not None:
                return clf
        return None

    def loaded(self) -> dict[str, str]:
        """``model_id -> version`` of every classifier in memory, for health reports (a copy)."""
        return {model_id: ref.version for model_id, ref in dict(self._loaded).items()}


def frames_model_for(database_url: str, *, sku: str, camera: str = ANY,
                     cache_dir: Path | None = None) -> ModelBundle | None:
    """The champion image model that scores ``sku`` (and camera) in the stream, or None.

    Its pooled patch features are what a frames classifier of that scope reads live, so a
    classifier trained on a folder must read the folder through the same model.
    """
    cache = ModelCache(database_url=database_url, modalities=("frames",), cache_dir=cache_dir)
    cache.refresh(force=True)
    models = [m for m in cache.champions_for("frames", ANY, sku, camera) if hasattr(m.detector, "pooled_features")]
    return models[0] if models else None
