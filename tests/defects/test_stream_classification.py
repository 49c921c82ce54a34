"""Defect classes in the pipelines: a real trained classifier on the features the anomaly models computed.

The classifier source here is an in-memory registry (the database-backed ``ClassifierCache`` is tested
in test_defect_registry.py); the pipelines, the classifier and the encoder are the production code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from linewatch.defects.catalogue import DefectClass, Routes
from linewatch.defects.classifier import train_classifier
from linewatch.defects.stream import DefectLayer
from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.producers.frames import CameraFrame, encode_frame
from linewatch.schemas.codec import decode, encode
from linewatch.schemas.messages import Score
from linewatch.schemas.rows import ScoreRow, columns
from linewatch.simulation.frames import stream_frames
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.frames_pipeline import score_frames_batch
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import score_spc_batch
from linewatch.training import fit_model

COLS = columns(ScoreRow)


class Registry:
    """Classifiers by (modality, sku): the registry's lookup without its database."""

    def __init__(self, **by_key):
        self.by_key = by_key

    def classifier_for(self, modality, asset, sku, camera="*"):
        return self.by_key.get(f"{modality}:{sku}")

    def refresh(self):
        return []

    def loaded(self):
        return {k: c.version for k, c in self.by_key.items()}


class One:
    def __init__(self, bundle):
        self.bundle = bundle

    def models_for(self, modality, asset_id, sku, camera="*"):
        return [self.bundle]


def _msgs(topic, payloads):
    return [RawMessage(topic, 0, i, b"k", p) for i, p in enumerate(payloads)]


def test_spc_records_carry_the_class_and_route_on_every_detectors_score():
    train, train_y = _parts(1500, seed=0)
    clf, report = train_classifier(train.X, train_y, train.feature_names, seed=0)
    assert report["macro_f1"] > 0.8
    normal = simulate_spc(n_parts=1500, seed=1, fault_fraction=0.0)
    bundle = ModelBundle.fit("hotelling", normal.X, feature_names=normal.feature_names, target_far=0.01,
                             calibration_fraction=0.3)
    test, truth = _parts(200, seed=2)
    routes = Routes([DefectClass("housing-a", "oversize", "scrap", ())])
    layer = DefectLayer(Registry(**{"spc:housing-a": clf}), load_routes=lambda: routes)
    out = score_spc_batch(_msgs("spc", [encode(r) for r in test.records()]), One(bundle), defects=layer)
    assert len(out.scores) == 200
    expected, confidence = clf.predict(test.X)
    got = [r[COLS.index("defect_class")] for r in out.scores]
    assert got == list(expected)  # the stream's class is the classifier's, record by record
    np.testing.assert_allclose([r[COLS.index("defect_confidence")] for r in out.scores], confidence)
    named = [(g, t) for g, t in zip(got, truth, strict=True) if g not in ("good", "unknown")]
    assert len(named) > 30 and np.mean([g == t for g, t in named]) > 0.9
    flagged = {r[COLS.index("event_id")]: r[COLS.index("is_anomaly")] for r in out.scores}
    assert any(not flagged[r[1]] and c not in ("good", "unknown")  # a known defect the charts did not flag
               for r, c in zip(out.scores, got, strict=True))
    for row, (_, value, _) in zip(out.scores, out.score_messages, strict=True):
        msg = decode(value, Score)
        cls = row[COLS.index("defect_class")]
        assert msg.defect.defect_class == cls and msg.defect.classifier_version == clf.version
        route = row[COLS.index("defect_route")]
        assert (msg.defect.route.value if msg.defect.route else None) == route
        assert route is None if cls in ("good", "unknown") else route == routes.route_for("housing-a", cls, "spc")
    # Without a classifier for the scope nothing is classified and nothing else changes.
    plain = score_spc_batch(_msgs("spc", [encode(r) for r in test.records()]), One(bundle))
    assert [r[:14] for r in plain.scores] == [r[:14] for r in out.scores]
    assert all(r[COLS.index("defect_class")] is None for r in plain.scores)


def _parts(n: int, *, seed: int):
    """Simulated parts: 60 % good, 20 % with an oversize first characteristic, 20 % over-torqued (5th), by 1-5 sigma."""
    sim = simulate_spc(n_parts=n, seed=seed, fault_fraction=0.0)
    rng = np.random.default_rng(seed)
    kind = rng.choice(["good", "oversize", "over_torque"], size=n, p=[0.6, 0.2, 0.2])
    sigma = sim.X.std(axis=0)
    sim.X[kind == "oversize", 0] += rng.uniform(1.0, 5.0, (kind == "oversize").sum()) * sigma[0]
    sim.X[kind == "over_torque", 4] += rng.uniform(1.0, 5.0, (kind == "over_torque").sum()) * sigma[4]
    return sim, [str(k) for k in kind]


@pytest.fixture(scope="module")
def frames_model():
    good = np.stack([f.image for f in stream_frames("bracket-a", size=64, seed=0, defect_rate=0.0, limit=40)])
    cache = ModelCache(database_url=None, modalities=("frames",))
    cache.add(fit_model(good, modality="frames", scope=Scope(sku="bracket-a"), target_far=0.5,
                        calibration_fraction=0.6, detector_params={"image_size": 64}, seed=0))
    return cache


def test_frames_are_classified_only_by_a_classifier_of_their_image_models_features(frames_model):
    bundle = frames_model.models_for("frames", "a1", "bracket-a", "cam-1")[0]
    frames = list(stream_frames("bracket-a", size=64, seed=4, defect_rate=0.7, defects=("missing_feature",),
                                limit=60))
    labels = [f.label for f in frames]
    pooled = bundle.detector.pooled_features(np.stack([f.image for f in frames]))
    names = [f"pooled_{j}" for j in range(pooled.shape[1])]
    ours, _ = train_classifier(pooled, labels, names, seed=0, meta={"feature_model": bundle.version})
    other, _ = train_classifier(pooled, labels, names, seed=0, meta={"feature_model": "another-image-model"})
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    payloads = [encode_frame(CameraFrame("a1", "cam-1", "bracket-a", f"p{i}", t0 + timedelta(seconds=i), f.image),
                             "png") for i, f in enumerate(frames[:20])]
    out = score_frames_batch(_msgs("frames", payloads), frames_model,
                             defects=DefectLayer(Registry(**{"frames:bracket-a": ours})))
    got = [r[COLS.index("defect_class")] for r in out.scores]
    assert got == list(ours.predict(pooled[:20])[0])  # the stream read the same pooled features
    assert np.mean([g == t for g, t in zip(got, labels[:20], strict=True)]) >= 0.8
    stale = score_frames_batch(_msgs("frames", payloads), frames_model,
                               defects=DefectLayer(Registry(**{"frames:bracket-a": other})))
    assert all(r[COLS.index("defect_class")] is None for r in stale.scores)  # another model's feature space
