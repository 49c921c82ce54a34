"""The dispositions agent: dispositions other systems publish land in the table once; bad ones are dead-lettered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from linewatch.kafka import Publisher
from linewatch.schemas.codec import encode
from linewatch.schemas.messages import Disposition
from linewatch.schemas.topics import DISPOSITIONS
from linewatch.streams.dispositions_agent import DispositionsRuntime
from linewatch.streams.messages import RawMessage
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

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


def test_dispositions_published_by_another_system_land_through_the_worker(worker, bootstrap, database_url):
    event = uuid.uuid4()
    d = Disposition(event_id=event, verdict="true_defect", operator="quality-app", defect_class="crack")
    publisher = Publisher(bootstrap)
    publisher.publish(DISPOSITIONS.name, [(b"press-2", encode(d)), (b"press-2", b"not json")])
    publisher.flush()
    assert wait_for("SELECT count(*) FROM dispositions WHERE event_id = %s AND defect_class = 'crack'", (event,), 1,
                    database_url) == 1
    assert wait_for("SELECT count(*) FROM deadletters WHERE source_topic = %s AND payload = %s",
                    (DISPOSITIONS.name, b"not json"), 1, database_url) >= 1
