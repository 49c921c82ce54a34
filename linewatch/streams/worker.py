"""Run the Faust worker against a broker and a database (embedded ones are the demo's business)."""

from __future__ import annotations

from faust.worker import Worker

from linewatch.config import Settings
from linewatch.kafka import ensure_topics
from linewatch.storage.migrations import migrate
from linewatch.streams.app import build_app


def run_worker(settings: Settings, *, bootstrap: str, database_url: str, loglevel: str | None = None) -> None:
    """Prepare topics and schema (both idempotent), then run until SIGINT/SIGTERM."""
    ensure_topics(bootstrap, partitions=settings.topic_partitions, security=settings.kafka_client_config())
    migrate(database_url)
    app = build_app(settings, bootstrap, database_url)
    worker = Worker(app, loglevel=loglevel or settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
