"""The SPC views of sql/040_spc_views.sql against the real (embedded) PostgreSQL.

Every test writes its own series under a fresh asset id inside one transaction and rolls it
back, so nothing leaks into the session database. Expected limits, rule flags and capability
indices are worked out by hand in the comments (d2(2) = 1.128, as the views use); the Python
detectors in linewatch.detectors serve as a second, independent opinion on random data.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row

from linewatch.detectors.capability import capability
from linewatch.detectors.chart_math import chart_constants
from linewatch.detectors.spc_rules import nelson, western_electric

pytestmark = pytest.mark.integration

D2 = 1.128
SIGMA_1 = 1.0 / D2  # sigma of the hand-made series below: MR-bar = 1
T0 = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday

NELSON_COLUMNS = (
    "nelson1_beyond_3sigma", "nelson2_9_same_side", "nelson3_6_trend", "nelson4_14_alternating",
    "nelson5_2_of_3_beyond_2sigma", "nelson6_4_of_5_beyond_1sigma", "nelson7_15_within_1sigma",
    "nelson8_8_beyond_1sigma",
)

# Phase I: 11, 12, 11, 10 repeated, 25 values ending on 11 -> mean 275/25 = 11 exactly, every moving
# range is 1 -> MR-bar = 1, sigma = 1/1.128 = 0.8865, UCL = 11 + 3/1.128 = 13.6596, LCL = 8.3404.
# z of 12 / 10 is +/-1.128 (beyond 1 sigma), z of 11 is 0 (on the centre line: breaks runs).
BASELINE = [(11.0, 12.0, 11.0, 10.0)[i % 4] for i in range(25)]
# Phase II, seq 26..80, each segment built to complete exactly one pattern (seq in brackets):
PHASE_TWO = [
    14.0,                                  # [26] z = 3.384 > 3: nelson1; MR = 3 < 3.267
    11.0, 11.0, 13.0, 11.0, 13.0,          # [27-31] 13 has z = 2.256: 2 of 3 beyond 2 sigma at 31: nelson5
    9.0,                                   # [32] MR = |9 - 13| = 4 > 3.267: MR chart rule
    11.0,                                  # [33]
    *[11.5] * 9,                           # [34-42] 9 above the centre (z = 0.564): we4 at 41, 42,
                                           #         nelson2 at 42
    11.0,                                  # [43]
    9.5, 10.0, 10.5, 11.2, 11.6, 12.0,     # [44-49] 6 rising values: nelson3 at 49
    11.0,                                  # [50]
    12.5, 12.5, 11.0, 12.5, 12.5,          # [51-55] z(12.5) = 1.692: 4 of 5 beyond 1 sigma at 55: nelson6
    11.0,                                  # [56]
    *[10.8 if k % 2 else 11.2 for k in range(57, 71)],  # [57-70] down/up from 56 on: 14 alternating at 69, 70
    11.2,                                  # [71] a tie ends the alternation; 56..70 and 56..71 are
                                           #      15 and 16 values within 1 sigma: nelson7 at 70, 71
    12.5, 12.5, 9.5, 9.5, 12.5, 12.5, 9.5, 9.5,  # [72-79] 8 beyond 1 sigma on both sides: nelson8 at 79
    11.0,                                  # [80]
]
EXPECTED_FLAGS = {
    "nelson1_beyond_3sigma": {26},
    "nelson2_9_same_side": {42},
    "nelson3_6_trend": {49},
    "nelson4_14_alternating": {69, 70},
    "nelson5_2_of_3_beyond_2sigma": {31},
    "nelson6_4_of_5_beyond_1sigma": {55},
    "nelson7_15_within_1sigma": {70, 71},
    "nelson8_8_beyond_1sigma": {79},
    "we4_8_same_side": {41, 42},
    "mr_beyond_limit": {32},
}


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """One transaction per test, rolled back at the end; days are counted in UTC."""
    connection = psycopg.connect(database_url, row_factory=dict_row)
    try:
        connection.execute("SET TIME ZONE 'UTC'")
        yield connection
    finally:
        connection.rollback()
        connection.close()


@pytest.fixture
def asset() -> str:
    return f"spcv-{uuid.uuid4().hex[:10]}"


def insert_series(conn: psycopg.Connection, asset: str, characteristic: str, values: Sequence[float], *,
                  start: datetime = T0, step: timedelta = timedelta(minutes=1), sku: str = "S1",
                  shift: str | None = "A", lsl: float | None = None, usl: float | None = None) -> None:
    rows = [(start + i * step, uuid.uuid4(), asset, sku, f"p{i}", shift, characteristic, v, lsl, usl, None)
            for i, v in enumerate(values)]
    insert_rows(conn, rows)


def insert_rows(conn: psycopg.Connection, rows: Sequence[tuple]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, shift, characteristic, "
            "value, lsl, usl, target) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def chart(conn: psycopg.Connection, asset: str, characteristic: str) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM spc_individuals_chart WHERE asset_id = %s AND characteristic = %s ORDER BY seq",
        (asset, characteristic)).fetchall()


# --- individuals chart ------------------------------------------------------------------------


def test_limits_come_from_the_phase_one_baseline_and_stay_frozen(conn, asset):
    insert_series(conn, asset, "bore", BASELINE + PHASE_TWO)
    rows = chart(conn, asset, "bore")
    assert [r["seq"] for r in rows] == list(range(1, 81))
    for r in rows:
        assert r["baseline_n"] == 25
        assert r["center_line"] == pytest.approx(11.0, abs=1e-12)
        assert r["mr_bar"] == pytest.approx(1.0, abs=1e-12)
        assert r["sigma"] == pytest.approx(0.886524822695, abs=1e-12)
        assert r["ucl"] == pytest.approx(13.659574468085, abs=1e-12)
        assert r["lcl"] == pytest.approx(8.340425531915, abs=1e-12)
        assert r["mr_ucl"] == pytest.approx(3.267, abs=1e-12)
        assert r["in_baseline"] is (r["seq"] <= 25)
    assert rows[0]["moving_range"] is None
    assert rows[25]["value"] == 14.0 and rows[25]["moving_range"] == pytest.approx(3.0)
    assert rows[25]["z_score"] == pytest.approx(3.0 * D2)  # (14 - 11) / (1/1.128)
    assert rows[31]["z_score"] == pytest.approx(-2.0 * D2)  # (9 - 11) / (1/1.128)


def test_run_rules_flag_exactly_the_points_that_complete_a_pattern(conn, asset):
    insert_series(conn, asset, "bore", BASELINE + PHASE_TWO)
    rows = chart(conn, asset, "bore")
    for column, expected in EXPECTED_FLAGS.items():
        judged = rows[1:] if column == "mr_beyond_limit" else rows  # the first value has no moving range
        assert all(r[column] is not None for r in judged), column
        assert {r["seq"] for r in rows if r[column]} == expected, column
    union = set().union(*(EXPECTED_FLAGS[c] for c in NELSON_COLUMNS))
    assert {r["seq"] for r in rows if r["out_of_control"]} == union
    by_seq = {r["seq"]: r for r in rows}
    assert by_seq[70]["rules_violated"] == ["nelson4", "nelson7"]
    assert by_seq[26]["rules_violated"] == ["nelson1"]
    assert by_seq[41]["rules_violated"] == []  # we4 alone is reported but not part of out_of_control
    assert not any(r["out_of_control"] for r in rows if r["in_baseline"])


def test_run_rules_agree_with_the_python_detectors_on_random_data(conn, asset):
    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.normal(50.0, 2.0, 60),
        rng.normal(53.0, 2.0, 40),                    # a 1.5 sigma shift: runs, 2-of-3, 4-of-5
        50.0 + np.arange(12) * 1.2,                   # a trend
        50.0 + np.tile([-3.0, 3.0], 10) + rng.normal(0, 0.2, 20),  # alternation / mixture
        rng.normal(50.0, 0.3, 30),                    # stratification
        rng.normal(50.0, 2.0, 38),
    ])
    insert_series(conn, asset, "diameter", x.tolist())
    rows = chart(conn, asset, "diameter")
    # The limits: mean and MR-bar/1.128 of the first 25 values.
    assert rows[0]["center_line"] == pytest.approx(x[:25].mean(), rel=1e-12)
    assert rows[0]["sigma"] == pytest.approx(np.abs(np.diff(x[:25])).mean() / D2, rel=1e-12)
    z = np.array([r["z_score"] for r in rows])
    assert z == pytest.approx((x - x[:25].mean()) / (np.abs(np.diff(x[:25])).mean() / D2), rel=1e-9)
    flags, names = nelson(z)
    sql = np.array([[r[c] for c in NELSON_COLUMNS] for r in rows], dtype=bool)
    for j, name in enumerate(names):
        assert sql[:, j].tolist() == flags[:, j].tolist(), name
    assert flags.sum() > 20, "the random series should exercise the rules"
    we, _ = western_electric(z)
    assert [r["we4_8_same_side"] for r in rows] == we[:, 3].tolist()


def test_series_are_independent_and_short_ones_get_provisional_limits(conn, asset):
    insert_series(conn, asset, "bore", BASELINE + PHASE_TWO)
    insert_series(conn, asset, "flatness", [1.0, 1.2, 1.1, 1.3])
    insert_series(conn, asset, "bore", [30.0] * 5, sku="S2")  # same asset and name, other SKU
    flat = chart(conn, asset, "flatness")
    # mean = 4.6 / 4 = 1.15; moving ranges 0.2, 0.1, 0.2 -> MR-bar = 0.5 / 3
    assert [r["baseline_n"] for r in flat] == [4, 4, 4, 4]
    assert flat[0]["center_line"] == pytest.approx(1.15)
    assert flat[0]["mr_bar"] == pytest.approx(0.5 / 3)
    assert flat[0]["ucl"] == pytest.approx(1.15 + 3 * (0.5 / 3) / D2)
    bore = [r for r in chart(conn, asset, "bore") if r["sku"] == "S1"]
    assert len(bore) == 80 and bore[0]["center_line"] == pytest.approx(11.0)


def test_a_baseline_without_variation_cannot_be_judged(conn, asset):
    insert_series(conn, asset, "gauge", [2.0] * 25 + [2.5, 2.6, 2.7, 2.8, 2.9, 3.0])
    rows = chart(conn, asset, "gauge")
    assert rows[-1]["sigma"] == 0.0 and rows[-1]["z_score"] is None
    assert all(r["nelson1_beyond_3sigma"] is None and r["nelson5_2_of_3_beyond_2sigma"] is None for r in rows)
    # trends need no sigma: 2.0 (seq 25) and five rises complete six increasing values at seq 30 (and 31)
    assert [r["seq"] for r in rows if r["nelson3_6_trend"]] == [30, 31]
    assert rows[-1]["out_of_control"] is True and rows[0]["out_of_control"] is None


# --- capability ---------------------------------------------------------------------------------


def _capability_fixture(conn: psycopg.Connection, asset: str) -> None:
    """Four shift occurrences over three days, lsl = 4, usl = 20 (see the tests for the arithmetic)."""
    day1, day2, day3 = T0, T0 + timedelta(days=1), T0 + timedelta(days=2)
    parts = [
        (day1 + timedelta(hours=8), "A", 9.0), (day1 + timedelta(hours=8, minutes=10), "A", 11.0),
        (day1 + timedelta(hours=8, minutes=20), "A", 9.0), (day1 + timedelta(hours=8, minutes=30), "A", 11.0),
        # night shift C crosses midnight: one occurrence, day 1
        (day1 + timedelta(hours=22), "C", 12.0), (day1 + timedelta(hours=23), "C", 14.0),
        (day2 + timedelta(hours=1), "C", 12.0), (day2 + timedelta(hours=2), "C", 14.0),
        (day2 + timedelta(hours=8), "A", 10.0), (day2 + timedelta(hours=8, minutes=30), "A", 10.5),
        # shift A again the next morning, no C measured in between: split by the 6-hour gap
        (day3 + timedelta(hours=8), "A", 10.2), (day3 + timedelta(hours=8, minutes=30), "A", 10.4),
    ]
    insert_rows(conn, [(ts, uuid.uuid4(), asset, "S1", f"p{i}", shift, "length", v, 4.0, 20.0, 12.0)
                       for i, (ts, shift, v) in enumerate(parts)])


def test_daily_capability_by_hand(conn, asset):
    _capability_fixture(conn, asset)
    rows = conn.execute("SELECT * FROM spc_capability_daily WHERE asset_id = %s ORDER BY day",
                        (asset,)).fetchall()
    assert [(r["day"].isoformat(), r["n"]) for r in rows] == [
        ("2024-03-04", 6), ("2024-03-05", 4), ("2024-03-06", 2)]
    d = rows[0]
    # Day 1: 9, 11, 9, 11, 12, 14. mean = 66/6 = 11. Deviations -2, 0, -2, 0, 1, 3 -> SS = 18,
    # s = sqrt(18/5) = 1.897367. Moving ranges 2, 2, 2, 1, 2 -> MR-bar = 1.8, sigma_w = 1.8/1.128 = 1.595745.
    assert d["mean"] == pytest.approx(11.0)
    assert d["stddev"] == pytest.approx(1.8973665961)
    assert d["sigma_within"] == pytest.approx(1.5957446809)
    assert (d["lsl"], d["usl"]) == (4.0, 20.0)
    assert d["cp"] == pytest.approx(1.6711111111)   # 16 / (6 * 1.8/1.128) = 16 * 1.128 / 10.8
    assert d["cpk"] == pytest.approx(1.4622222222)  # min(20 - 11, 11 - 4) = 7 -> 7 * 1.128 / 5.4
    assert d["pp"] == pytest.approx(1.4054567379)   # 16 / (6 * 1.897367)
    assert d["ppk"] == pytest.approx(1.2297746457)  # 7 / (3 * 1.897367)
    assert d["first_ts"] == T0 + timedelta(hours=8) and d["last_ts"] == T0 + timedelta(hours=23)


def test_shift_capability_keeps_night_shifts_whole_and_splits_on_gaps(conn, asset):
    _capability_fixture(conn, asset)
    rows = conn.execute("SELECT * FROM spc_capability_shift WHERE asset_id = %s ORDER BY shift_start",
                        (asset,)).fetchall()
    assert [(r["day"].isoformat(), r["shift"], r["n"]) for r in rows] == [
        ("2024-03-04", "A", 4), ("2024-03-04", "C", 4), ("2024-03-05", "A", 2), ("2024-03-06", "A", 2)]
    a, c = rows[0], rows[1]
    # Shift A day 1: 9, 11, 9, 11 -> mean 10, s = sqrt(4/3) = 1.154701, MR-bar = 2, sigma_w = 2/1.128.
    assert a["mean"] == pytest.approx(10.0) and a["stddev"] == pytest.approx(1.1547005384)
    assert a["sigma_within"] == pytest.approx(1.7730496454)
    assert a["cp"] == pytest.approx(1.504)        # 16 / (6 * 2/1.128) = 16 * 1.128 / 12
    assert a["cpk"] == pytest.approx(1.128)       # min(10, 6) = 6 -> 6 * 1.128 / 6
    assert a["pp"] == pytest.approx(2.3094010768)   # 16 / (6 * 1.154701)
    assert a["ppk"] == pytest.approx(1.7320508076)  # 6 / (3 * 1.154701)
    # Night shift C: 12, 14, 12, 14 from 22:00 to 02:00 -> mean 13, cpk = min(7, 9) * 1.128 / 6.
    assert c["shift_start"] == T0 + timedelta(hours=22) and c["shift_end"] == T0 + timedelta(days=1, hours=2)
    assert c["cpk"] == pytest.approx(1.316)
    assert c["ppk"] == pytest.approx(2.0207259422)  # 7 / (3 * 1.154701)


def test_one_sided_spec_gives_one_sided_indices(conn, asset):
    insert_series(conn, asset, "runout", [0.1, 0.2, 0.1, 0.2], start=T0 + timedelta(hours=9), usl=0.5)
    (d,) = conn.execute("SELECT * FROM spc_capability_daily WHERE asset_id = %s", (asset,)).fetchall()
    # mean 0.15, MR-bar 0.1 -> sigma_w = 0.1/1.128; s = sqrt(4 * 0.05^2 / 3) = 0.0577350
    assert d["cp"] is None and d["pp"] is None and d["lsl"] is None
    assert d["cpk"] == pytest.approx(1.316)         # (0.5 - 0.15) * 1.128 / 0.3
    assert d["ppk"] == pytest.approx(2.0207259422)  # 0.35 / (3 * 0.0577350)


def test_capability_agrees_with_the_python_detector(conn, asset):
    x = np.random.default_rng(5).normal(10.0, 0.5, 40)
    insert_series(conn, asset, "width", x.tolist(), start=T0 + timedelta(hours=1), lsl=8.0, usl=13.0)
    (d,) = conn.execute("SELECT * FROM spc_capability_daily WHERE asset_id = %s", (asset,)).fetchall()
    py = capability(x, lsl=8.0, usl=13.0)
    assert d["n"] == py.n and d["mean"] == pytest.approx(py.mean, rel=1e-12)
    assert (d["pp"], d["ppk"]) == pytest.approx((py.pp, py.ppk), rel=1e-12)
    # the Python detector integrates d2(2) = 1.12836 numerically; the views use the table value 1.128
    ratio = D2 / chart_constants(2).d2
    assert (d["cp"], d["cpk"]) == pytest.approx((py.cp * ratio, py.cpk * ratio), rel=1e-12)


# --- anomalies with context ---------------------------------------------------------------------


def _score(ts: datetime, event_id: uuid.UUID, asset: str, *, modality: str, anomalous: bool,
           explanation: list[dict[str, float | str]]) -> tuple:
    return (ts, event_id, modality, asset, "S1", "part-7", "robust_mahalanobis", "v3", 40.0, 1e-6, 6.0, 3.0,
            anomalous, True, explanation[0]["name"] if explanation else None, json.dumps(explanation), ts)


def test_anomalies_come_with_their_top_three_contributors_and_the_parts_values(conn, asset):
    ts = T0 + timedelta(hours=10)
    eid, quiet, frame = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    measured = {"bore": (25.6, 24.9, 25.1), "depth": (10.02, 9.9, 10.1), "flatness": (0.01, None, 0.05),
                "runout": (0.30, None, 0.2)}
    insert_rows(conn, [(ts, eid, asset, "S1", "part-7", "A", name, v, lsl, usl, None)
                       for name, (v, lsl, usl) in measured.items()])
    explanation = [{"name": "bore", "value": 30.0, "share": 0.6},
                   {"name": "runout", "value": 15.0, "share": 0.3},
                   {"name": "depth", "value": 4.0, "share": 0.08},
                   {"name": "flatness", "value": 1.0, "share": 0.02}]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO scores (ts, event_id, modality, asset_id, sku, part_id, detector, model_version, "
            "raw_score, tail_probability, calibrated_score, threshold, is_anomaly, ready, top_feature, "
            "explanation, scored_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [_score(ts, eid, asset, modality="spc", anomalous=True, explanation=explanation),
             _score(ts, quiet, asset, modality="spc", anomalous=False, explanation=explanation),
             _score(ts + timedelta(seconds=1), frame, asset, modality="frames", anomalous=True,
                    explanation=[{"name": "region_3_4", "value": 9.0, "share": 1.0}])])
    rows = conn.execute("SELECT * FROM anomalies_with_context WHERE asset_id = %s ORDER BY ts",
                        (asset,)).fetchall()
    assert [r["event_id"] for r in rows] == [eid, frame]  # the non-anomalous verdict is not there
    spc, img = rows
    assert (spc["feature_1"], spc["feature_2"], spc["feature_3"]) == ("bore", "runout", "depth")
    assert (spc["contribution_1"], spc["share_2"], spc["share_3"]) == (30.0, 0.3, 0.08)
    assert (spc["measured_1"], spc["measured_2"], spc["measured_3"]) == (25.6, 0.30, 10.02)
    assert spc["n_contributors"] == 4
    assert spc["measured_values"] == {k: v[0] for k, v in measured.items()}
    assert spc["out_of_spec"] == ["bore", "runout"]  # 25.6 > 25.1, 0.30 > 0.2; depth and flatness are in spec
    assert img["feature_1"] == "region_3_4" and img["feature_2"] is None and img["n_contributors"] == 1
    assert img["measured_values"] is None and img["measured_1"] is None and img["out_of_spec"] is None


# --- access and plans ---------------------------------------------------------------------------

SPC_VIEWS = ("spc_individuals_chart", "spc_capability_daily", "spc_capability_shift",
             "anomalies_with_context")


def test_the_read_only_role_can_read_every_view(conn, asset):
    _capability_fixture(conn, asset)
    conn.execute("SET ROLE linewatch_reader")
    for view in SPC_VIEWS:
        conn.execute(f"SELECT * FROM {view} WHERE asset_id = %s", (asset,)).fetchall()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO spc_measurements SELECT * FROM spc_measurements LIMIT 1")


@pytest.mark.parametrize("view", SPC_VIEWS[:3])
def test_a_filter_on_the_series_reaches_the_table_scan(conn, view):
    """Filtering a view by asset and characteristic must not compute the whole table first."""
    plan = conn.execute(
        f"EXPLAIN (FORMAT JSON) SELECT * FROM {view} WHERE asset_id = 'a1' AND characteristic = 'c1'"
    ).fetchone()["QUERY PLAN"]

    def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if node.get("Relation Name") == "spc_measurements":
            yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    found = list(scans(plan[0]["Plan"]))
    assert found, plan
    for node in found:
        conditions = " ".join(str(node.get(k, "")) for k in ("Index Cond", "Filter", "Recheck Cond"))
        assert "asset_id" in conditions and "characteristic" in conditions, node


# --- the examples in docs/sql.md ----------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


def doc_examples() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def test_every_example_in_the_docs_runs_as_the_read_only_role(conn):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=80)
    insert_series(conn, "press-01", "bore_diameter", BASELINE + PHASE_TWO, start=start, sku="A-100",
                  lsl=8.0, usl=14.0)
    conn.execute("SET ROLE linewatch_reader")
    examples = doc_examples()
    assert len(examples) >= 8
    results = []
    for sql in examples:
        with conn.transaction():  # a savepoint: one failing example does not hide the next
            results.append(conn.execute(sql).fetchall() if "SELECT" in sql else None)
    out_of_control_last_shift, rebaselined = results[1], results[-1]
    assert len(out_of_control_last_shift) == len(set().union(*(EXPECTED_FLAGS[c] for c in NELSON_COLUMNS)))
    assert len(rebaselined) == 80 and rebaselined[0]["cl"] == pytest.approx(11.0)
