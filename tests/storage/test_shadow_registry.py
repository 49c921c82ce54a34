"""Shadow versions in the registry: what is served, what the cache keeps apart, promotion and `linewatch models`."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from linewatch.cli import app
from linewatch.detectors.bundle import Scope
from linewatch.errors import ConfigError
from linewatch.storage.model_registry import ModelCache, active_models, is_shadow
from linewatch.storage.promotion import list_versions, promote
from linewatch.training import train_and_register

pytestmark = pytest.mark.integration

X = np.random.default_rng(3).normal(size=(300, 3))
NAMES = ["a", "b", "c"]


@pytest.fixture
def registrar(database_url: str) -> Iterator[str]:
    """A fresh login in ``linewatch_registrar`` (what `linewatch models promote` runs as in production)."""
    name, password = f"lw_test_promote_{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE linewatch_registrar").format(
            sql.Identifier(name), sql.Literal(password)))
    yield make_conninfo(database_url, user=name, password=password)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def register(database_url: str, tmp_path) -> Callable[..., object]:
    def make(scope: str | Scope, *, shadow: bool = False, seed: int = 0):
        _, ref = train_and_register(X + seed, feature_names=NAMES, database_url=database_url, model_dir=tmp_path,
                                    detector="hotelling", scope=scope if isinstance(scope, Scope) else Scope(scope),
                                    seed=seed, shadow=shadow)
        return ref
    return make


def _served(database_url: str, model_id: str) -> list[tuple[str, bool]]:
    with psycopg.connect(database_url) as conn:
        return [(r.version, r.shadow) for r in active_models(conn, ["spc"]) if r.model_id == model_id]


def test_the_champion_and_a_newer_shadow_are_served_side_by_side(database_url, register, tmp_path):
    asset = f"reg-{uuid.uuid4().hex[:6]}"
    old_shadow = register(asset, shadow=True, seed=1)
    champion = register(asset, seed=2)
    # A shadow older than the champion was overtaken (the champion was retrained after it): not served.
    assert _served(database_url, champion.model_id) == [(champion.version, False)]
    shadow = register(asset, shadow=True, seed=3)
    assert _served(database_url, champion.model_id) == [(champion.version, False), (shadow.version, True)]
    assert old_shadow.version not in dict(_served(database_url, champion.model_id))

    cache = ModelCache(database_url=database_url, modalities=("spc",), cache_dir=tmp_path / "cache")
    cache.refresh(force=True)
    mine = [b for b in cache.models_for("spc", asset, "any-sku") if b.scope.asset == asset]
    assert [(b.version, is_shadow(b)) for b in mine] == [(champion.version, False), (shadow.version, True)]
    assert [b.version for b in cache.champions_for("spc", asset, "any-sku") if b.scope.asset == asset] == [
        champion.version]
    assert cache.loaded()[champion.model_id] == champion.version
    assert cache.loaded()[f"{champion.model_id} (shadow)"] == shadow.version

    # A newer shadow replaces the older one in memory and leaves the champion where it is.
    newer = register(asset, shadow=True, seed=4)
    changed = cache.refresh(force=True)
    assert changed == [f"{newer.model_id}@{newer.version} (shadow)"]
    mine = [b for b in cache.models_for("spc", asset, "any-sku") if b.scope.asset == asset]
    assert [(b.version, is_shadow(b)) for b in mine] == [(champion.version, False), (newer.version, True)]


def test_a_shadow_for_one_asset_challenges_the_wider_champion_without_hiding_it(database_url, register, tmp_path):
    asset, sku = f"reg-{uuid.uuid4().hex[:6]}", f"sku-{uuid.uuid4().hex[:6]}"
    wide = register(Scope(sku=sku), seed=5)  # the champion for every asset making this SKU
    shadow = register(Scope(asset, sku), shadow=True, seed=6)
    cache = ModelCache(database_url=database_url, modalities=("spc",), cache_dir=tmp_path / "cache")
    cache.refresh(force=True)
    mine = [(b.version, is_shadow(b)) for b in cache.models_for("spc", asset, sku) if b.scope.sku == sku]
    assert mine == [(wide.version, False), (shadow.version, True)]
    other = [(b.version, is_shadow(b)) for b in cache.models_for("spc", "another-asset", sku) if b.scope.sku == sku]
    assert other == [(wide.version, False)]


def test_promotion_as_the_registrar_moves_the_champion_and_is_recorded(database_url, register, registrar):
    asset = f"reg-{uuid.uuid4().hex[:6]}"
    champion = register(asset, seed=1)
    shadow = register(asset, shadow=True, seed=2)
    with psycopg.connect(registrar) as conn:
        with pytest.raises(ConfigError, match="not a shadow"):
            promote(conn, champion.model_id, champion.version, actor="ana")
        with pytest.raises(ConfigError, match="no version"):
            promote(conn, champion.model_id, "nope", actor="ana")
        with pytest.raises(ConfigError, match="--actor"):
            promote(conn, shadow.model_id, shadow.version, actor=" ")
        done = promote(conn, shadow.model_id, shadow.version, actor="ana", note="half the false alarms")
    assert (done.version, done.previous, done.actor) == (shadow.version, champion.version, "ana")
    assert _served(database_url, champion.model_id) == [(shadow.version, False)]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT previous, actor, note FROM model_promotions WHERE model_id = %s",
                            (shadow.model_id,)).fetchall() == [(champion.version, "ana", "half the false alarms")]
        roles = {v.version: v.role for v in list_versions(conn, asset=asset)}
        # Promoting it again is refused: it is the champion now, not a shadow.
        with pytest.raises(ConfigError, match="not a shadow"):
            promote(conn, shadow.model_id, shadow.version, actor="ana")
    assert roles == {champion.version: "inactive", shadow.version: "champion"}


def test_an_inactive_shadow_cannot_be_promoted(database_url, register):
    asset = f"reg-{uuid.uuid4().hex[:6]}"
    champion = register(asset, seed=1)
    shadow = register(asset, shadow=True, seed=2)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE model_versions SET active = false WHERE model_id = %s AND version = %s",
                     (shadow.model_id, shadow.version))
        conn.commit()
        with pytest.raises(ConfigError, match="not active"):
            promote(conn, shadow.model_id, shadow.version, actor="ana")
    assert _served(database_url, champion.model_id) == [(champion.version, False)]


def test_models_list_and_promote_commands(database_url, register, tmp_path):
    asset = f"cli-{uuid.uuid4().hex[:6]}"
    champion = register(asset, seed=1)
    shadow = register(asset, shadow=True, seed=2)
    env = {"LINEWATCH_DATABASE_URL": database_url, "LINEWATCH_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--asset", asset, "--modality", "spc", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = {r["version"]: r for r in json.loads(listed.stdout)}
    assert {v: r["role"] for v, r in rows.items()} == {champion.version: "champion", shadow.version: "shadow"}
    assert rows[shadow.version]["threshold"] > 0 and rows[shadow.version]["shadow"] is True

    refused = runner.invoke(app, ["models", "promote", champion.model_id, champion.version, "--actor", "ana"],
                            env=env)
    assert refused.exit_code != 0 and "not a shadow" in str(refused.exception)
    done = runner.invoke(app, ["models", "promote", shadow.model_id, shadow.version, "--actor", "ana",
                               "--note", "better"], env=env)
    assert done.exit_code == 0, done.output
    assert _served(database_url, champion.model_id) == [(shadow.version, False)]
    table = runner.invoke(app, ["models", "list", "--asset", asset], env=env)
    assert table.exit_code == 0 and "champion" in table.stdout and "inactive" in table.stdout
