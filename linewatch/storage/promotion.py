"""Champion and challenger versions: list what the registry serves, and promote a shadow to champion.

A version registered with ``--shadow`` scores beside its model's champion into ``shadow_scores``
and shadow alerts, never routed (:func:`~linewatch.storage.model_registry.active_models`). When
the challenger has earned it (the ``champion_challenger`` view compares the two per asset and day),
``linewatch models promote`` makes it the champion in one transaction and records who did it and
why in ``model_promotions``.

Promotion **deactivates** the previous champion of the same model id rather than leaving it
active and merely older: the registry then holds exactly one active champion per model id, which
is what ``linewatch models list`` and an engineer reading ``model_versions`` expect, and a rollback
is an explicit act (register or reactivate the old version) rather than a side effect of ordering
by ``created_at``. A shadow scoped to one asset that challenged a wider scope's champion (another
model id) leaves that champion active: it still serves every other asset.

Everything here runs with the ``linewatch_registrar`` grants (sql/140): ``UPDATE (shadow)`` and
``UPDATE (active)`` on ``model_versions``, ``INSERT`` on ``model_promotions``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from linewatch.errors import ConfigError
from linewatch.schemas.messages import Modality
from linewatch.storage.model_registry import active_models

__all__ = ["Promotion", "VersionInfo", "list_versions", "promote"]


@dataclass(frozen=True)
class VersionInfo:
    """One ``model_versions`` row as ``linewatch models list`` shows it."""

    model_id: str
    version: str
    modality: str
    scope_asset: str
    scope_sku: str
    scope_camera: str
    detector: str
    created_at: datetime
    active: bool
    shadow: bool
    provisional: bool
    #: Alarm threshold on the calibrated scale, -log10(target false-alarm rate), as in ``scores.threshold``.
    threshold: float | None
    #: The same threshold in the detector's own units; ``None`` when the calibration did not record one.
    raw_threshold: float | None
    #: A defect classifier's confidence below which it answers "unknown"; ``None`` for anomaly models.
    unknown_below: float | None
    #: Whether the workers serve it now: the newest active champion, or the newest active shadow newer than it.
    served: bool

    @property
    def role(self) -> str:
        """``champion``, ``shadow``, ``superseded`` (active but not served) or ``inactive``."""
        if not self.active:
            return "inactive"
        if not self.served:
            return "superseded"
        return "shadow" if self.shadow else "champion"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": self.created_at.isoformat(), "role": self.role}


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did: the new champion, the version it replaced (if any) and the record's time."""

    model_id: str
    version: str
    previous: str | None
    actor: str
    note: str
    promoted_at: datetime


def list_versions(conn: psycopg.Connection, *, modality: str | None = None, asset: str | None = None
                  ) -> list[VersionInfo]:
    """Every version, newest first per model id; ``asset`` matches its scope exactly (``'*'``: any-asset models)."""
    # "Served" has one definition, the one the workers use.
    modalities = [m.value for m in Modality]
    served = {(r.model_id, r.version) for kind in (False, True)
              for r in active_models(conn, modalities, classifiers=kind)}
    rows = conn.execute(
        """SELECT model_id, version, modality, scope_asset, scope_sku, scope_camera, detector, created_at, active,
                  shadow, provisional,
                  -log(NULLIF((calibration->>'target_far')::float8, 0)), (calibration->>'threshold')::float8,
                  (calibration->>'unknown_below')::float8
           FROM model_versions
           WHERE (%(modality)s::text IS NULL OR modality = %(modality)s)
             AND (%(asset)s::text IS NULL OR scope_asset = %(asset)s)
           ORDER BY model_id, created_at DESC, version DESC""",
        {"modality": modality, "asset": asset},
    ).fetchall()
    return [VersionInfo(*r, served=(r[0], r[1]) in served) for r in rows]


def promote(conn: psycopg.Connection, model_id: str, version: str, *, actor: str, note: str = "") -> Promotion:
    """Make the shadow ``model_id@version`` the champion, deactivate the champion it challenged, record it.

    One transaction: the version's row is locked, so two concurrent promotions cannot both win.
    Raises :class:`~linewatch.errors.ConfigError` (nothing changed) when the version does not
    exist, is not a shadow or is not active, or when ``actor`` is empty.
    """
    if not actor.strip():
        raise ConfigError("say who promotes (--actor NAME): model_promotions records it")
    with conn.transaction():
        row = conn.execute(
            "SELECT shadow, active FROM model_versions WHERE model_id = %s AND version = %s FOR UPDATE",
            (model_id, version),
        ).fetchone()
        if row is None:
            raise ConfigError(f"no version {version!r} of model {model_id!r}; `linewatch models list` shows them")
        shadow, active = row
        if not shadow:
            raise ConfigError(f"{model_id}@{version} is not a shadow version, so there is nothing to promote; "
                              "register a challenger with `linewatch train ... --shadow` first")
        if not active:
            raise ConfigError(f"{model_id}@{version} is not active (deactivated); only an active shadow that has "
                              "been scoring beside the champion can be promoted")
        champion = conn.execute(
            """SELECT version FROM model_versions WHERE model_id = %s AND active AND NOT shadow
               ORDER BY created_at DESC, version DESC LIMIT 1 FOR UPDATE""",
            (model_id,),
        ).fetchone()
        previous = champion[0] if champion else None
        conn.execute("UPDATE model_versions SET active = false WHERE model_id = %s AND active AND NOT shadow",
                     (model_id,))
        conn.execute("UPDATE model_versions SET shadow = false WHERE model_id = %s AND version = %s",
                     (model_id, version))
        # Not INSERT ... RETURNING: the registrar may insert promotions but not read them back.
        (promoted_at,) = conn.execute("SELECT clock_timestamp()").fetchone()
        conn.execute(
            """INSERT INTO model_promotions (promoted_at, model_id, version, previous, actor, note)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            (promoted_at, model_id, version, previous, actor, note),
        )
    return Promotion(model_id, version, previous, actor, note, promoted_at)
