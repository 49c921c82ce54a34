"""The Faust app: configuration tuned for batches and fast group joins, and little else.

Agents are registered by :func:`build_app` so the app is created from the settings read at
the entry point, not at import time.
"""

from __future__ import annotations

import faust

from linewatch.config import Settings

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
    options = {**faust_settings(settings, bootstrap), **web_options(settings.health_host, port)}
    app = faust.App(settings.app_id, **options)
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
