"""A simulated quality engineer: confirms what the anomaly layer flagged, from the simulator's ground truth.

On a real line an operator looks at each flagged part and says "scratch" or "false alarm"; in the
demo and the tests the simulator knows what it drew, so this module plays that operator. It
dispositions every flagged event that has a ground-truth label and no disposition yet
(event-level, so one disposition per part, as a reject station records them): a drawn defect is a
``true_defect`` with its class, a good part a ``false_alarm``. Those become the Day-30 layer's
labelled examples exactly as operators' dispositions would.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta

import psycopg

from linewatch.feedback.dispositions import to_row
from linewatch.schemas.messages import GOOD_CLASS, Disposition, Verdict
from linewatch.schemas.rows import DispositionRow, columns

OPERATOR = "simulated-inspector"
#: The simulated operator looks at a flagged part this long after it was made.
INSPECTION_DELAY = timedelta(minutes=1)


def confirm_flagged(conn: psycopg.Connection, truth: Mapping[uuid.UUID, str], *,
                    operator: str = OPERATOR) -> dict[str, int]:
    """Disposition every flagged, not yet dispositioned event of ``truth``; returns how many per class."""
    rows = conn.execute(
        """SELECT s.event_id, min(s.ts) FROM scores s
           WHERE s.event_id = ANY(%s) AND s.is_anomaly
             AND NOT EXISTS (SELECT 1 FROM dispositions d WHERE d.event_id = s.event_id)
           GROUP BY s.event_id ORDER BY min(s.ts), s.event_id""", (list(truth),)).fetchall()
    made: dict[str, int] = {}
    out = []
    for eid, ts in rows:
        label = truth[eid]
        defect = label != GOOD_CLASS
        d = Disposition(event_id=eid, verdict=Verdict.TRUE_DEFECT if defect else Verdict.FALSE_ALARM,
                        operator=operator, defect_class=label if defect else None, ts=ts + INSPECTION_DELAY,
                        note="simulated: the simulator's drawn defect")
        out.append(to_row(d))
        made[label] = made.get(label, 0) + 1
    if out:
        cols = columns(DispositionRow)
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO dispositions ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
                            "ON CONFLICT DO NOTHING", out)
    conn.commit()
    return made
