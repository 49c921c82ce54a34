"""Day 1 -> Day 30 through the real worker, broker and database: the path `linewatch demo --day30` shows.

An anomaly model trained on good parts flags defects; the simulated inspector confirms them from
the simulator's truth; the label store says the classes are ready; a classifier trained on the
stored features is registered; the running worker picks it up, and later scores and alerts name
the class (and known defects below the anomaly threshold are still reported).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from rich.console import Console

from linewatch.demo_day30 import Line, day30_path

pytestmark = pytest.mark.integration


def test_confirmed_defects_become_a_classifier_whose_classes_reach_scores_and_alerts(worker, settings, bootstrap,
                                                                                     database_url):
    sku = f"day30-{uuid.uuid4().hex[:6]}"
    line = Line(bootstrap, database_url, settings, worker, refresh_s=settings.model_refresh_s)
    result = day30_path(line, seed=5, console=Console(quiet=True), sku=sku, train_good=150, day1_parts=300,
                        run_length=8)
    s = result.summary
    try:
        assert len(s["ready_classes"]) >= 2, s  # kinds the anomaly model sees got enough confirmed examples
        assert set(s["ready_classes"]) <= {"scratch", "missing_feature", "colour_patch"}
        assert s["classifier_cv"]["macro_f1"] > 0.8, s["classifier_cv"]
        assert s["flagged_after"] >= 4 * len(s["ready_classes"]) and s["accuracy_on_flagged"] >= 0.8, s
        named = [a["defect_class"] for a in s["alerts"] if a["defect_class"]]
        # One alert per run the anomaly layer caught (3 of 5 parts), each naming that run's defect.
        assert len(named) >= 2 and len(set(named)) == len(named) and set(named) <= set(s["ready_classes"]), s["alerts"]
        assert all(a["defect_class"] == a["drawn"] and a["route"] == "rework" for a in s["alerts"] if a["defect_class"])
        assert result.ok
        with psycopg.connect(database_url) as conn:
            seen = conn.execute("SELECT count(*) FROM defect_detections WHERE sku = %s", (sku,)).fetchone()[0]
            missed = conn.execute("SELECT count(*) FROM defect_detections WHERE sku = %s AND NOT anomaly_flagged",
                                  (sku,)).fetchone()[0]
            listed = dict(conn.execute(  # what `linewatch alerts list` shows in its defect column
                "SELECT alert_id::text, recognised_class FROM alert_incidents WHERE alert_id = ANY(%s::uuid[])",
                ([a["alert_id"] for a in s["alerts"]],)).fetchall())
        assert seen >= s["flagged_after"] and missed == s["known_defects_below_threshold"]
        assert {a["alert_id"]: a["defect_class"] for a in s["alerts"]} == listed
    finally:
        with psycopg.connect(database_url) as conn:  # the session worker must not keep this line's models
            conn.execute("UPDATE model_versions SET active = false WHERE scope_sku = %s", (sku,))
