"""The label store and class list (sql/190_defects.sql, linewatch.defects) against the real PostgreSQL.

Each test writes its own events under a fresh SKU in one transaction and rolls it back, so the
session database keeps nothing; the SQL views, the normalising function and the Python training
set are exercised together, as `linewatch labels` and `linewatch train defects --from-labels` use them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from linewatch.defects import label_store
from linewatch.defects.catalogue import Routes, canonical, list_classes, set_class
from linewatch.errors import ConfigError
from linewatch.feedback.dispositions import to_row
from linewatch.schemas.messages import Disposition, Verdict
from linewatch.schemas.rows import DispositionRow, ScoreRow, columns
from linewatch.simulation.confirmations import confirm_flagged

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as c:
        yield c
        c.rollback()


def _sku() -> str:
    return f"lbl-{uuid.uuid4().hex[:8]}"


def _score(ts: datetime, eid: uuid.UUID, modality: str, sku: str, anomalous: bool) -> tuple:
    values = dict(ts=ts, event_id=eid, modality=modality, asset_id="press-1", sku=sku, part_id=str(eid)[:8],
                  detector="patchcore" if modality == "frames" else "hotelling", model_version="v1", raw_score=1.0,
                  tail_probability=0.001 if anomalous else 0.5, calibrated_score=3.0 if anomalous else 0.3,
                  threshold=2.0, is_anomaly=anomalous, ready=True, top_feature=None, explanation="[]", scored_at=ts)
    return tuple(values.get(c) for c in columns(ScoreRow))


def _insert(conn: psycopg.Connection, table: str, cols: list[str] | tuple[str, ...], rows: list[tuple]) -> None:
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})", rows)


def _frames(conn: psycopg.Connection, sku: str, labels: list[str], *, flagged: bool = True,
            start: int = 0, model: str = "v1") -> dict[uuid.UUID, str]:
    """Frames with stored pooled features (a class's own direction + noise) and scores; truth by event id."""
    rng = np.random.default_rng(start)
    direction = {"scratch": 0, "spot": 1, "good": 2}
    truth, scores, feats = {}, [], []
    for k, label in enumerate(labels):
        ts, eid = T0 + timedelta(seconds=start + k), uuid.uuid4()
        vec = rng.normal(0, 0.1, 6)
        vec[direction.get(label, 3)] += 1.0
        truth[eid] = label
        scores.append(_score(ts, eid, "frames", sku, flagged))
        feats.append((ts, eid, "press-1", "cam-1", sku, "patchcore", model, flagged, vec.tolist()))
    _insert(conn, "scores", columns(ScoreRow), scores)
    _insert(conn, "frame_features", ("ts", "event_id", "asset_id", "camera", "sku", "detector", "model_version",
                                     "is_anomaly", "features"), feats)
    return truth


def test_free_text_folds_to_one_class_and_synonyms_map_per_sku(conn):
    sku = _sku()
    assert canonical(conn, "  Surface-Scratch ", sku) == "surface_scratch"
    set_class(conn, "scratch", synonyms=["Surface scratch", "scratches"], route="rework")
    set_class(conn, "scratch", sku=sku, route="scrap")  # this SKU scraps them
    assert canonical(conn, "SCRATCHES", sku) == "scratch"
    assert canonical(conn, "surface  scratch", "another-sku") == "scratch"
    c = set_class(conn, "scratch", synonyms=["rub mark"])  # adds to, never replaces, the synonyms
    assert c.synonyms == ("rub_mark", "scratches", "surface_scratch") and c.route == "rework"
    routes = Routes(list_classes(conn))
    assert routes.route_for(sku, "scratch", "frames") == "scrap"
    assert routes.route_for("another-sku", "scratch", "frames") == "rework"
    assert routes.route_for(sku, "bearing_spall", "signals") == "maintenance"  # not listed: by modality
    with pytest.raises(ConfigError, match="route"):
        set_class(conn, "scratch", route="bin")
    with pytest.raises(ConfigError, match="class name"):
        set_class(conn, " -- ")


def test_confirmed_classes_count_ready_and_train_with_sampled_good_parts(conn, database_url):
    sku = _sku()
    set_class(conn, "scratch", sku=sku, synonyms=["scratched"])
    truth = _frames(conn, sku, ["scratch"] * 22 + ["spot"] * 8 + ["good"] * 3)
    # The operator types the class in several ways; the label view folds them.
    confirmed = confirm_flagged(conn, truth)
    assert confirmed == {"scratch": 22, "spot": 8, "good": 3}
    conn.execute("UPDATE dispositions SET defect_class = 'Scratched ' WHERE event_id = ANY(%s)",
                 ([e for e, c in truth.items() if c == "scratch"][:5],))
    assert confirm_flagged(conn, truth) == {}  # each event is dispositioned once
    unflagged = _frames(conn, sku, ["good"] * 40, flagged=False, start=100)
    # A missed defect scores just under the threshold: not an ordinary part, never a good example.
    missed = _frames(conn, sku, ["scratch"] * 3, flagged=False, start=200)
    conn.execute("UPDATE scores SET calibrated_score = 1.8 WHERE event_id = ANY(%s)", (list(missed),))
    # The newest ordinary frames come from another image model (retrained later): another feature space.
    _frames(conn, sku, ["good"] * 30, flagged=False, start=300, model="v2")
    counts = {r["class"]: r for r in label_store.class_counts(conn, sku=sku)}
    assert {c: (r["examples"], r["ready"]) for c, r in counts.items()} == {
        "scratch": (22, True), "spot": (8, False), "good": (3, False)}
    conn.commit()  # training_set reads through its own connection
    try:
        ts = label_store.training_set(database_url, modality="frames", sku=sku)
        # Good parts: the 3 false alarms, and unflagged frames up to the largest class (22).
        assert ts.counts() == {"scratch": 22, "spot": 8, "good": 25}
        assert ts.X.shape == (55, 6) and ts.feature_names[0] == "pooled_0" and ts.feature_model == "v1"
        chosen = {uuid.UUID(e) for e, c in zip(ts.event_ids, ts.y, strict=True) if c == "good"} - set(truth)
        assert chosen == set(list(unflagged)[-22:])  # the newest ordinary frames, not the missed scratches
        by_class = {c: ts.X[[y == c for y in ts.y]].mean(axis=0).argmax() for c in ("scratch", "spot", "good")}
        assert by_class == {"scratch": 0, "spot": 1, "good": 2}  # rows carry their own event's features
        with pytest.raises(ConfigError, match="no confirmed spc defects"):
            label_store.training_set(database_url, modality="spc", sku=sku)
    finally:
        with psycopg.connect(database_url) as c:
            c.execute("DELETE FROM dispositions WHERE event_id = ANY(%s)", (list(truth),))
            for table in ("scores", "frame_features"):
                c.execute(f"DELETE FROM {table} WHERE sku = %s", (sku,))
            c.execute("DELETE FROM defect_classes WHERE sku = %s", (sku,))


def test_spc_training_rows_are_the_confirmed_parts_characteristics(conn, database_url):
    sku = _sku()
    rows, meas, truth = [], [], {}
    for k in range(30):
        ts, eid = T0 + timedelta(minutes=k), uuid.uuid4()
        label = "burr" if k % 3 == 0 else "good"
        truth[eid] = label
        rows.append(_score(ts, eid, "spc", sku, label == "burr"))
        for name, value in (("bore_mm", 10.0 + (0.5 if label == "burr" else 0.0) + k * 1e-3), ("len_mm", 50.0)):
            meas.append((ts, eid, "press-1", sku, str(eid)[:8], None, name, value, None, None, None))
    _insert(conn, "scores", columns(ScoreRow), rows)
    _insert(conn, "spc_measurements", ("ts", "event_id", "asset_id", "sku", "part_id", "shift", "characteristic",
                                       "value", "lsl", "usl", "target"), meas)
    # An alert-level confirmation reaches the events behind the alert's score refs.
    burrs = [(e, r) for (e, c), r in zip(truth.items(), rows, strict=True) if c == "burr"]
    alert = uuid.uuid4()
    refs = json.dumps([{"ts": r[0].isoformat(), "event_id": str(e), "detector": "hotelling", "model_version": "v1",
                        "modality": "spc", "calibrated_score": 3.0} for e, r in burrs])
    conn.execute("""INSERT INTO alerts (ts, alert_id, state, asset_id, severity, opened_at, score, modalities,
                        contributors, event_ids, shadow, kind, route, p_value, scores, model_versions, note)
                    VALUES (%s, %s, 'open', 'press-1', 'warning', %s, 4.0, '{spc}', '[]', %s, false, 'anomaly',
                            'quality', 0.0001, %s, '{v1}', '')""",
                 (T0, alert, T0, [e for e, _ in burrs], refs))
    d = Disposition(alert_id=alert, verdict=Verdict.TRUE_DEFECT, operator="ann", defect_class="Burr", ts=T0)
    _insert(conn, "dispositions", columns(DispositionRow), [to_row(d)])
    conn.commit()
    try:
        ts = label_store.training_set(database_url, modality="spc", sku=sku)
        assert ts.feature_names == ["bore_mm", "len_mm"]
        assert ts.counts() == {"burr": 10, "good": 10}
        burr_rows = ts.X[[y == "burr" for y in ts.y]]
        assert np.all(burr_rows[:, 0] > 10.4) and np.all(ts.X[[y == "good" for y in ts.y]][:, 0] < 10.1)
    finally:
        with psycopg.connect(database_url) as c:
            c.execute("DELETE FROM dispositions WHERE alert_id = %s", (alert,))
            c.execute("DELETE FROM alerts WHERE alert_id = %s", (alert,))
            for table in ("scores", "spc_measurements"):
                c.execute(f"DELETE FROM {table} WHERE sku = %s", (sku,))
