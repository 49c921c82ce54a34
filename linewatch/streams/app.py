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
    """
    (settings.data_dir / "faust").parent.mkdir(parents=True, exist_ok=True)
    return {
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
    """The worker's app with every agent registered."""
    from linewatch.streams.frames_agent import register_frames_agent
    from linewatch.streams.signals_agent import register_signals_agent
    from linewatch.streams.spc_agent import register_spc_agent

    app = faust.App(settings.app_id, **faust_settings(settings, bootstrap))
    register_spc_agent(app, settings=settings, bootstrap=bootstrap, database_url=database_url)
    register_signals_agent(app, settings=settings, bootstrap=bootstrap, database_url=database_url)
    register_frames_agent(app, settings=settings, bootstrap=bootstrap, database_url=database_url)
    return app
