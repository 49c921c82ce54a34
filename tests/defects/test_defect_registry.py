"""Defect classifiers in the real registry: row and artifact, hot reload, scope precedence, apart from bundles."""

from __future__ import annotations

import json
import uuid

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.defects.classifier import GOOD, train_classifier
from linewatch.defects.registry import DETECTOR, ClassifierCache, register_classifier
from linewatch.detectors.bundle import Scope
from linewatch.storage.model_registry import ModelCache, active_models

pytestmark = pytest.mark.integration

NAMES = ["a", "b", "c"]


def _classes(seed: int, n: int = 25, classes=(GOOD, "burr")):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(4.0 * i, 1.0, (n, 3)) for i in range(len(classes))])
    return X, [c for c in classes for _ in range(n)]


@pytest.fixture(scope="module")
def classifiers():
    """Two trained versions (different classes, so a test can tell which one answers)."""
    first, _ = train_classifier(*_classes(0), NAMES, seed=0)
    second, _ = train_classifier(*_classes(1, classes=(GOOD, "burr", "crack")), NAMES, seed=1)
    return first, second


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_registered_classifier_has_its_row_and_artifact_and_reloads_hot(database_url, classifiers, tmp_path):
    first, second = classifiers
    sku = f"washer-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url) as conn:
        ref = register_classifier(conn, first, modality="frames", scope=Scope(sku=sku), model_dir=tmp_path)
    assert ref.model_id == f"frames:*:{sku}:{DETECTOR}" and ref.version == first.version
    with psycopg.connect(database_url) as conn:
        detector, calibration, names, n, sha, provisional = conn.execute(
            "SELECT detector, calibration, feature_names, n_samples, artifact_sha256, provisional FROM model_versions "
            "WHERE model_id = %s", (ref.model_id,)).fetchone()
        size = conn.execute("SELECT size FROM model_artifacts WHERE sha256 = %s", (sha,)).fetchone()[0]
    assert detector == DETECTOR and names == NAMES and n == 50 and size > 0 and provisional is False
    assert calibration["classes"] == ["burr", GOOD] and calibration["unknown_below"] == first.unknown_below
    assert calibration["report"]["per_class"]["burr"]["n"] == 25 and calibration["target_precision"] == 0.95

    clock = Clock()
    cache = ClassifierCache(database_url, refresh_s=30.0, cache_dir=tmp_path / "cache", clock=clock)
    assert f"{ref.model_id}@{first.version}" in cache.refresh()
    served = cache.classifier_for("frames", "any-asset", sku)
    assert served is not None and served.classes == first.classes
    X, _ = _classes(0)
    np.testing.assert_allclose(served.predict_proba(X), first.predict_proba(X))

    with psycopg.connect(database_url) as conn:
        register_classifier(conn, second, modality="frames", scope=Scope(sku=sku), model_dir=tmp_path)
    assert cache.refresh() == []  # not time yet
    clock.now = 31.0
    assert f"{ref.model_id}@{second.version}" in cache.refresh()
    assert cache.classifier_for("frames", "any-asset", sku).classes == ("burr", "crack", GOOD)
    assert cache.loaded()[ref.model_id] == second.version

    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE model_versions SET active = false WHERE model_id = %s", (ref.model_id,))
    assert f"{ref.model_id}@{second.version} (deactivated)" in cache.refresh(force=True)
    assert cache.classifier_for("frames", "any-asset", sku) is None


def test_the_most_specific_scope_wins_and_shadows_wait_for_promotion(database_url, classifiers, tmp_path):
    first, second = classifiers
    sku, asset = f"bolt-{uuid.uuid4().hex[:6]}", f"press-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url) as conn:
        register_classifier(conn, first, modality="frames", scope=Scope(sku=sku), model_dir=tmp_path)
        register_classifier(conn, second, modality="frames", scope=Scope(sku=sku, camera="cam-2"), model_dir=tmp_path)
        register_classifier(conn, first, modality="spc", scope=Scope(sku=sku), model_dir=tmp_path)
        register_classifier(conn, second, modality="spc", scope=Scope(asset=asset, sku=sku), model_dir=tmp_path)
        shadow = register_classifier(conn, second, modality="signals", scope=Scope(asset=asset), model_dir=tmp_path,
                                     shadow=True)
    cache = ClassifierCache(database_url, cache_dir=tmp_path / "cache")
    cache.refresh(force=True)
    assert cache.classifier_for("frames", "x", sku, "cam-2").version == second.version
    assert cache.classifier_for("frames", "x", sku, "cam-1").version == first.version
    assert cache.classifier_for("spc", asset, sku).version == second.version
    assert cache.classifier_for("spc", "another-asset", sku).version == first.version
    assert cache.classifier_for("signals", asset, "*") is None  # a shadow is not served
    result = CliRunner().invoke(app, ["models", "promote", shadow.model_id, shadow.version, "--actor", "test"],
                                env={"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    cache.refresh(force=True)
    assert cache.classifier_for("signals", asset, "*").version == second.version


def test_anomaly_model_caches_and_listings_keep_classifiers_apart(database_url, classifiers, tmp_path, caplog):
    first, _ = classifiers
    sku = f"gear-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url) as conn:
        ref = register_classifier(conn, first, modality="frames", scope=Scope(sku=sku), model_dir=tmp_path)
        assert ref.model_id not in {r.model_id for r in active_models(conn, ["frames"])}
        assert ref.model_id in {r.model_id for r in active_models(conn, ["frames"], classifiers=True)}
    models = ModelCache(database_url=database_url, modalities=("frames",), cache_dir=tmp_path / "cache")
    with caplog.at_level("ERROR"):
        models.refresh(force=True)
    assert ref.model_id not in models.loaded() and DETECTOR not in caplog.text
    listed = CliRunner().invoke(app, ["models", "list", "--modality", "frames", "--json"],
                                env={"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)})
    assert listed.exit_code == 0, listed.output
    row = next(v for v in json.loads(listed.stdout) if v["model_id"] == ref.model_id)
    assert row["role"] == "champion" and row["unknown_below"] == first.unknown_below and row["detector"] == DETECTOR
    table = CliRunner().invoke(app, ["models", "list", "--modality", "frames"],
                               env={"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path),
                                    "COLUMNS": "250"})
    assert f"unknown < {first.unknown_below:.3g}" in table.stdout


def test_the_stream_layer_classifies_records_with_the_cached_classifier(database_url, classifiers, tmp_path):
    from linewatch.defects.stream import DefectLayer
    from linewatch.schemas.messages import GOOD_CLASS, UNKNOWN_CLASS

    first, _ = classifiers
    assert (GOOD, "unknown") == (GOOD_CLASS, UNKNOWN_CLASS)  # the classifier's outcomes are the schema's
    asset = f"lathe-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url) as conn:
        register_classifier(conn, first, modality="spc", scope=Scope(asset=asset), model_dir=tmp_path)
    cache = ClassifierCache(database_url, cache_dir=tmp_path / "cache")
    cache.refresh(force=True)
    layer = DefectLayer(classifiers=cache)
    burr, good = {"a": 4.0, "b": 4.0, "c": 4.0}, {"a": 0.0, "b": 0.0, "c": 0.0}
    out = layer.classify_records("spc", [(asset, "*", burr), (asset, "*", good), (asset, "*", {"a": 4.0}),
                                         ("elsewhere", "*", burr)])
    assert out[0].defect_class == "burr" and out[0].classifier_version == first.version and out[0].route is not None
    assert out[1].defect_class == GOOD and out[1].route is None
    assert out[2] is None and out[3] is None  # a missing characteristic; an asset without a classifier
