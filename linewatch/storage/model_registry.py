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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from linewatch.detectors.bundle import ModelBundle

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


class ModelCache:
    """Loaded bundles by scope, refreshed from the database at most every ``refresh_s`` seconds."""

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
        self._by_scope: dict[tuple[str, str], dict[str, ModelBundle]] = {}
        self._loaded: dict[str, str] = {}  # model_id -> version

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
        for ref in refs:
            if self._loaded.get(ref.model_id) == ref.version:
                continue
            try:
                bundle = ModelBundle.load(ref.artifact_path)
            except (OSError, ValueError, KeyError) as e:
                log.error("cannot load model %s@%s from %s: %s", ref.model_id, ref.version, ref.artifact_path, e)
                continue
            bundle.meta["version"] = ref.version
            self._by_scope.setdefault((ref.scope_asset, ref.scope_sku), {})[bundle.detector_name] = bundle
            self._loaded[ref.model_id] = ref.version
            changed.append(f"{ref.model_id}@{ref.version}")
        return changed

    def for_record(self, asset_id: str, sku: str) -> list[ModelBundle]:
        """Every detector's model for this record, each from its most specific scope."""
        chosen: dict[str, ModelBundle] = {}
        for scope in ((asset_id, sku), (asset_id, ANY), (ANY, sku), (ANY, ANY)):
            for name, bundle in self._by_scope.get(scope, {}).items():
                chosen.setdefault(name, bundle)
        return [chosen[name] for name in sorted(chosen)]

    def __len__(self) -> int:
        return sum(len(models) for models in self._by_scope.values())
