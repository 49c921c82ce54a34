"""Defect classes in the stream: the classifier for an event's scope reads what its anomaly model computed.

The pipelines (live agents and replay alike) hand each scope's feature rows to
:meth:`DefectLayer.classify` and attach the result to every score of the event
(:class:`~linewatch.schemas.score_encoder.Defect`); fusion carries the most confident class and its
route into the alert. The classifier runs on every event of a scope it covers, flagged or not, so a
known class below the anomaly threshold is still reported (its score row says ``is_anomaly`` false).
A classifier that cannot read an event (a characteristic it was trained on is missing) leaves that
event unclassified: the anomaly verdict never waits for, or fails because of, the Day-30 layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from linewatch.defects.catalogue import Routes
from linewatch.schemas.messages import NOT_A_DEFECT
from linewatch.schemas.score_encoder import Defect
from linewatch.storage.connection import connect

log = logging.getLogger(__name__)


class Classifier(Protocol):
    feature_names: tuple[str, ...]
    version: str
    meta: dict[str, Any]

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ClassifierSource(Protocol):
    """Where the active classifier of a scope comes from (the registry's ``ClassifierCache`` in production)."""

    def classifier_for(self, modality: str, asset: str, sku: str, camera: str = ...) -> Any: ...

    def refresh(self) -> list[str]: ...

    def loaded(self) -> dict[str, str]: ...


@dataclass
class DefectLayer:
    """The classifiers and the class routes the pipelines consult; routes are re-read every ``routes_s``."""

    classifiers: ClassifierSource
    load_routes: Callable[[], Routes] = Routes
    routes_s: float = 60.0
    _routes: Routes | None = field(default=None, repr=False)
    _routes_at: float = field(default=-1e18, repr=False)

    def refresh(self) -> list[str]:
        """Load newer classifier versions when it is time (the pipelines call this once per batch)."""
        return self.classifiers.refresh()

    def loaded(self) -> dict[str, str]:
        """``model_id -> version`` of the classifiers in memory (health reports, replay run records)."""
        return self.classifiers.loaded()

    def classifier_for(self, modality: str, asset: str, sku: str, camera: str = "*") -> Classifier | None:
        return self.classifiers.classifier_for(modality, asset, sku, camera)

    def routes(self) -> Routes:
        now = time.monotonic()
        if self._routes is None or now - self._routes_at >= self.routes_s:
            try:
                self._routes, self._routes_at = self.load_routes(), now
            except Exception as e:  # the database is away: keep the routes we had
                log.warning("could not re-read defect routes (%s); keeping the previous ones", e)
                self._routes = self._routes or Routes()
        return self._routes

    def classify(self, clf: Classifier, X: np.ndarray, *, modality: str, sku: str) -> list[Defect]:
        """One :class:`Defect` per row of ``X`` (in ``clf.feature_names`` order)."""
        labels, confidence = clf.predict(np.asarray(X))
        routes = self.routes()
        return [Defect(str(c), float(p), None if c in NOT_A_DEFECT else routes.route_for(sku, str(c), modality),
                       clf.version)
                for c, p in zip(labels.tolist(), confidence.tolist(), strict=True)]

    def classify_records(self, modality: str, events: Sequence[tuple[str, str, Mapping[str, float]]]
                         ) -> list[Defect | None]:
        """``(asset, sku, values by name)`` events -> their defects (None: no classifier, or it lacks a value)."""
        out: list[Defect | None] = [None] * len(events)
        groups: dict[tuple[int, str], tuple[Classifier, str, list[int]]] = {}
        for i, (asset, sku, values) in enumerate(events):
            clf = self.classifier_for(modality, asset, sku)
            if clf is not None and all(f in values for f in clf.feature_names):
                groups.setdefault((id(clf), sku), (clf, sku, []))[2].append(i)
        for clf, sku, idx in groups.values():
            X = np.array([[events[i][2][f] for f in clf.feature_names] for i in idx], dtype=np.float64)
            for i, d in zip(idx, self.classify(clf, X, modality=modality, sku=sku), strict=True):
                out[i] = d
        return out


def defect_layer(database_url: str, *, refresh_s: float, cache_dir: Path | None = None,
                 modalities: Sequence[str] | None = None) -> DefectLayer:
    """The layer a worker (or a replay) runs: the registry's classifiers (of ``modalities``; all by default)
    and the database's class routes."""
    from linewatch.defects.registry import MODALITIES, ClassifierCache

    def routes() -> Routes:
        with connect(database_url) as conn:
            return Routes.load(conn)

    cache = ClassifierCache(database_url, refresh_s=refresh_s, cache_dir=cache_dir,
                            modalities=modalities or MODALITIES)
    return DefectLayer(cache, load_routes=routes,
                       routes_s=max(refresh_s, 10.0))
