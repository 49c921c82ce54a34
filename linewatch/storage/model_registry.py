"""Model versions of every modality: one ``model_versions`` row and one stored artifact each, newest active wins.

One registry and one cache for SPC, signals and image models. A worker asks
:class:`ModelCache` for the models of an event's modality and scope; the cache looks in the
database every ``refresh_s`` seconds and loads a newer version when one appears, so a freshly
trained model goes live without restarting anything. Several detectors can watch the same
scope (a Hotelling T² next to EWMA charts, say); for each detector the most specific scope
wins (:meth:`~linewatch.detectors.bundle.Scope.candidates`: asset, then SKU, then camera).

A version registered as a *shadow* (challenger) scores beside its model's champion without
replacing it: :func:`active_models` returns the newest active champion of each model id and the
newest active shadow newer than it, and the cache files the two apart (``bundle.meta["shadow"]``),
so a shadow never takes the champion's place in memory. A shadow is "per asset" through its scope:
one scoped to an asset challenges that asset's champion only. ``linewatch models promote`` turns a
shadow into the champion (:mod:`linewatch.storage.promotion`).

A version's files travel through the database, not a shared volume: registering packs the saved
bundle into ``model_artifacts`` by SHA-256 (:mod:`linewatch.storage.artifacts`), and the cache
fetches, verifies and unpacks it into a local directory keyed by that hash before loading it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from linewatch.detectors.bundle import ANY, ModelBundle, Scope
from linewatch.errors import LinewatchError
from linewatch.storage.artifacts import ArtifactCache, pack_directory, read_artifact, store_artifact
from linewatch.storage.connection import connect

__all__ = ["ANY", "CLASSIFIER_DETECTOR", "ModelCache", "ModelRef", "active_models", "is_shadow", "model_id_for",
           "save_and_register"]

log = logging.getLogger(__name__)
#: ``model_versions.detector`` of defect classifiers (:mod:`linewatch.defects.registry`): versions of
#: the same registry, but not anomaly model bundles, so :class:`ModelCache` never loads them.
CLASSIFIER_DETECTOR = "defect_classifier"
#: Legacy versions (no stored artifact) already warned about in this process, as ``model_id@version``.
_warned_legacy: set[str] = set()


@dataclass(frozen=True)
class ModelRef:
    model_id: str
    version: str
    modality: str
    scope_asset: str
    scope_sku: str
    scope_camera: str
    artifact_path: str
    #: The version's bundle in ``model_artifacts``; ``None`` for versions registered before artifacts were stored.
    artifact_sha256: str | None = None
    #: A challenger: its scores go to ``shadow_scores`` and are never routed.
    shadow: bool = False

    @property
    def scope(self) -> Scope:
        return Scope(self.scope_asset, self.scope_sku, self.scope_camera)


def model_id_for(modality: str, detector: str, scope: Scope) -> str:
    """One model id per modality, detector and scope; its versions replace each other.

    >>> model_id_for("spc", "hotelling", Scope("press-1"))
    'spc:press-1:*:hotelling'
    >>> model_id_for("frames", "patchcore", Scope(sku="washer", camera="cam-1"))
    'frames:*:washer:cam-1:patchcore'
    """
    camera = "" if scope.camera == ANY else f"{scope.camera}:"
    return f"{modality}:{scope.asset}:{scope.sku}:{camera}{detector}"


def is_shadow(bundle: ModelBundle) -> bool:
    """Whether ``bundle`` is a shadow (challenger) version: the cache marks loaded bundles in ``meta["shadow"]``."""
    return bool(bundle.meta.get("shadow", False))


def save_and_register(conn: psycopg.Connection, bundle: ModelBundle, *, model_dir: Path,
                      shadow: bool = False) -> ModelRef:
    """Write the bundle under ``model_dir/<model_id>/<version>``, store its files and record it as the active version.

    With ``shadow=True`` the version is a challenger: workers score its scope's events with it
    beside the champion (into ``shadow_scores``), and the champion keeps serving until
    ``linewatch models promote`` makes the shadow the champion.

    The saved directory is packed and stored in ``model_artifacts`` in the same transaction as the
    ``model_versions`` row, so a version is never visible without its bytes; workers load those
    bytes, and ``artifact_path`` only records where the trainer left the directory.
    """
    scope = bundle.scope
    model_id = model_id_for(bundle.modality, bundle.detector_name, scope)
    path = (model_dir / model_id.replace(":", "__").replace("*", "any") / bundle.version).resolve()
    bundle.save(path)
    packed = pack_directory(path)
    meta = bundle.meta
    with conn.transaction():
        sha256 = store_artifact(conn, packed)
        conn.execute(
            """INSERT INTO model_versions (model_id, version, modality, scope_asset, scope_sku, scope_camera,
                   detector, feature_names, n_samples, train_start, train_end, data_hash, calibration,
                   artifact_path, artifact_sha256, provisional, coverage, shadow)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (model_id, version) DO NOTHING""",
            (
                model_id, bundle.version, bundle.modality, scope.asset, scope.sku, scope.camera,
                bundle.detector_name, list(bundle.feature_names), meta.get("n_samples", 0),
                meta.get("train_start"), meta.get("train_end"), meta.get("data_hash", ""),
                json.dumps({**{k: v for k, v in bundle.calibrator.to_dict().items() if k != "reference"},
                            "report": bundle.calibration_report}, default=str),
                str(path), sha256, bundle.provisional,
                # What the training data covered (sql/130), queryable without unpacking the bundle.
                json.dumps(meta["coverage"]) if meta.get("coverage") is not None else None,
                shadow,
            ),
        )
    return ModelRef(model_id, bundle.version, bundle.modality, scope.asset, scope.sku, scope.camera, str(path),
                    sha256, shadow)


def active_models(conn: psycopg.Connection, modalities: Iterable[str], *, classifiers: bool = False
                  ) -> list[ModelRef]:
    """Per model id of the given modalities: the newest active champion, and the newest active shadow newer than it.

    Anomaly models by default; ``classifiers=True`` gives the defect classifiers'
    (:data:`CLASSIFIER_DETECTOR`) versions instead, which :class:`ModelCache` must never load as bundles.

    A shadow older than its model's champion has been overtaken (the champion was retrained after
    it) and challenges nothing, so it is not served. A shadow of a model id without a champion
    (scoped to one asset, challenging a wider scope's champion) is served.
    """
    rows = conn.execute(
        """WITH live AS (
               SELECT model_id, version, modality, scope_asset, scope_sku, scope_camera, artifact_path,
                      artifact_sha256, shadow, created_at
               FROM model_versions WHERE modality = ANY(%s) AND active AND (detector = %s) = %s),
           champion AS (
               SELECT DISTINCT ON (model_id) * FROM live WHERE NOT shadow
               ORDER BY model_id, created_at DESC, version DESC),
           challenger AS (
               SELECT DISTINCT ON (s.model_id) s.* FROM live s LEFT JOIN champion c ON c.model_id = s.model_id
               WHERE s.shadow AND (c.model_id IS NULL OR (s.created_at, s.version) > (c.created_at, c.version))
               ORDER BY s.model_id, s.created_at DESC, s.version DESC)
           SELECT model_id, version, modality, scope_asset, scope_sku, scope_camera, artifact_path,
                  artifact_sha256, shadow
           FROM (SELECT * FROM champion UNION ALL SELECT * FROM challenger) AS served
           ORDER BY model_id, shadow""",
        (list(modalities), CLASSIFIER_DETECTOR, classifiers),
    ).fetchall()
    return [ModelRef(*r) for r in rows]


class ModelCache:
    """Loaded bundles by modality and scope, refreshed from ``model_versions`` at most every ``refresh_s``.

    Owned by one agent (or a backtest, or the demo) and used from one thread. A version that is
    deactivated, or a model id that disappears, stops serving at the next refresh; an artifact
    that cannot be loaded (missing, or its bytes not the ones registered) is logged and skipped,
    and the previous version keeps serving.

    Stored artifacts are unpacked under ``cache_dir/<sha256>/`` (by default a per-user directory
    in the system temp dir) and reused from there by later caches on the same host.
    """

    def __init__(
        self,
        *,
        database_url: str | None,
        modalities: Iterable[str],
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        cache_dir: Path | None = None,
    ) -> None:
        self._url = database_url
        self._artifacts = ArtifactCache(cache_dir)
        self._modalities = tuple(modalities)
        self._refresh_s = refresh_s
        self._clock = clock
        self._next_refresh = 0.0
        #: (model_id, shadow) -> the version in memory: a champion and its shadow are held side by side.
        self._loaded: dict[tuple[str, bool], ModelRef] = {}
        #: (modality, scope, shadow) -> detector name -> bundle.
        self._by_scope: dict[tuple[str, Scope, bool], dict[str, ModelBundle]] = {}

    def refresh(self, *, force: bool = False) -> list[str]:
        """Load new versions if it is time; returns the ``model_id@version`` strings that changed."""
        now = self._clock()
        if self._url is None or (not force and now < self._next_refresh):
            return []
        self._next_refresh = now + self._refresh_s
        label = "/".join(self._modalities)
        try:
            with connect(self._url) as conn:
                refs = active_models(conn, self._modalities)
        except psycopg.Error as e:
            # Keep scoring with the models we have; the writer decides whether the database is gone.
            log.warning("cannot look for new %s models (%s); keeping the %d loaded", label, e, len(self))
            return []
        changed = []
        for gone in set(self._loaded) - {(r.model_id, r.shadow) for r in refs}:
            old = self._loaded.pop(gone)
            self._forget(old)
            changed.append(f"{_label(old)} (deactivated)" if not old.shadow else f"{_label(old)} (no longer served)")
        for ref in refs:
            key = (ref.model_id, ref.shadow)
            if key in self._loaded and self._loaded[key].version == ref.version:
                continue
            try:
                bundle = self._load(ref)
            except (OSError, ValueError, KeyError, LinewatchError) as e:
                source = f"artifact {ref.artifact_sha256[:12]}" if ref.artifact_sha256 else ref.artifact_path
                log.error("cannot load model %s@%s from %s: %s", ref.model_id, ref.version, source, e)
                continue
            if key in self._loaded:
                self._forget(self._loaded[key])
            self._file(bundle)
            self._loaded[key] = ref
            changed.append(_label(ref))
        return changed

    def _load(self, ref: ModelRef) -> ModelBundle:
        bundle = ModelBundle.load(self._directory(ref))
        # The registry row is the truth about what a version serves, whatever the files say.
        bundle.meta["version"] = ref.version
        bundle.meta["shadow"] = ref.shadow
        bundle.modality, bundle.scope = ref.modality, ref.scope
        _warm_up(bundle)  # inside the load: a model whose session cannot open is skipped like a bad file
        return bundle

    def _directory(self, ref: ModelRef) -> Path:
        """Where ``ref``'s files are on this host: its verified copy in the local cache, or its legacy path."""
        label = f"model {ref.model_id}@{ref.version}"
        if ref.artifact_sha256 is None:
            if f"{ref.model_id}@{ref.version}" not in _warned_legacy:
                _warned_legacy.add(f"{ref.model_id}@{ref.version}")
                log.warning("%s was registered before artifacts were stored in the database; loading it from %s "
                            "unverified (retrain it to store it)", label, ref.artifact_path)
            return Path(ref.artifact_path)
        sha256, url = ref.artifact_sha256, self._url
        assert url is not None  # refs come from the database
        return self._artifacts.get(sha256, lambda: read_artifact(url, sha256, what=label), what=label)

    def _file(self, bundle: ModelBundle) -> None:
        key = (bundle.modality, bundle.scope, is_shadow(bundle))
        self._by_scope.setdefault(key, {})[bundle.detector_name] = bundle

    def _forget(self, ref: ModelRef) -> None:
        models = self._by_scope.get((ref.modality, ref.scope, ref.shadow), {})
        for name, bundle in list(models.items()):
            if bundle.version == ref.version:
                del models[name]

    def add(self, bundle: ModelBundle) -> None:
        """Serve ``bundle`` for its modality and scope without the database (replay from files, tests).

        A later :meth:`refresh` replaces it if the database holds an active model for the same scope.
        A bundle with ``meta["shadow"]`` set is served as a shadow beside the champion.
        """
        _warm_up(bundle)
        self._file(bundle)

    def models_for(self, modality: str, asset: str, sku: str, camera: str = ANY) -> list[ModelBundle]:
        """Every detector's model for this event, each from its most specific scope: champions, then shadows.

        Champions and shadows are chosen apart, so a shadow scoped to this asset never hides the
        champion of a wider scope (it challenges it); tell them apart with :func:`is_shadow`.
        """
        return self.champions_for(modality, asset, sku, camera) + self._chosen(modality, asset, sku, camera, True)

    def champions_for(self, modality: str, asset: str, sku: str, camera: str = ANY) -> list[ModelBundle]:
        """The champions only (for backtests and benchmarks that must not score a challenger)."""
        return self._chosen(modality, asset, sku, camera, False)

    def _chosen(self, modality: str, asset: str, sku: str, camera: str, shadow: bool) -> list[ModelBundle]:
        chosen: dict[str, ModelBundle] = {}
        for scope in Scope(asset, sku, camera).candidates():
            for name, bundle in self._by_scope.get((modality, scope, shadow), {}).items():
                chosen.setdefault(name, bundle)
        return [chosen[name] for name in sorted(chosen)]

    def loaded(self) -> dict[str, str]:
        """``model_id -> version`` of every registry model in memory, for health reports.

        A copy, so a health check may call it from another thread while a batch refreshes the
        cache; models added with :meth:`add` (no registry row) are not listed.
        """
        return {model_id + (" (shadow)" if shadow else ""): ref.version
                for (model_id, shadow), ref in dict(self._loaded).items()}

    def served(self) -> list[ModelRef]:
        """The registry versions in memory with their scopes (a copy, safe from another thread, like :meth:`loaded`)."""
        return sorted(dict(self._loaded).values(), key=lambda r: (r.model_id, r.shadow))

    def __len__(self) -> int:
        return sum(len(models) for models in self._by_scope.values())


def _label(ref: ModelRef) -> str:
    return f"{ref.model_id}@{ref.version}" + (" (shadow)" if ref.shadow else "")


def _warm_up(bundle: ModelBundle) -> None:
    """Open a detector's shared sessions now (PatchCore's backbone), not when the first frames are waiting."""
    warm_up = getattr(bundle.detector, "warm_up", None)
    if warm_up is not None:
        warm_up()
