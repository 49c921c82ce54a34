"""Model artifacts stored in PostgreSQL: packed, registered, fetched, verified and unpacked safely."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest

from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.errors import InfrastructureError
from linewatch.storage import artifacts, model_registry
from linewatch.storage.artifacts import (
    MARKER,
    ArtifactCache,
    UnsafeArchiveError,
    pack_directory,
    sha256_hex,
    store_artifact,
    unpack_archive,
)
from linewatch.storage.model_registry import ModelCache, save_and_register
from linewatch.training import fit_model

pytestmark = pytest.mark.integration

FEATURES = ["a", "b", "c"]


def _bundle(asset: str, seed: int = 0) -> ModelBundle:
    X = np.random.default_rng(seed).normal(size=(400, len(FEATURES)))
    return fit_model(X, modality="spc", detector="robust_mahalanobis", feature_names=FEATURES,
                     scope=Scope(asset), seed=seed)


def _probe() -> np.ndarray:
    return np.random.default_rng(99).normal(size=(50, len(FEATURES))) * 2


def _register(database_url: str, bundle: ModelBundle, model_dir: Path) -> model_registry.ModelRef:
    with psycopg.connect(database_url) as conn:
        return save_and_register(conn, bundle, model_dir=model_dir)


def _served(cache: ModelCache, asset: str) -> ModelBundle | None:
    """This test's model for ``asset`` (the shared database may hold models of other tests for any asset)."""
    found = [b for b in cache.models_for("spc", asset, "any-sku") if b.scope.asset == asset]
    return found[0] if found else None


