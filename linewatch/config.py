"""One frozen settings object, read once at the entry point and passed down.

Defaults describe the embedded mode: a local Kafka-protocol broker and a local PostgreSQL
started by linewatch itself under ``data_dir``. Setting ``LINEWATCH_BROKER_URL`` or
``LINEWATCH_DATABASE_URL`` switches the corresponding embedded service off, which is how the
same worker runs against Apache Kafka and TimescaleDB in production. Values come from, in
order of precedence: explicit arguments, ``LINEWATCH_*`` environment variables, the TOML file
named by ``LINEWATCH_CONFIG`` (or ``--config``), then the defaults below.

>>> s = Settings(broker_url="kafka-1:9092", database_url="postgresql://u:secret@db/lw")
>>> s.embedded_broker, s.embedded_database
(False, False)
>>> "secret" in str(s.masked()["database_url"])
False
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from linewatch.errors import ConfigError

CONFIG_FILE_ENV = "LINEWATCH_CONFIG"
#: The ``--config`` file of the current load_settings() call (wins over the environment variable).
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("linewatch_config_file", default=None)

#: Faust joins a consumer group in roughly one session timeout on the embedded broker; the
#: client default (10 s, plus a 30 s rebalance wait) makes a worker look dead for half a minute.
DEFAULT_SESSION_TIMEOUT_S = 6.0
#: Faust's per-message overhead is the wall (~5-10k msgs/s): agents work on batches of this size.
DEFAULT_BATCH_SIZE = 2000
#: A partial batch is flushed after this long, so latency stays bounded on a quiet line.
DEFAULT_BATCH_WITHIN_S = 0.25


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the optional TOML file; a missing file named explicitly is an error, not a silent default."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            if not path.exists():
                raise ConfigError(f"config file {path} does not exist; fix {CONFIG_FILE_ENV} or --config")
            try:
                self._data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
            unknown = set(self._data) - set(settings_cls.model_fields)
            if unknown:
                raise ConfigError(
                    f"config file {path} has unknown keys {sorted(unknown)}; "
                    "`linewatch config` lists the valid ones"
                )

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    """Everything a worker, the CLI and the demo need to know about their surroundings."""

    model_config = SettingsConfigDict(env_prefix="LINEWATCH_", frozen=True, extra="forbid")

    broker_url: str | None = Field(
        default=None, description="Kafka bootstrap servers (host:port,...); unset = start the embedded broker"
    )
    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL/TimescaleDB URL; unset = start the embedded PostgreSQL"
    )
    data_dir: Path = Field(
        default=Path(".linewatch"), description="where embedded services, models and logs live"
    )
    app_id: str = Field(default="linewatch", description="Faust app id = Kafka consumer group")
    topic_partitions: int = Field(default=4, ge=1, description="partitions for topics linewatch creates")
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=100_000)
    batch_within_s: float = Field(default=DEFAULT_BATCH_WITHIN_S, gt=0)
    session_timeout_s: float = Field(default=DEFAULT_SESSION_TIMEOUT_S, gt=0)
    target_far: float = Field(default=1e-3, gt=0, lt=1, description="false alarms per normal event")
    model_refresh_s: float = Field(default=10.0, gt=0, description="how often workers look for new models")
    db_retry_total_s: float = Field(
        default=30.0, ge=0, description="how long a worker retries an unavailable database before it exits"
    )
    isolate_scoring: bool = Field(
        default=True, description="score SPC batches in a child process (no GIL shared with Faust's loop)"
    )
    log_level: str = Field(default="info")

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warn", "error", "crit"}:
            raise ValueError("log_level must be one of debug, info, warn, error, crit")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get() or os.environ.get(CONFIG_FILE_ENV)
        return (init_settings, env_settings, _TomlFileSource(settings_cls, Path(path) if path else None))

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    def masked(self) -> dict[str, Any]:
        """The effective configuration with passwords replaced, for printing and logs."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value())
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["embedded_broker"] = self.embedded_broker
        out["embedded_database"] = self.embedded_database
        return out


def mask_url(url: str) -> str:
    """Hide the password of a URL, keeping the rest readable."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings once at the entry point; ``config_file`` wins over ``LINEWATCH_CONFIG``."""
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"invalid linewatch configuration:\n{e}") from e
    finally:
        _CONFIG_FILE.reset(token)
