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

Kafka security (TLS, SASL PLAIN or SCRAM) is set with the ``kafka_*`` fields and reaches every
client from one place: :meth:`Settings.kafka_client_config` for confluent-kafka (librdkafka)
and :meth:`Settings.kafka_ssl_context` for Faust (aiokafka). The embedded broker speaks plain
Kafka on loopback, so these settings need ``broker_url``.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from linewatch.errors import ConfigError

if TYPE_CHECKING:
    from linewatch.fusion.engine import FusionConfig

CONFIG_FILE_ENV = "LINEWATCH_CONFIG"
#: The ``--config`` file of the current load_settings() call (wins over the environment variable).
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("linewatch_config_file", default=None)

#: Faust joins a consumer group in roughly one session timeout on the embedded broker; the
#: client default (10 s, plus a 30 s rebalance wait) makes a worker look dead for half a minute.
DEFAULT_SESSION_TIMEOUT_S = 6.0
#: Faust's per-message overhead is the wall (~5-10k msgs/s): agents work on batches of this size.
DEFAULT_BATCH_SIZE = 2000
#: A partial batch is flushed after this long, so latency stays bounded on a quiet line. Measured
#: (docs/benchmarks.md, `linewatch bench latency-sweep`, SPC at 300/s): the lowest median in three of
#: four rounds (0.18-0.29 s); 0.25 s and 0.05 s never beat it (a batch costs two commits).
DEFAULT_BATCH_WITHIN_S = 0.1
#: How long the broker may hold a consumer's fetch for data to arrive. Faust fixes aiokafka's at
#: 1500 ms; a broker that waits out the whole interval when a fetch finds nothing new (the embedded
#: one does) adds up to that much to every event's latency. Measured: see docs/benchmarks.md.
DEFAULT_FETCH_MAX_WAIT_MS = 100

