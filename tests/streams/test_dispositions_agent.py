"""The dispositions agent: dispositions other systems publish land in the table once; bad ones are dead-lettered."""

from __future__ import annotations

import inspect
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from linewatch.embedded.process import spawn, stop, tail
from linewatch.kafka import Publisher
from linewatch.schemas.codec import encode
from linewatch.schemas.messages import Disposition
from linewatch.schemas.topics import DISPOSITIONS
from linewatch.streams.dispositions_agent import DISPOSITIONS_READY_MESSAGE, DispositionsRuntime
from linewatch.streams.messages import RawMessage
from tests.conftest import WORKER_READY_TIMEOUT_S, wait_for

pytestmark = pytest.mark.integration

#: Until ``build_app`` registers the dispositions agent, a stand-in worker runs the real
#: ``linewatch worker`` command with an app holding only that agent.
_STANDIN_WORKER = """
import sys
import faust
import linewatch.streams.worker as worker_module
from linewatch.streams.app import faust_settings
from linewatch.streams.dispositions_agent import register_dispositions_agent

def build_app(settings, bootstrap, database_url):
    app = faust.App(settings.app_id, **faust_settings(settings, bootstrap))
    register_dispositions_agent(app, settings=settings, bootstrap=bootstrap, database_url=database_url)
    return app

worker_module.build_app = build_app
from linewatch.cli import main
sys.argv = ["linewatch", "worker", "--log-level", "warn"]
main()
"""


def _count(database_url: str, query: str, params: tuple) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_the_runtime_stores_each_disposition_once_and_dead_letters_bad_ones(settings, bootstrap, database_url):
    runtime = DispositionsRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url)
    alert = uuid.uuid4()
    good = Disposition(alert_id=alert, verdict="false_alarm", operator="mes-7", defect_class=None, note="from MES",
                       ts=datetime(2026, 2, 1, 8, 0, tzinfo=UTC))
    topic = f"dispositions-test-{uuid.uuid4().hex[:6]}"
    messages = [RawMessage(topic, 0, 0, b"press-1", encode(good)),
                RawMessage(topic, 0, 1, b"press-1", b'{"verdict": "maybe", "operator": "x"}'),
                RawMessage(topic, 0, 2, b"press-1", encode(good))]  # the same disposition twice in one batch
    result = runtime.process(messages)
    assert result.counts["dispositions"] == 2 and len(result.deadletters) == 1
    assert "Disposition failed validation" in result.deadletters.items[0].reason
    runtime.process([RawMessage(topic, 0, 3, b"press-1", encode(good))])  # redelivered later
    assert _count(database_url, "SELECT count(*) FROM dispositions WHERE alert_id = %s", (alert,)) == 1
    assert _count(database_url, "SELECT count(*) FROM deadletters WHERE source_topic = %s AND \"offset\" = 1",
                  (topic,)) == 1
    assert runtime.health()["modality"] == "dispositions"


def _build_app_has_dispositions() -> bool:
    from linewatch.streams.app import build_app

    return "register_dispositions_agent" in inspect.getsource(build_app)


@pytest.fixture(scope="module")
def dispositions_worker(request, settings, tmp_path_factory):
    """The session worker once build_app registers the dispositions agent; a stand-in worker until then."""
    if _build_app_has_dispositions():
        yield request.getfixturevalue("worker")
        return
    data_dir = tmp_path_factory.mktemp("dispositions-worker")
    env = dict(os.environ)
    env.update({
        "LINEWATCH_BROKER_URL": settings.broker_url or "",
        "LINEWATCH_DATABASE_URL": settings.database_url.get_secret_value() if settings.database_url else "",
        "LINEWATCH_DATA_DIR": str(data_dir),
        "LINEWATCH_APP_ID": f"linewatch-dispositions-test-{uuid.uuid4().hex[:8]}",
        "LINEWATCH_BATCH_WITHIN_S": "0.1",
    })
    log_path = data_dir / "worker.log"
    proc = spawn([sys.executable, "-c", _STANDIN_WORKER], log_path=log_path, env=env)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while DISPOSITIONS_READY_MESSAGE not in (log_path.read_text(errors="replace") if log_path.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"dispositions worker did not become ready:\n{tail(log_path, 40)}")
        time.sleep(0.2)
    yield proc
    stop(proc, sig=signal.SIGTERM, timeout=30)


def test_dispositions_published_by_another_system_land_through_the_worker(dispositions_worker, bootstrap,
                                                                           database_url):
    event = uuid.uuid4()
    d = Disposition(event_id=event, verdict="true_defect", operator="quality-app", defect_class="crack")
    publisher = Publisher(bootstrap)
    publisher.publish(DISPOSITIONS.name, [(b"press-2", encode(d)), (b"press-2", b"not json")])
    publisher.flush()
    assert wait_for("SELECT count(*) FROM dispositions WHERE event_id = %s AND defect_class = 'crack'", (event,), 1,
                    database_url) == 1
    assert wait_for("SELECT count(*) FROM deadletters WHERE source_topic = %s AND payload = %s",
                    (DISPOSITIONS.name, b"not json"), 1, database_url) >= 1
