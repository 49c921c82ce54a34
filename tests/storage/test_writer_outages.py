"""A hung or stopped database is an outage the writer reports in bounded time, and a returning one is noticed.

Each test has its own embedded PostgreSQL, since it freezes or stops it.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from datetime import UTC, datetime

import psutil
import pytest

from linewatch.embedded.postgres import EmbeddedPostgres
from linewatch.errors import InfrastructureError
from linewatch.schemas.rows import DeadLetterRow
from linewatch.storage.migrations import migrate
from linewatch.storage.writer import BatchWriter, retry_schedule

pytestmark = pytest.mark.integration


def _row(offset: int) -> dict[type, list[tuple]]:
    return {DeadLetterRow: [(datetime.now(UTC), "outage-test", 0, offset, None, "r", "DataError",
                             uuid.uuid4().bytes)]}


def _signal_all(pg: EmbeddedPostgres, sig: int) -> None:
    """The postmaster and every backend: stopping the postmaster alone leaves the backends answering."""
    assert pg.proc is not None
    root = psutil.Process(pg.proc.pid)
    for proc in [root, *root.children(recursive=True)]:
        proc.send_signal(sig)


@pytest.fixture
def pg(tmp_path):
    server = EmbeddedPostgres(data_dir=tmp_path / "db", fsync=False).start()
    migrate(server.url)
    yield server
    if server.proc is not None:
        _signal_all(server, signal.SIGCONT)
        server.stop()


def test_a_hung_database_fails_the_write_within_the_window(pg):
    writer = BatchWriter(pg.url, retry_delays=retry_schedule(3.0), attempt_timeout_s=2.0)
    writer.write(_row(0))
    _signal_all(pg, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        with pytest.raises(InfrastructureError, match="database unavailable"):
            writer.write(_row(1))
    finally:
        _signal_all(pg, signal.SIGCONT)
    elapsed = time.monotonic() - t0
    # 2 s for the hung attempt, then retries for 3 s, each connect bounded by libpq's 2 s minimum.
    assert elapsed < 3.0 + 2.0 + 2.0 + 2.0, elapsed
    assert writer.state == "down"
    writer.write(_row(2))  # the database answers again: the next batch is written
    assert writer.state == "ok"


def test_a_returning_database_is_noticed_within_a_second(pg):
    writer = BatchWriter(pg.url, retry_delays=retry_schedule(30.0), attempt_timeout_s=5.0)
    writer.write(_row(0))
    port = pg.port
    pg.stop()
    done: dict[str, float] = {}

    def write() -> None:
        writer.write(_row(1))
        done["at"] = time.monotonic()

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(4.0)  # several failed attempts while the server is down
    assert "at" not in done and writer.state == "retrying"
    pg.port = port
    pg.start()
    back = time.monotonic()
    thread.join(timeout=20)
    assert "at" in done, "the write never went through after the database came back"
    assert done["at"] - back < 1.5, done["at"] - back
