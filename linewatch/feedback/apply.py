"""Apply a threshold change: a NEW model version, never an edit of the serving one.

The active version serving a detector on an asset (its own, or the all-assets ``*`` one) is
loaded from the registry, copied with the new threshold
(:meth:`~linewatch.detectors.bundle.ModelBundle.with_threshold`, which records the old
threshold, the reason, the actor and the dispositions in ``meta``) and registered through the one
registry (:func:`~linewatch.storage.model_registry.save_and_register`), scoped to that asset:
the most specific scope wins, so other assets keep the model they had. Workers pick the new
version up at their next model refresh. ``shadow`` registers it as a challenger instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import psycopg

from linewatch.detectors.bundle import ANY, ModelBundle, Scope
from linewatch.errors import ConfigError
from linewatch.storage.artifacts import ArtifactCache, read_artifact
from linewatch.storage.connection import connect
from linewatch.storage.model_registry import ModelRef, save_and_register


@dataclass(frozen=True)
class AppliedThreshold:
    previous: ModelRef
    previous_threshold: float
    new: ModelRef
    bundle: ModelBundle


def serving_model(conn: psycopg.Connection, *, detector: str, asset: str, modality: str | None = None) -> ModelRef:
    """The active champion of ``detector`` that serves ``asset``: the asset's own model first, then ``*``.

    Shadow (challenger) versions score beside the champion and are not what an operator's
    threshold change starts from.
    """
    rows = conn.execute(
        """SELECT DISTINCT ON (modality) model_id, version, modality, scope_asset, scope_sku, scope_camera,
                  artifact_path, artifact_sha256
           FROM model_versions
           WHERE detector = %s AND active AND NOT shadow AND scope_asset IN (%s, '*')
             AND (%s::text IS NULL OR modality = %s)
           ORDER BY modality, (scope_asset = %s) DESC, created_at DESC, version DESC""",
        (detector, asset, modality, modality, asset),
    ).fetchall()
    if not rows:
        raise ConfigError(f"no active {detector} model serves asset {asset!r}; train one with `linewatch train`, "
                          "or check the names with `linewatch thresholds propose`")
    if len(rows) > 1:
        raise ConfigError(f"{detector} models of several modalities ({', '.join(r[2] for r in rows)}) serve "
                          f"{asset!r}; say which with --modality")
    return ModelRef(*rows[0])


def load_registered(database_url: str, ref: ModelRef, *, cache_dir: Path | None) -> ModelBundle:
    """The registered bundle of ``ref``, verified against its stored artifact."""
    label = f"model {ref.model_id}@{ref.version}"
    if ref.artifact_sha256 is None:
        directory = Path(ref.artifact_path)
    else:
        sha = ref.artifact_sha256
        directory = ArtifactCache(cache_dir).get(sha, lambda: read_artifact(database_url, sha, what=label), what=label)
    bundle = ModelBundle.load(directory)
    bundle.meta["version"] = ref.version
    bundle.modality, bundle.scope = ref.modality, ref.scope
    return bundle


def apply_threshold(database_url: str, *, detector: str, asset: str, threshold: float, reason: str,
                    actor: str, dispositions: list[str], model_dir: Path, cache_dir: Path | None = None,
                    shadow: bool = False, modality: str | None = None) -> AppliedThreshold:
    """Register a new version of the model serving ``detector`` on ``asset`` that alarms above ``threshold``."""
    if asset == ANY:
        raise ConfigError("thresholds are applied per asset: give --asset NAME (not '*')")
    with connect(database_url) as conn:
        previous = serving_model(conn, detector=detector, asset=asset, modality=modality)
        old = load_registered(database_url, previous, cache_dir=cache_dir)
        new = old.with_threshold(threshold, reason=reason, dispositions=dispositions, actor=actor)
        new = replace(new, scope=Scope(asset, old.scope.sku, old.scope.camera))
        ref = save_and_register(conn, new, model_dir=model_dir, shadow=shadow)
    return AppliedThreshold(previous=previous, previous_threshold=old.threshold, new=ref, bundle=new)
