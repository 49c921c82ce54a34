"""The ``champion_challenger`` view (sql/160) on alert and disposition rows whose figures are known."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

pytestmark = pytest.mark.integration

DAY = datetime(2026, 5, 1, tzinfo=UTC)


def _at(hh: int, mm: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hh, minutes=mm)


def _alert(conn: psycopg.Connection, asset: str, opened: datetime, *, shadow: bool, kind: str = "anomaly",
           closed_after: timedelta | None = timedelta(minutes=3)) -> uuid.UUID:
    """One alert's lifecycle rows: open, an update and (by default) a close; returns its id."""
    alert_id = uuid.uuid4()
    states = [("open", opened), ("update", opened + timedelta(minutes=1))]
    if closed_after is not None:
        states.append(("close", opened + closed_after))
    for state, ts in states:
        conn.execute(
            "INSERT INTO alerts (ts, alert_id, state, asset_id, severity, opened_at, score, modalities, shadow, kind) "
            "VALUES (%s, %s, %s, %s, 'warning', %s, 4.0, '{spc}', %s, %s)",
            (ts, alert_id, state, asset, opened, shadow, kind))
    return alert_id


def _dispose(conn: psycopg.Connection, alert_id: uuid.UUID, verdict: str, at: datetime) -> None:
    conn.execute("INSERT INTO dispositions (disposition_id, alert_id, verdict, operator, ts) "
                 "VALUES (%s, %s, %s, 'op', %s)", (uuid.uuid4(), alert_id, verdict, at))


def test_champion_challenger_figures(database_url):
    asset = f"cc-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        c1 = _alert(conn, asset, _at(10), shadow=False)  # true defect; the shadow saw it 2 min earlier
        _alert(conn, asset, _at(9, 58), shadow=True)
        c2 = _alert(conn, asset, _at(12), shadow=False)  # false alarm; the shadow's twin inherits the verdict
        _alert(conn, asset, _at(12, 5), shadow=True, closed_after=None)
        c3 = _alert(conn, asset, _at(14), shadow=False)  # true defect the shadow missed (its alert is 20 min off)
        _alert(conn, asset, _at(14, 20), shadow=True)
        _alert(conn, asset, _at(16), shadow=False)  # undispositioned, unmatched
        s4 = _alert(conn, asset, _at(18), shadow=True)  # a defect only the shadow raised
        s5 = _alert(conn, asset, _at(20), shadow=True)  # a shadow false alarm, judged itself
        _alert(conn, asset, _at(22), shadow=False)  # undispositioned champion ...
        s6 = _alert(conn, asset, _at(22, 3), shadow=True)  # ... whose shadow twin is a true defect, 3 min later
        _alert(conn, asset, _at(11), shadow=True, kind="retrain_recommended")  # about a model: not counted
        _alert(conn, asset, _at(8, day=1), shadow=False)  # the next day: a row of its own
        _dispose(conn, c1, "true_defect", _at(23))
        _dispose(conn, c2, "true_defect", _at(23))
        _dispose(conn, c2, "false_alarm", _at(23, 30))  # the latest verdict wins
        _dispose(conn, c3, "true_defect", _at(23))
        _dispose(conn, s4, "true_defect", _at(23))
        _dispose(conn, s5, "acceptable_variation", _at(23))
        _dispose(conn, s6, "true_defect", _at(23))
        cur = conn.execute("SELECT * FROM champion_challenger WHERE asset_id = %s ORDER BY day", (asset,))
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        conn.rollback()
    assert len(rows) == 2
    first, second = rows
    assert str(first["day"]) == "2026-05-01" and str(second["day"]) == "2026-05-02"
    assert {k: first[k] for k in (
        "champion_alerts", "shadow_alerts", "champion_matched", "shadow_matched", "champion_dispositioned",
        "champion_false_alarms", "shadow_false_alarms_est", "champion_true_defects", "shadow_missed_defects",
        "champion_missed_defects", "delay_pairs")} == {
        "champion_alerts": 5, "shadow_alerts": 6, "champion_matched": 3, "shadow_matched": 3,
        "champion_dispositioned": 3, "champion_false_alarms": 1, "shadow_false_alarms_est": 2,
        "champion_true_defects": 2, "shadow_missed_defects": 1, "champion_missed_defects": 1, "delay_pairs": 2}
    assert first["champion_agreement"] == pytest.approx(3 / 5)
    assert first["shadow_agreement"] == pytest.approx(3 / 6)
    assert first["mean_delay_s"] == pytest.approx((-120 + 180) / 2)
    assert first["median_delay_s"] == pytest.approx(30.0)
    assert first["match_tolerance_s"] == 600.0
    assert (second["champion_alerts"], second["shadow_alerts"], second["shadow_agreement"],
            second["mean_delay_s"]) == (1, 0, None, None)


def test_the_reader_role_may_read_the_view(database_url):
    with psycopg.connect(database_url) as conn:
        allowed = conn.execute("SELECT has_table_privilege('linewatch_reader', 'champion_challenger', 'SELECT')"
                               ).fetchone()[0]
    assert allowed
