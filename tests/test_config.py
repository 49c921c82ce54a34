from __future__ import annotations

from pathlib import Path

import pytest

from linewatch.config import Settings, load_settings, mask_url
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
