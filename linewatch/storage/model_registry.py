"""Model versions: artifacts on disk, one ``model_versions`` row each, newest active wins.

A worker asks :class:`ModelCache` for the models of a record's scope; the cache looks in the
database every ``refresh_s`` seconds and loads a newer version when one appears, so a
freshly trained model goes live without restarting anything. Several detectors can watch
the same scope (a Hotelling T² next to EWMA charts, say); for each detector the most specific
scope wins: (asset, SKU), (asset, any SKU), (any asset, SKU), (any, any).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from linewatch.detectors.bundle import ModelBundle
from linewatch.errors import LinewatchError

ANY = "*"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    model_id: str
    version: str
    modality: str
    scope_asset: str
    scope_sku: str
    artifact_path: str


def model_id_for(modality: str, detector: str, scope_asset: str = ANY, scope_sku: str = ANY) -> str:
    """One model id per modality, detector and scope; its versions replace each other."""
    return f"{modality}:{scope_asset}:{scope_sku}:{detector}"


def save_and_register(
    conn: psycopg.Connection,
    bundle: ModelBundle,
    *,
    model_dir: Path,
    modality: str,
    scope_asset: str = ANY,
    scope_sku: str = ANY,
) -> ModelRef:
    """Write the bundle under ``model_dir/<model_id>/<version>`` and record it as the active version."""
    model_id = model_id_for(modality, bundle.detector_name, scope_asset, scope_sku)
    path = (model_dir / model_id.replace(":", "__").replace("*", "any") / bundle.version).resolve()
    bundle.save(path)
    meta = bundle.meta
    with conn.transaction():
        conn.execute(
            """INSERT INTO model_versions (model_id, version, modality, scope_asset, scope_sku, detector,
                   feature_names, n_samples, train_start, train_end, data_hash, calibration, artifact_path)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (model_id, version) DO NOTHING""",
            (
                model_id, bundle.version, modality, scope_asset, scope_sku, bundle.detector_name,
                list(bundle.feature_names), meta.get("n_samples", 0), meta.get("train_start"),
                meta.get("train_end"), meta.get("data_hash", ""),
                json.dumps({k: v for k, v in bundle.calibrator.to_dict().items() if k != "reference"}),
                str(path),
            ),
        )
    return ModelRef(model_id, bundle.version, modality, scope_asset, scope_sku, str(path))


def active_models(conn: psycopg.Connection, modality: str) -> list[ModelRef]:
    """The newest active version of every model of one modality."""
    rows = conn.execute(
        """SELECT DISTINCT ON (model_id) model_id, version, modality, scope_asset, scope_sku, artifact_path
           FROM model_versions WHERE modality = %s AND active
           ORDER BY model_id, created_at DESC, version DESC""",
        (modality,),
    ).fetchall()
    return [ModelRef(*r) for r in rows]


class RefreshingModelCache(ABC):
    """Models of one modality loaded from their artifacts, refreshed from ``model_versions``.

    The refresh loop lives here once; subclasses say how an artifact is loaded and how models
    are filed for lookup. A version that is deactivated (or a model id that disappears) is
    dropped at the next refresh; an artifact that cannot be loaded is logged and skipped, and
    the previous version keeps serving.
    """

    def __init__(
        self,
        *,
        database_url: str,
        modality: str,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = database_url
        self._modality = modality
        self._refresh_s = refresh_s
        self._clock = clock
        self._next_refresh = 0.0
        self._loaded: dict[str, ModelRef] = {}  # model_id -> the version in memory

    @abstractmethod
    def _load(self, ref: ModelRef) -> Any:
        """Read the artifact at ``ref.artifact_path``."""

    @abstractmethod
    def _remember(self, ref: ModelRef, model: Any) -> None:
        """File a freshly loaded model for lookups (replacing an older version of the same id)."""

    @abstractmethod
    def _forget(self, ref: ModelRef) -> None:
        """Stop serving the model that ``ref`` loaded."""

    def refresh(self, *, force: bool = False) -> list[str]:
        """Load new versions if it is time; returns the ``model_id@version`` strings that changed."""
        now = self._clock()
        if not force and now < self._next_refresh:
            return []
        self._next_refresh = now + self._refresh_s
        try:
            with psycopg.connect(self._url, connect_timeout=5) as conn:
                refs = active_models(conn, self._modality)
        except psycopg.Error as e:
            # Keep scoring with the models we have; the writer decides whether the database is gone.
            log.warning("cannot look for new %s models (%s); keeping the %d loaded", self._modality, e, len(self))
            return []
        changed = []
        for gone in set(self._loaded) - {r.model_id for r in refs}:
            old = self._loaded.pop(gone)
            self._forget(old)
            changed.append(f"{gone}@{old.version} (deactivated)")
        for ref in refs:
            if ref.model_id in self._loaded and self._loaded[ref.model_id].version == ref.version:
                continue
            try:
                model = self._load(ref)
            except (OSError, ValueError, KeyError, LinewatchError) as e:
                log.error("cannot load model %s@%s from %s: %s", ref.model_id, ref.version, ref.artifact_path, e)
                continue
            self._remember(ref, model)
            self._loaded[ref.model_id] = ref
            changed.append(f"{ref.model_id}@{ref.version}")
        return changed

    @abstractmethod
    def __len__(self) -> int: ...


class ModelCache(RefreshingModelCache):
    """Tabular and signals bundles by scope; several detectors may watch one scope."""

    def __init__(self, *, database_url: str, modality: str, refresh_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(database_url=database_url, modality=modality, refresh_s=refresh_s, clock=clock)
        self._by_scope: dict[tuple[str, str], dict[str, ModelBundle]] = {}

    def _load(self, ref: ModelRef) -> ModelBundle:
        bundle = ModelBundle.load(ref.artifact_path)
        bundle.meta["version"] = ref.version
        return bundle

    def _remember(self, ref: ModelRef, model: ModelBundle) -> None:
        self._by_scope.setdefault((ref.scope_asset, ref.scope_sku), {})[model.detector_name] = model

    def _forget(self, ref: ModelRef) -> None:
        models = self._by_scope.get((ref.scope_asset, ref.scope_sku), {})
        for name, bundle in list(models.items()):
            if bundle.version == ref.version:
                del models[name]

    def for_record(self, asset_id: str, sku: str) -> list[ModelBundle]:
        """Every detector's model for this record, each from its most specific scope."""
        chosen: dict[str, ModelBundle] = {}
        for scope in ((asset_id, sku), (asset_id, ANY), (ANY, sku), (ANY, ANY)):
            for name, bundle in self._by_scope.get(scope, {}).items():
                chosen.setdefault(name, bundle)
        return [chosen[name] for name in sorted(chosen)]

    def __len__(self) -> int:
        return sum(len(models) for models in self._by_scope.values())
