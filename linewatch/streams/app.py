"""The Faust app: configuration tuned for batches and fast group joins, and little else.

Agents are registered by :func:`build_app` so the app is created from the settings read at
the entry point, not at import time. :func:`new_app` is the one place an app is made, so the
worker and the benchmarks' bare Faust app get the same consumer.

The consumer's fetch wait: Faust builds aiokafka's consumer with ``fetch_max_wait_ms=1500``
hard-coded (``faust/transport/drivers/aiokafka.py``, ``_create_worker_consumer``) and has no
setting for it. A broker that holds an empty fetch for the whole interval (the embedded broker
does; measured, docs/benchmarks.md) then adds up to 1.5 s to an event's latency. Faust's
transports are pluggable classes (``faust.transport.drivers``) and an app's transport is a
public property, so :class:`KafkaTransport` (aiokafka's transport with the worker's consumer
thread swapped) is set on each app and its consumer is built with ``Settings.fetch_max_wait_ms``.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from linewatch.config import Settings
from linewatch.errors import ConfigError

#: Heartbeats well inside the session timeout so a busy batch never looks like a dead member.
HEARTBEAT_INTERVAL_S = 1.0
#: Enough for a rebalance on a handful of workers; Faust's 60 s default stalls tests and demos.
REBALANCE_TIMEOUT_S = 20.0


def faust_settings(settings: Settings, bootstrap: str) -> dict[str, object]:
    """Faust/aiokafka options; exposed so the benchmarks build their bare app the same way.

    Creates the data directory's parent, since Faust creates only the last path component.
    The broker's TLS and SASL settings become ``broker_credentials`` (aiokafka's own client
    configuration), from the same settings librdkafka's clients get, so the Faust consumer is
    never the one client left on plaintext.
    """
    (settings.data_dir / "faust").parent.mkdir(parents=True, exist_ok=True)
    credentials: faust.types.auth.CredentialsT | None = None
    protocol = settings.kafka_security_protocol
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism, ssl_context=settings.kafka_ssl_context())
    elif protocol == "SSL":
        credentials = faust.SSLCredentials(settings.kafka_ssl_context())
    extra: dict[str, object] = {} if credentials is None else {"broker_credentials": credentials}
    return {
        **extra,
        "broker": f"kafka://{bootstrap}",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_S,
        "broker_rebalance_timeout": REBALANCE_TIMEOUT_S,
        "broker_max_poll_records": settings.batch_size,
        "stream_buffer_maxsize": max(4096, 2 * settings.batch_size),
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": 1,
        "topic_allow_declare": False,  # linewatch creates its topics itself (ensure_topics)
        "key_serializer": "raw",
        "value_serializer": "raw",
        "web_enabled": False,
        "datadir": str(settings.data_dir / "faust"),
        "producer_linger": 0.005,
        "stream_wait_empty": False,
    }


class _FetchWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """aiokafka's consumer thread, building its worker consumer with the transport's fetch wait."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes its fixed 1500 ms to the constructor; aiokafka reads this attribute only when
        # start() builds the fetcher, which has not happened yet (tests/streams/test_fetch_wait.py
        # reads the started fetcher's value back, so an aiokafka that renames it fails there).
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise ConfigError(f"aiokafka {aiokafka.__version__} has no fetch wait attribute to set; pin the "
                              "aiokafka version in pyproject.toml or update linewatch.streams.app")
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class _FetchWaitConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)


class KafkaTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    Consumer = _FetchWaitConsumer

    def __init__(self, url: Any, app: faust.App, *, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(url, app, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms


def new_app(settings: Settings, bootstrap: str, **options: Any) -> faust.App:
    """A Faust app with :func:`faust_settings` (``options`` added or overriding) and :class:`KafkaTransport`.

    The transport is set before any topic or agent is declared, since declaring one creates the
    app's default transport on first use.
    """
    app = faust.App(settings.app_id, **{**faust_settings(settings, bootstrap), **options})
    app.transport = KafkaTransport(app.conf.broker_consumer, app, fetch_max_wait_ms=settings.fetch_max_wait_ms)
    return app


def build_app(settings: Settings, bootstrap: str, database_url: str) -> faust.App:
    """The worker's app with every agent registered, and its ``GET /health`` (:mod:`linewatch.streams.health`).

    The web server is switched on here, not in :func:`faust_settings`, so the benchmarks' bare
    Faust app (built from the same options) keeps running without one.
    """
    from linewatch.schemas.topics import DISPOSITIONS, FRAMES, SCORES, SIGNALS, SPC
    from linewatch.streams.dispositions_agent import register_dispositions_agent
    from linewatch.streams.frames_agent import register_frames_agent
    from linewatch.streams.fusion_agent import register_fusion_agent
    from linewatch.streams.health import health_port, health_url, register_health_view, web_options
    from linewatch.streams.signals_agent import register_signals_agent
    from linewatch.streams.spc_agent import register_spc_agent

    port = health_port(settings.health_host, settings.health_port)
    app = new_app(settings, bootstrap, **web_options(settings.health_host, port))
    agents = {
        "spc": (SPC.name, register_spc_agent(app, settings=settings, bootstrap=bootstrap, database_url=database_url)),
        "signals": (SIGNALS.name, register_signals_agent(app, settings=settings, bootstrap=bootstrap,
                                                         database_url=database_url)),
        "frames": (FRAMES.name, register_frames_agent(app, settings=settings, bootstrap=bootstrap,
                                                      database_url=database_url)),
        "fusion": (SCORES.name, register_fusion_agent(app, settings=settings, bootstrap=bootstrap,
                                                      database_url=database_url)),
        "dispositions": (DISPOSITIONS.name, register_dispositions_agent(app, settings=settings, bootstrap=bootstrap,
                                                                        database_url=database_url)),
    }
    register_health_view(app, agents, bootstrap=bootstrap, group_id=settings.app_id,
                         url=health_url(settings.health_host, port), security=settings.kafka_client_config())
    return app