#: Kafka's names for how a client talks to the broker (librdkafka ``security.protocol``).
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
#: The SASL mechanisms linewatch supports: username and password, plain or salted challenge.
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: Settings that hold a credential but are not URLs: shown as ``***`` when set.
_SECRETS = ("kafka_sasl_password", "kafka_ssl_key_password", "serve_api_keys")
#: Faust's own default web port: one worker per host (or container) answers ``/health`` here.
DEFAULT_HEALTH_PORT = 6066
#: ``linewatch serve``'s port: the usual one for an HTTP service in front of a model.
DEFAULT_SERVE_PORT = 8080
#: A request body larger than this is refused before it is read: a 16-bit 4k frame as PNG is ~30 MB,
#: a JPEG of it a few MB; an SPC request of this size holds tens of thousands of records.
DEFAULT_SERVE_MAX_REQUEST_BYTES = 32 * 2**20
#: Images larger than this a side are refused from their header, before any pixel is decoded.
DEFAULT_SERVE_MAX_IMAGE_SIDE = 8192


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
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)"
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_*"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user; required with SASL_*")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password; required with SASL_*")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA(s) that signed the broker's certificate; unset = system CAs"
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="client certificate (PEM) for mutual TLS; goes with kafka_ssl_keyfile"
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="private key (PEM) of kafka_ssl_certfile")
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="password of an encrypted kafka_ssl_keyfile"
    )
    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL/TimescaleDB URL; unset = start the embedded PostgreSQL"
    )
    data_dir: Path = Field(
        default=Path(".linewatch"), description="where embedded services, models and logs live"
    )
    app_id: str = Field(default="linewatch", description="Faust app id = Kafka consumer group")
    topic_partitions: int = Field(default=4, ge=1, description="partitions for topics linewatch creates")
    worker_processes: int = Field(
        default=0, ge=0, le=1024,
        description="Faust worker processes `linewatch worker` runs in one consumer group (each with its own "
        "scoring child and /health port health_port + i); 0 = one per two CPU cores this process may use "
        "(one worker keeps about two busy)",
    )
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=100_000)
    batch_within_s: float = Field(default=DEFAULT_BATCH_WITHIN_S, gt=0)
    fetch_max_wait_ms: int = Field(
        default=DEFAULT_FETCH_MAX_WAIT_MS, ge=1, le=60_000,
        description="longest the broker holds a worker's fetch waiting for new messages (latency on a quiet "
        "topic vs fetch requests per second)")
    session_timeout_s: float = Field(default=DEFAULT_SESSION_TIMEOUT_S, gt=0)
    target_far: float = Field(default=1e-3, gt=0, lt=1, description="false alarms per normal event")
    model_refresh_s: float = Field(default=10.0, gt=0, description="how often workers look for new models")
    asset_speed_hz: dict[str, float] = Field(
        default_factory=dict,
        description="nominal shaft speed (Hz) per asset, e.g. {\"press-7\": 24.75}: vibration windows of these "
        "assets get bearing envelope features when the window carries no speed_hz of its own",
    )
    bearing_geometry: tuple[int, float, float, float] | None = Field(
        default=None,
        description="bearing for the envelope features: [elements, ball diameter, pitch diameter, contact angle "
        "deg]; unset = a 6205 ball bearing [9, 7.94, 39.04, 0]",
    )
    db_retry_total_s: float = Field(
        default=30.0, ge=0, description="how long a worker retries an unavailable database before it exits"
    )
    event_time_max_future_s: float = Field(
        default=86_400.0, gt=0, description="events stamped further ahead of the worker's clock are dead-lettered"
    )
    event_time_max_age_s: float = Field(
        default=10 * 365.25 * 86_400.0, gt=0,
        description="events older than this are dead-lettered (raise it to replay older history)",
    )
    isolate_scoring: bool = Field(
        default=True, description="score SPC and signals batches in a child process (no GIL shared with Faust's loop)"
    )
    fusion_threshold: float = Field(
        default=3.5, gt=0, description="fused calibrated score (-log10 fused tail probability) a unit counts from")
    fusion_dependence: float = Field(
        default=0.1, ge=0, lt=1, description="correlation assumed between modalities' normal scores (Brown)")
    fusion_open_k: int = Field(default=3, ge=1, description="anomalous units of a stream's last n that open an alert")
    fusion_open_n: int = Field(default=5, ge=1, description="units the open rule looks back over")
    fusion_close_quiet: int = Field(default=5, ge=1, description="quiet units on every stream that close an alert")
    fusion_min_open_s: float = Field(default=0.0, ge=0, description="an alert stays open at least this long")
    fusion_cooldown_s: float = Field(
        default=900.0, ge=0, description="evidence this soon after a close re-opens the same alert")
    fusion_update_every_s: float = Field(
        default=600.0, gt=0, description="event-time seconds between updates of an alert that stays anomalous")
    fusion_lateness_s: float = Field(
        default=300.0, gt=0, description="event-time seconds a part waits for its slower modalities")
    fusion_context_s: float = Field(
        default=60.0, gt=0, description="a part's signals context is at most this old at the part's time")
    fusion_critical_score: float = Field(default=6.0, gt=0, description="fused score that makes an alert critical")
    fusion_suppress_states: tuple[str, ...] = Field(
        default=("idle", "changeover", "setup", "maintenance"),
        description="machine states in which units do not count toward alerts")
    fusion_resume_grace_s: float = Field(
        default=30.0, ge=0, description="event-time seconds after leaving such a state before units count again")
    log_level: str = Field(default="info")
    health_host: str = Field(
        default="127.0.0.1",
        description="address the worker's /health endpoint binds to (0.0.0.0 to let probes from other hosts in)",
    )
    health_port: int = Field(
        default=DEFAULT_HEALTH_PORT, ge=0, le=65535,
        description="port of the worker's /health endpoint; 0 = any free port (the worker logs the URL)",
    )

    serve_host: str = Field(
        default="127.0.0.1",
        description="address `linewatch serve` binds to; anything but loopback needs serve_api_keys",
    )
    serve_port: int = Field(default=DEFAULT_SERVE_PORT, ge=0, le=65535, description="port of `linewatch serve`")
    serve_api_keys: SecretStr | None = Field(
        default=None,
        description="API keys `linewatch serve` accepts (comma-separated, for rotation), as `Authorization: "
        "Bearer KEY` or `X-API-Key: KEY`; unset = no auth, and only a loopback bind is allowed",
    )
    serve_max_request_bytes: int = Field(
        default=DEFAULT_SERVE_MAX_REQUEST_BYTES, ge=1024, description="larger request bodies are answered 413")
    serve_max_image_side: int = Field(
        default=DEFAULT_SERVE_MAX_IMAGE_SIDE, ge=16, le=16384,
        description="frames wider or taller than this (read from the image header) are answered 413")
    serve_max_records: int = Field(
        default=10_000, ge=1, description="SPC records one /v1/inspect/spc request may carry")
    serve_request_timeout_s: float = Field(
        default=10.0, gt=0, description="a request not scored within this long is answered 504")
    serve_spool_dir: Path | None = Field(
        default=None, description="where inspected events wait while Kafka is down; unset = DATA_DIR/serve-spool")
    serve_spool_fsync: bool = Field(
        default=True, description="fsync each spool segment before answering (false: survives a crash of the "
        "service, not a power cut, and saves a disk flush per scoring batch)")
    serve_spool_max_bytes: int = Field(
        default=1024 * 2**20, ge=1024, description="spooled bytes at most; past it requests are answered 503")
    serve_spool_max_events: int = Field(
        default=1_000_000, ge=1, description="spooled events at most; past it requests are answered 503")

    def fusion_config(self) -> FusionConfig:
        """The fusion engine's configuration (the live agent and replay build it the same way)."""
        from linewatch.fusion.engine import FusionConfig
        from linewatch.fusion.lifecycle import LifecycleConfig

        return FusionConfig(
            threshold=self.fusion_threshold, dependence=self.fusion_dependence, lateness_s=self.fusion_lateness_s,
            context_s=self.fusion_context_s, suppress_states=frozenset(self.fusion_suppress_states),
            resume_grace_s=self.fusion_resume_grace_s,
            lifecycle=LifecycleConfig(open_k=self.fusion_open_k, open_n=self.fusion_open_n,
                                      close_quiet=self.fusion_close_quiet, min_open_s=self.fusion_min_open_s,
                                      cooldown_s=self.fusion_cooldown_s, update_every_s=self.fusion_update_every_s,
                                      critical_score=self.fusion_critical_score))

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warn", "error", "crit"}:
            raise ValueError("log_level must be one of debug, info, warn, error, crit")
        return v

    @field_validator("asset_speed_hz")
    @classmethod
    def _speeds(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {a: f for a, f in v.items() if not 0 < f <= 10_000}
        if bad:
            raise ValueError(f"asset_speed_hz values must be shaft speeds in (0, 10000] Hz; got {bad}")
        return v

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        """Kafka's own spelling is upper case; ``sasl_ssl`` in an environment variable means the same."""
        return v.strip().upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        """Refuse half-configured security: a setting that would be silently ignored is an open door."""
        protocol = self.kafka_security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
        if protocol != "PLAINTEXT" and self.broker_url is None:
            raise ValueError(
                f"kafka_security_protocol={protocol} needs an external broker: set broker_url "
                "(LINEWATCH_BROKER_URL); the embedded broker listens on loopback without TLS or SASL"
            )
        sasl_set = [n for n in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                    if getattr(self, n) is not None]
        if sasl:
            missing = [n for n in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                       if n not in sasl_set]
            if missing:
                raise ValueError(f"kafka_security_protocol={protocol} needs {', '.join(missing)} "
                                 "(mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        elif sasl_set:
            raise ValueError(f"{', '.join(sasl_set)} set but kafka_security_protocol={protocol}: "
                             "use SASL_SSL (or SASL_PLAINTEXT) so they are used")
        ssl_set = [n for n in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
                               "kafka_ssl_key_password") if getattr(self, n) is not None]
        if ssl_set and not tls:
            raise ValueError(f"{', '.join(ssl_set)} set but kafka_security_protocol={protocol}: "
                             "use SSL or SASL_SSL so they are used")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together (a client certificate "
                             "and its private key, for mutual TLS)")
        if self.kafka_ssl_key_password is not None and self.kafka_ssl_keyfile is None:
            raise ValueError("kafka_ssl_key_password set without kafka_ssl_keyfile")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

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

    @property
    def serve_spool_path(self) -> Path:
        """The spool of `linewatch serve`: :attr:`serve_spool_dir`, or ``data_dir/serve-spool``."""
        return self.serve_spool_dir if self.serve_spool_dir is not None else self.data_dir / "serve-spool"

    @property
    def model_cache_dir(self) -> Path:
        """Where workers unpack the verified model artifacts they fetch from the database (by sha256)."""
        return self.data_dir / "model-cache"

    def kafka_client_config(self) -> dict[str, str]:
        """The librdkafka properties for :attr:`kafka_security_protocol` and its credentials.

        The one translation every confluent-kafka client (producer, consumer, admin) gets, so no
        client can be left on plaintext by accident. Empty for ``PLAINTEXT``, which leaves a
        client's configuration exactly as it was before security settings existed.

        >>> Settings(broker_url="k:9093", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        ...          kafka_sasl_username="lw", kafka_sasl_password="pw").kafka_client_config()
        {'security.protocol': 'SASL_SSL', 'sasl.mechanisms': 'SCRAM-SHA-512', 'sasl.username': 'lw', \
'sasl.password': 'pw'}
        >>> Settings().kafka_client_config()
        {}
        """
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        config = {"security.protocol": protocol}
        if protocol.startswith("SASL_"):
            assert self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
            config.update({
                "sasl.mechanisms": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password.get_secret_value(),
            })
        for key, path in (("ssl.ca.location", self.kafka_ssl_cafile),
                          ("ssl.certificate.location", self.kafka_ssl_certfile),
                          ("ssl.key.location", self.kafka_ssl_keyfile)):
            if path is not None:
                config[key] = str(path)
        if self.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        return config

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for Faust's client (aiokafka), or None when the protocol has no TLS.

        Verifies the broker's certificate and host name against ``kafka_ssl_cafile`` (or the system
        CAs), and presents the client certificate when one is configured: what librdkafka does
        with the same settings.
        """
        if self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return None
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)
            if self.kafka_ssl_certfile is not None:
                # Always a password, even empty: without one OpenSSL would prompt on the terminal
                # for an encrypted key, and a worker would hang instead of failing.
                password = self.kafka_ssl_key_password.get_secret_value() if self.kafka_ssl_key_password else ""
                context.load_cert_chain(str(self.kafka_ssl_certfile),
                                        str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                                        password=password)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the Kafka TLS files (kafka_ssl_*): {e}") from e
        return context

    def kafka_env(self) -> dict[str, str]:
        """The Kafka security settings as ``LINEWATCH_*`` variables, for a child process (a worker).

        Why: settings may come from a ``--config`` file the child never sees; passing them in its
        environment gives it the same broker credentials as its parent. Empty for ``PLAINTEXT``.
        """
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if not name.startswith("kafka_") or value is None or self.kafka_security_protocol == "PLAINTEXT":
                continue
            env[f"LINEWATCH_{name.upper()}"] = (value.get_secret_value() if isinstance(value, SecretStr)
                                                else str(value))
        return env

    def masked(self) -> dict[str, Any]:
        """The effective configuration with passwords replaced, for printing and logs.

        URLs keep everything but their password (:func:`mask_dsn`); other secrets become ``***``.
        """
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***" if name in _SECRETS else mask_dsn(value.get_secret_value())
            elif isinstance(value, str) and name.endswith("_url"):
                value = mask_dsn(value)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["embedded_broker"] = self.embedded_broker
        out["embedded_database"] = self.embedded_database
        return out


_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: ``password=`` / ``sslpassword=`` in a URL's query string, up to the next parameter.
_QUERY_SECRET = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")
#: ``password=value`` in a libpq keyword/value string: spaces around ``=`` allowed, a value either
#: single-quoted (backslash escapes, possibly unterminated) or a run of non-blanks.
_KEYWORD_SECRET = re.compile(r"(?i)(?<!\S)((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*(?:'|$)|(?:\\.|[^\s\\])+)")


def mask_dsn(dsn: str) -> str:
    r"""Hide every password in a database connection string, keeping the rest readable.

    Why every form: libpq takes a password from a URL's user info, from a ``password`` (or
    ``sslpassword``) query parameter and from a keyword/value string, and each of them ends up
    in settings, logs and ``linewatch config``. Percent-encoded passwords are hidden as written.

    >>> mask_dsn("postgresql://lw:s3cr%40t@db:5432/lw?sslmode=require")
    'postgresql://lw:***@db:5432/lw?sslmode=require'
    >>> mask_dsn("postgresql://lw@db/lw?sslmode=require&password=s3cret")
    'postgresql://lw@db/lw?sslmode=require&password=***'
    >>> mask_dsn("postgresql:///lw?host=/run/pg&password=s3cret&user=lw")
    'postgresql:///lw?host=/run/pg&password=***&user=lw'
    >>> mask_dsn("host=db password=s3cret user=lw")
    'host=db password=*** user=lw'
    >>> mask_dsn(r"host=db password = 'it\'s secret' user=lw sslpassword=k3y")
    'host=db password = *** user=lw sslpassword=***'
    >>> mask_dsn("postgresql://lw@db/lw")
    'postgresql://lw@db/lw'
    """
    scheme = _URL_SCHEME.match(dsn)
    if scheme is None:
        return _KEYWORD_SECRET.sub(r"\1***", dsn)
    scheme_end = scheme.end()
    rest = dsn[scheme_end:]
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:***@{hosts}"
    return dsn[:scheme_end] + authority + _QUERY_SECRET.sub(r"\1***", tail)


def mask_url(url: str) -> str:
    """Older name of :func:`mask_dsn`, kept for its callers."""
    return mask_dsn(url)


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