def _deactivate(database_url: str, model_id: str) -> None:
    """Keep the session's shared database clean for workers of other tests."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE model_versions SET active = false WHERE model_id = %s", (model_id,))


def test_registered_model_loads_from_the_database_after_its_directory_is_gone(database_url, tmp_path, monkeypatch):
    asset = f"art-{uuid.uuid4().hex[:6]}"
    bundle = _bundle(asset)
    ref = _register(database_url, bundle, tmp_path / "models")
    assert ref.artifact_sha256 is not None and Path(ref.artifact_path).is_dir()
    with psycopg.connect(database_url) as conn:
        stored_sha, size, content = conn.execute(
            "SELECT v.artifact_sha256, a.size, a.content FROM model_versions v "
            "JOIN model_artifacts a ON a.sha256 = v.artifact_sha256 WHERE v.model_id = %s AND v.version = %s",
            (ref.model_id, ref.version)).fetchone()
    assert stored_sha == ref.artifact_sha256 == sha256_hex(content) and size == len(content)
    shutil.rmtree(ref.artifact_path)  # no shared volume: the trainer's directory is not there

    cache = ModelCache(database_url=database_url, modalities=("spc",), cache_dir=tmp_path / "cache")
    assert f"{ref.model_id}@{ref.version}" in cache.refresh(force=True)
    loaded = _served(cache, asset)
    assert loaded is not None and loaded.version == bundle.version
    want, got = bundle.score(_probe()), loaded.score(_probe())
    np.testing.assert_array_equal(got.raw, want.raw)
    np.testing.assert_array_equal(got.calibrated, want.calibrated)
    np.testing.assert_array_equal(got.is_anomaly, want.is_anomaly)
    entry = tmp_path / "cache" / ref.artifact_sha256
    assert (entry / MARKER).is_file() and (entry / "bundle.json").is_file()

    # A later cache on the same host reuses the verified copy without fetching it again.
    fetched: list[str] = []

    def no_fetch(url: str, sha256: str, *, what: str) -> bytes:
        fetched.append(sha256)
        raise InfrastructureError("fetching is not allowed here")

    monkeypatch.setattr(model_registry, "read_artifact", no_fetch)
    again = ModelCache(database_url=database_url, modalities=("spc",), cache_dir=tmp_path / "cache")
    again.refresh(force=True)
    assert ref.artifact_sha256 not in fetched
    np.testing.assert_array_equal(_served(again, asset).score(_probe()).raw, want.raw)
    _deactivate(database_url, ref.model_id)


def test_tampered_artifact_is_refused_and_the_previous_version_keeps_serving(database_url, tmp_path, caplog):
    asset = f"art-{uuid.uuid4().hex[:6]}"
    first = _register(database_url, _bundle(asset, seed=0), tmp_path / "models")
    cache = ModelCache(database_url=database_url, modalities=("spc",), cache_dir=tmp_path / "cache")
    cache.refresh(force=True)
    assert _served(cache, asset).version == first.version

    second = _register(database_url, _bundle(asset, seed=1), tmp_path / "models")
    assert second.version != first.version and second.artifact_sha256 != first.artifact_sha256
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE model_artifacts SET content = content || '\\x00'::bytea WHERE sha256 = %s",
                     (second.artifact_sha256,))
    with caplog.at_level(logging.ERROR, logger=model_registry.__name__):
        changed = cache.refresh(force=True)
    assert not any(c.startswith(first.model_id) for c in changed)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("sha256 mismatch" in m and f"{first.model_id}@{second.version}" in m for m in errors), errors
    assert _served(cache, asset).version == first.version
    assert not (tmp_path / "cache" / second.artifact_sha256).exists()
    _deactivate(database_url, first.model_id)


def test_packing_is_deterministic_and_stored_once(database_url, tmp_path):
    saved = _bundle("art-pack").save(tmp_path / "a")
    packed = pack_directory(saved)
    assert pack_directory(saved) == packed
    copy = Path(shutil.copytree(saved, tmp_path / "b", copy_function=shutil.copyfile))
    for path in [copy, *copy.rglob("*")]:
        os.utime(path, (1_000_000, 1_000_000))
    (copy / "bundle.json").chmod(0o600)
    assert sha256_hex(pack_directory(copy)) == sha256_hex(packed)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        names = tar.getnames()
        assert names == sorted(names) and "bundle.json" in names
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()} == {(0, 0, 0, "", "")}

    other = _bundle("art-pack", seed=3).save(tmp_path / "c")
    assert sha256_hex(pack_directory(other)) != sha256_hex(packed)
    with psycopg.connect(database_url) as conn:
        digest = store_artifact(conn, packed)
        assert store_artifact(conn, packed) == digest  # ON CONFLICT DO NOTHING, not an error
        n = conn.execute("SELECT count(*) FROM model_artifacts WHERE sha256 = %s", (digest,)).fetchone()[0]
    assert n == 1


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(("member", "reason"), [
    (_member("../escaped.json"), "leaves the target"),
    (_member("detector/../../escaped.json"), "leaves the target"),
    (_member("/tmp/escaped.json"), "absolute path"),
    (_member("detector/link", tarfile.SYMTYPE, "/etc/passwd"), "links and devices"),
    (_member("detector/hard", tarfile.LNKTYPE, "bundle.json"), "links and devices"),
    (_member("detector/dev", tarfile.CHRTYPE), "links and devices"),
    (_member(MARKER), "marker"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "marker"])
def test_unpacking_refuses_unsafe_members_and_writes_nothing(tmp_path, member, reason):
    data = _tar((_member("bundle.json"), b"{}"), (member, b"x"))
    target = tmp_path / "deep" / "target"
    with pytest.raises(UnsafeArchiveError, match=reason):
        unpack_archive(data, target)
    assert not target.exists() and not (tmp_path / "deep" / "escaped.json").exists()

    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(UnsafeArchiveError, match=reason):
        cache.get(sha256_hex(data), lambda: data, what="model test@1")
    assert not cache.path_for(sha256_hex(data)).exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no partial directory left behind


def test_a_half_unpacked_cache_entry_is_never_trusted(tmp_path):
    saved = _bundle("art-half").save(tmp_path / "saved")
    packed = pack_directory(saved)
    digest = sha256_hex(packed)
    cache = ArtifactCache(tmp_path / "cache")
    entry = cache.path_for(digest)
    entry.mkdir(parents=True)
    (entry / "bundle.json").write_text("{")  # a crash mid-unpack: files, no marker
    fetched: list[int] = []

    def fetch() -> bytes:
        fetched.append(1)
        return packed

    assert cache.get(digest, fetch, what="model half@1") == entry and fetched == [1]
    assert ModelBundle.load(entry).version == ModelBundle.load(saved).version
    assert cache.get(digest, fetch, what="model half@1") == entry and fetched == [1]  # now reused
    (entry / "bundle.json").write_text("{}")  # changed after the marker was written: sizes differ
    cache.get(digest, fetch, what="model half@1")
    assert fetched == [1, 1] and ModelBundle.load(entry).version == ModelBundle.load(saved).version
    with pytest.raises(artifacts.ArtifactIntegrityError, match="sha256 mismatch"):
        ArtifactCache(tmp_path / "other").get(digest, lambda: packed + b"\0", what="model half@1")


def test_a_version_registered_before_artifacts_loads_from_its_path_with_one_warning(database_url, tmp_path,
                                                                                     caplog):
    asset = f"art-{uuid.uuid4().hex[:6]}"
    bundle = _bundle(asset)
    ref = _register(database_url, bundle, tmp_path / "models")
    with psycopg.connect(database_url) as conn:  # what a row written before migration 100 looks like
        conn.execute("UPDATE model_versions SET artifact_sha256 = NULL WHERE model_id = %s", (ref.model_id,))
    with caplog.at_level(logging.WARNING, logger=model_registry.__name__):
        for _ in range(2):
            cache = ModelCache(database_url=database_url, modalities=("spc",), cache_dir=tmp_path / "cache")
            cache.refresh(force=True)
            np.testing.assert_array_equal(_served(cache, asset).score(_probe()).raw, bundle.score(_probe()).raw)
    warnings = [r.getMessage() for r in caplog.records if f"{ref.model_id}@{ref.version}" in r.getMessage()]
    assert len(warnings) == 1 and "before artifacts were stored" in warnings[0], warnings
    _deactivate(database_url, ref.model_id)


def test_workers_only_read_artifacts_and_the_registrar_adds_them(database_url):
    def can(role: str, privilege: str) -> bool:
        with psycopg.connect(database_url) as conn:
            query = "SELECT has_table_privilege(%s, 'model_artifacts', %s)"
            return conn.execute(query, (role, privilege)).fetchone()[0]

    assert can("linewatch_reader", "SELECT") and not can("linewatch_reader", "INSERT")
    assert can("linewatch_writer", "SELECT") and not can("linewatch_writer", "UPDATE")
    assert not can("linewatch_writer", "INSERT")
    assert can("linewatch_registrar", "SELECT") and can("linewatch_registrar", "INSERT")
    assert not can("linewatch_registrar", "UPDATE")
