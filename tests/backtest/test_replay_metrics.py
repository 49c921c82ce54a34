"""Replay metrics on a hand-worked stream: irregular event times, a NaN score, windows with and without events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from linewatch.backtest.labels import load_windows
from linewatch.backtest.nab import nab_scores
from linewatch.backtest.replay_metrics import alarm_metrics, per_window_table
from linewatch.errors import DataError

T0 = np.datetime64("2026-03-01T06:00", "us")
MINUTES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]  # a 20-minute gap after row 9


def minute(m: float) -> np.datetime64:
    return T0 + np.timedelta64(int(m * 60), "s")


TIMES = np.array([minute(m) for m in MINUTES])
# rows 3-5; rows 13-16 (starts between events, at 32.5 min); and one after the replayed span
WINDOWS = [(minute(3), minute(5)), (minute(32.5), minute(36)), (minute(100), minute(110))]
ALARM_ROWS = [1, 4, 5, 6, 14, 15, 18, 19]  # row 14 alarms but has no score: it cannot have alarmed


def stream() -> tuple[np.ndarray, np.ndarray]:
    alarms = np.zeros(20, dtype=bool)
    alarms[ALARM_ROWS] = True
    scores = np.where(alarms, 1.1, 0.1)
    scores[14] = np.nan
    return scores, alarms


def test_every_figure_by_hand():
    """Fired: rows 1, 4, 5, 6, 15, 18, 19. Anomalous: 3-5 and 13-16 (7), normal 13.

    tp 4, 5, 15 = 3; fp 1, 6, 18, 19 = 4; fn 3, 13, 14, 16 = 4; tn 9. Delays: row 4 - 3 min =
    60 s, row 15 (35 min) - 32.5 min = 150 s. False-alarm episodes: runs [1], [4-6], [15],
    [18-19]; [4-6] starts in a window, so 2 are false. Time outside windows: 39 min - 2 min -
    3.5 min = 33.5 min. AUROC over the 19 scored rows: anomalous 1.1 x3 (4, 5, 15) and 0.1 x3
    (3, 13, 16), normal 1.1 x4 and 0.1 x9: (3*9 + 0.5*3*4 + 0.5*3*9) / (6*13) = 46.5/78.
    """
    scores, alarms = stream()
    m = alarm_metrics(TIMES, scores, alarms, WINDOWS, probationary_percent=0.0)
    assert (m["n_events"], m["n_scored"], m["n_windows"]) == (20, 19, 2)
    assert m["precision"] == pytest.approx(3 / 7) and m["recall"] == pytest.approx(3 / 7)
    assert m["f1"] == pytest.approx(3 / 7)
    assert m["far"] == pytest.approx(4 / 13) and m["missed_alarm_rate"] == pytest.approx(4 / 7)
    assert m["auroc"] == pytest.approx(46.5 / 78)
    assert m["windows_detected"] == 2 and m["delays_s"] == [60.0, 150.0] and m["median_delay_s"] == 105.0
    assert m["false_alarm_episodes"] == 2
    assert m["hours_outside_windows"] == pytest.approx(33.5 / 60)
    assert m["false_alarms_per_hour"] == pytest.approx(2 / (33.5 / 60))
    fired = alarms.copy()
    fired[14] = False
    assert {k: m[k] for k in ("nab_score_standard", "nab_score_low_fp", "nab_score_low_fn")} == nab_scores(
        TIMES, fired, WINDOWS, probationary_percent=0.0)


def test_nab_figures_by_hand():
    """Probation off. Window 1 is rows 3-5 (W = 3): the first hit, row 4, is x = -(5-4+1)/3.

    sigma(x) = 2/(1+exp(5x)) - 1; window 1 earns sigma(-2/3)/sigma(-1), window 2 (rows 13-16,
    W = 4) earns sigma(-(16-15+1)/4)/sigma(-1) for row 15. FPs: row 1 precedes every window
    (-fp); row 6 is 1 row past a 3-row window, sigma(1/2); rows 18 and 19 are 2 and 3 rows past
    a 4-row window, sigma(2/3) and sigma(1). Standard: null -2, perfect 2.
    """
    def sig(x: float) -> float:
        return 2 / (1 + np.exp(5 * x)) - 1

    scores, alarms = stream()
    m = alarm_metrics(TIMES, scores, alarms, WINDOWS, probationary_percent=0.0)
    tp = (sig(-2 / 3) + sig(-0.5)) / sig(-1)
    fp = -1 + sig(0.5) + sig(2 / 3) + sig(1)
    assert m["nab_score_standard"] == pytest.approx(100 * (tp + 0.11 * fp + 2) / 4)
    assert m["nab_score_low_fp"] == pytest.approx(100 * (tp + 0.22 * fp + 2) / 4)
    assert m["nab_score_low_fn"] == pytest.approx(100 * (tp + 0.11 * fp + 4) / 6)


def test_json_ready_plain_python():
    scores, alarms = stream()
    m = alarm_metrics(TIMES, scores, alarms, WINDOWS)
    assert json.loads(json.dumps(m)) == m
    for key, value in m.items():
        assert type(value) in (int, float, list, type(None)), key
    assert all(type(d) is float for d in m["delays_s"])


def test_windows_from_a_nab_labels_file(tmp_path: Path):
    """The same figures when the windows come through ``load_windows`` from a NAB combined_windows.json."""
    path = tmp_path / "combined_windows.json"
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    as_text = [[str(np.datetime64(s, "us").item().strftime(fmt)), str(np.datetime64(e, "us").item().strftime(fmt))]
               for s, e in WINDOWS]
    path.write_text(json.dumps({"realKnownCause/line_7.csv": as_text}))
    windows = load_windows(path, test_file=Path("/data/realKnownCause/line_7.csv"))
    scores, alarms = stream()
    assert alarm_metrics(TIMES, scores, alarms, windows) == alarm_metrics(TIMES, scores, alarms, WINDOWS)


def test_per_window_table_blames_the_first_alarm():
    scores, alarms = stream()
    fired = alarms & np.isfinite(scores)
    blamed = [f"f{i}" for i in range(20)]
    rows = per_window_table(TIMES, fired, WINDOWS, blamed)
    assert rows == [
        {"start": "2026-03-01T06:03:00", "end": "2026-03-01T06:05:00", "detected": True, "delay_s": 60.0,
         "first_alarm": "2026-03-01T06:04:00", "first_alarm_row": 4, "alarm_events": 2, "blamed_feature": "f4"},
        {"start": "2026-03-01T06:32:30", "end": "2026-03-01T06:36:00", "detected": True, "delay_s": 150.0,
         "first_alarm": "2026-03-01T06:35:00", "first_alarm_row": 15, "alarm_events": 1, "blamed_feature": "f15"},
    ]
    missed = per_window_table(TIMES, np.zeros(20, bool), WINDOWS)
    assert [(r["detected"], r["delay_s"], r["blamed_feature"]) for r in missed] == [(False, None, None)] * 2


def test_no_windows_and_no_alarms_give_none_not_made_up_numbers():
    scores, alarms = stream()
    m = alarm_metrics(TIMES, scores, alarms, [])
    assert m["n_windows"] == 0 and m["recall"] is None and m["missed_alarm_rate"] is None and m["auroc"] is None
    assert m["median_delay_s"] is None and m["delays_s"] == [] and m["nab_score_standard"] is None
    assert m["far"] == pytest.approx(7 / 20)
    assert m["false_alarms_per_hour"] == pytest.approx(4 / (39 / 60))  # runs [1], [4-6], [15], [18-19]
    quiet = alarm_metrics(TIMES, scores, np.zeros(20, bool), WINDOWS)
    assert quiet["precision"] is None and quiet["recall"] == 0.0 and quiet["windows_detected"] == 0
    assert quiet["false_alarms_per_hour"] == 0.0 and quiet["nab_score_standard"] == 0.0


def test_numeric_times_in_seconds():
    t = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    a = np.array([0, 0, 1, 0, 0, 1], bool)
    m = alarm_metrics(t, a.astype(float), a, [(15.0, 30.0)], probationary_percent=0.0)
    assert m["delays_s"] == [5.0] and m["false_alarms_per_hour"] == pytest.approx(3600 / 35)


def test_bad_input_is_refused_with_what_to_do():
    scores, alarms = stream()
    with pytest.raises(DataError, match="sorted"):
        alarm_metrics(TIMES[::-1], scores, alarms, WINDOWS)
    with pytest.raises(DataError, match="one per event"):
        alarm_metrics(TIMES, scores[:-1], alarms, WINDOWS)
    with pytest.raises(DataError, match="overlap"):
        alarm_metrics(TIMES, scores, alarms, [(minute(1), minute(4)), (minute(3), minute(6))])
    with pytest.raises(DataError, match="one per event"):
        per_window_table(TIMES, alarms, WINDOWS, ["x"])


def test_infinite_scores_rank_highest_and_count_as_alarms():
    scores, alarms = stream()
    base = alarm_metrics(TIMES, scores, alarms, WINDOWS)
    inf = scores.copy()
    inf[inf > 1] = np.inf  # the same ranks: AUROC and every count unchanged
    assert alarm_metrics(TIMES, inf, alarms, WINDOWS) == base
