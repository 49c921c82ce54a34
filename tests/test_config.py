from __future__ import annotations

import os
from pathlib import Path

import pytest

from linewatch.config import Settings, load_settings, mask_dsn, mask_url
from linewatch.errors import ConfigError


def test_defaults_are_embedded(monkeypatch):
    for k in ("LINEWATCH_BROKER_URL", "LINEWATCH_DATABASE_URL", "LINEWATCH_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert s.embedded_broker and s.embedded_database and s.data_dir == Path(".linewatch")


def test_environment_switches_services_off(monkeypatch):
    monkeypatch.setenv("LINEWATCH_BROKER_URL", "kafka:9092")
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", "postgresql://lw:hunter2@db:5432/lw")
    monkeypatch.setenv("LINEWATCH_BATCH_SIZE", "500")
    s = Settings()
    assert not s.embedded_broker and not s.embedded_database and s.batch_size == 500
    assert s.masked()["database_url"] == "postgresql://lw:***@db:5432/lw"
    assert "hunter2" not in repr(s)


def test_toml_file_and_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("LINEWATCH_BATCH_SIZE", raising=False)
    f = tmp_path / "lw.toml"
    f.write_text('batch_size = 123\ntarget_far = 0.01\napp_id = "from-file"\n')
    monkeypatch.setenv("LINEWATCH_APP_ID", "from-env")
    s = load_settings(f)
    assert s.batch_size == 123 and s.target_far == 0.01 and s.app_id == "from-env"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("nonsense = 1\n", "unknown keys"), ("batch_size = [\n", "not valid TOML")],
)
def test_bad_config_file_is_a_clear_error(tmp_path, text, fragment):
    f = tmp_path / "lw.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(f)


def test_missing_config_file_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="target_far"):
        load_settings(None, target_far=2.0)


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValueError):
        s.batch_size = 1  # type: ignore[misc]


def test_mask_url_without_password_is_unchanged():
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://lw:hunter2@db:5432/lw", "postgresql://lw:***@db:5432/lw"),
        ("postgres://lw:hunter%402@db/lw", "postgres://lw:***@db/lw"),  # percent-encoded, hidden as written
        ("postgresql://lw:hunter2@db1:5432,db2:5432/lw?target_session_attrs=read-write",
         "postgresql://lw:***@db1:5432,db2:5432/lw?target_session_attrs=read-write"),
        ("postgresql://lw@db/lw?password=hunter2", "postgresql://lw@db/lw?password=***"),
        ("postgresql://lw@db/lw?sslmode=require&password=hunter2&application_name=x",
         "postgresql://lw@db/lw?sslmode=require&password=***&application_name=x"),
        ("postgresql://lw@db/lw?sslpassword=k3y#frag", "postgresql://lw@db/lw?sslpassword=***#frag"),
        ("host=db password=hunter2 user=lw", "host=db password=*** user=lw"),
        ("password=hunter2", "password=***"),
        ("host=db password = 'two words' dbname=lw", "host=db password = *** dbname=lw"),
        (r"host=db password='it\'s' dbname=lw", "host=db password=*** dbname=lw"),
        ("host=db password='unterminated dbname=lw", "host=db password=***"),
        ("host=db sslpassword=k3y user=lw", "host=db sslpassword=*** user=lw"),
        ("host=db user=lw", "host=db user=lw"),
        ("host=db user=password_admin", "host=db user=password_admin"),
    ],
)
def test_every_dsn_form_hides_its_password(dsn, masked):
    assert mask_dsn(dsn) == masked
    assert mask_url(dsn) == masked


def test_linewatch_config_prints_no_secret(monkeypatch):
    from typer.testing import CliRunner

    from linewatch.cli import app

    for k in [k for k in os.environ if k.startswith("LINEWATCH_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("LINEWATCH_BROKER_URL", "kafka:9093")
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", "host=db user=lw password='hunter2 hunter2'")
    monkeypatch.setenv("LINEWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("LINEWATCH_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("LINEWATCH_KAFKA_SASL_USERNAME", "lw")
    monkeypatch.setenv("LINEWATCH_KAFKA_SASL_PASSWORD", "swordfish")
    result = CliRunner().invoke(app, ["config"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "swordfish" not in result.output
    assert "kafka_sasl_password" in result.output and "***" in result.output


def test_serve_api_keys_are_masked_and_the_spool_defaults_under_the_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path, serve_api_keys="k3y-one,k3y-two")
    assert s.masked()["serve_api_keys"] == "***" and "k3y" not in repr(s)
    assert s.serve_spool_path == tmp_path / "serve-spool"
    assert Settings(serve_spool_dir=tmp_path / "q").serve_spool_path == tmp_path / "q"
