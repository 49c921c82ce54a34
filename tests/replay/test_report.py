"""The replay report: one offline HTML page, every number and name on it, pictures that show spikes and alarms."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linewatch.backtest.metrics import auroc
from linewatch.errors import DataError
from linewatch.replay.report import (
    AlertSpan,
    DetectorSeries,
    LabelSpan,
    ReplayReport,
    render_report,
    write_report,
)
from linewatch.replay.report_figures import minmax_decimate, roc_pr_points

STEP = np.timedelta64(300, "s")
T0 = np.datetime64("2026-03-01T00:00:00", "us")
NAMES = ("spc/ewma@v3", "signal/iforest@v1", "fused")


def _ar1(n: int, rng: np.random.Generator, phi: float = 0.9) -> np.ndarray:
    """Autocorrelated noise, like a real chart's score between faults (white noise would flatter the detector)."""
    e = rng.normal(0.0, 1.0, n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _utc(t: np.datetime64) -> datetime:
    return t.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)


def synthetic(n: int = 2_000, *, names: tuple[str, ...] = NAMES, seed: int = 0) -> ReplayReport:
    """Three series on one press: escape 0 seen by every detector, escape 1 missed by SPC; one open shadow alert."""
    rng = np.random.default_rng(seed)
    times = T0 + np.arange(n) * STEP
    windows = [(int(n * 0.30), int(n * 0.32)), (int(n * 0.70), int(n * 0.71))]
    labels = [LabelSpan(_utc(times[a]), _utc(times[b]), "press-1", f"escape {k}") for k, (a, b) in enumerate(windows)]
    series = []
    for k, name in enumerate(names):
        s = np.abs(_ar1(n, rng)) * 0.45
        for a, b in windows[: 1 + (k > 0)]:
            s[a:b] += 3.5 + rng.normal(0.0, 0.5, b - a)
        s[:50] = np.nan  # warm-up: not scored
        s[n // 2 + 7] = 9.5  # a one-row spike outside every window
        series.append(DetectorSeries(name, "press-1", times, s, 3.0, np.nan_to_num(s) > 3.0))
    alerts = [
        AlertSpan("a-1", "press-1", labels[0].start + timedelta(minutes=30), labels[0].end, "critical", [names[0]]),
        AlertSpan("a-2", "press-1", labels[1].start + timedelta(hours=3), None, "warning", [names[-1]], shadow=True),
    ]
    inside = np.zeros(n, bool)
    for a, b in windows:
        inside[a : b + 1] = True  # label windows include both ends
    metrics: dict[str, dict[str, object]] = {
        s.name: {"precision": 0.8125, "recall": 0.5, "f1": 0.619, "auroc": auroc(
            inside[50:], s.scores[50:]),
            "far": 0.0123, "missed_alarm_rate": None, "median_delay_s": 1800.0, "false_alarms_per_hour": 0.0217}
        for s in series}
    metrics["fused alerts"] = {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "nab_score_standard": 45.25}
    events = [
        {"asset": "press-1", "start": labels[0].start, "end": labels[0].end, "detected": True, "delay_s": 1800.0,
         "first_alarm": alerts[0].opened_at, "blamed": [names[0]]},
        {"asset": "press-1", "start": labels[1].start, "end": labels[1].end, "detected": False, "delay_s": None,
         "first_alarm": None, "blamed": []},
    ]
    return ReplayReport("run-2026-03", "Press line 1, March replay", "file:press.csv",
                        datetime(2026, 4, 1, 8, tzinfo=UTC), series, alerts, labels, metrics, events,
                        {"fusion": {"method": "fisher", "alpha": 0.001}, "spc/ewma@v3 threshold": 3.0})


def _images(page: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(m))) for m in found]


def _not_one_colour(img: Image.Image) -> bool:
    lo, hi = zip(*img.convert("RGB").getextrema(), strict=True)
    return max(hi) - min(lo) > 100


def test_the_page_is_self_contained_and_carries_every_number_and_name() -> None:
    report = synthetic()
    page = render_report(report)
    assert "http" not in page and "<script" not in page and "<link" not in page and "@import" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    for name in NAMES:
        assert page.count(escape(name)) >= 2  # metrics row and its timeline's alt / curve text
    for value in ("0.8125", "0.0123", "0.0217", "1800", "45.25", "0.6667"):
        assert value in page
    assert ">-<" in page  # missed_alarm_rate None
    assert "Caught 1 of 2 labelled windows" in page and "Missed: press-1 2026-" in page
    events = page[page.index('<table class="events">'):]
    assert events.count('<tr class="hit">') == 1 and events.count('<tr class="miss">') == 1
    assert "<th>first_alarm</th>" in events and "<th>blamed</th>" in events
    assert "fisher" in page and "run-2026-03" in page and "shadow" in page and ">open<" in page
    for name in NAMES:  # the series table's AUROC is the shared metric on the window labels
        assert f"<td class=num>{report.metrics[name]['auroc']:.4g}</td>" in page
    imgs = _images(page)
    assert len(imgs) == 2  # the asset's timelines and its ROC/PR curves
    assert all(img.width >= 1200 and _not_one_colour(img) for img in imgs)


def test_run_supplied_text_is_escaped() -> None:
    report = synthetic(names=("<b>evil</b>&co", "fused"))
    report.title = "<script>alert(1)</script>"
    report.settings = {"<i>key</i>": "<img src=x onerror=alert(1)>"}
    page = render_report(report)
    assert "<script" not in page and "<b>evil" not in page and "<img src=x" not in page and "<i>key" not in page
    assert "&lt;b&gt;evil&lt;/b&gt;&amp;co" in page and "&lt;script&gt;" in page


def test_decimation_keeps_every_alarm_the_extremes_and_the_gaps() -> None:
    rng = np.random.default_rng(3)
    n = 25_000
    times = T0 + np.arange(n) * STEP
    scores = np.abs(_ar1(n, rng))
    scores[100:180] = np.nan
    scores[20_001] = 50.0
    alarms = rng.random(n) < 0.002
    alarms[150] = True  # an alarm on a not-scored row still counts
    keep = minmax_decimate(times, scores, alarms, buckets=500)
    assert keep.size < n // 10
    assert np.all(np.diff(keep) > 0)
    assert set(np.flatnonzero(alarms).tolist()) <= set(keep.tolist())
    assert {0, n - 1, 20_001, 99, 100, 179, 180} <= set(keep.tolist())
    bucket = ((times - T0).astype(np.int64) / float((times[-1] - T0).astype(np.int64)) * 500).astype(int).clip(0, 499)
    kept = set(keep.tolist())
    for b in np.unique(bucket):
        rows = np.flatnonzero(bucket == b)
        finite = rows[~np.isnan(scores[rows])]
        if finite.size:
            assert kept & set(rows[scores[rows] == scores[finite].max()].tolist())
            assert kept & set(rows[scores[rows] == scores[finite].min()].tolist())
    # drawn line = kept rows: its envelope equals the full series' envelope
    assert np.nanmax(scores[keep]) == np.nanmax(scores) and np.nanmin(scores[keep]) == np.nanmin(scores)


def test_short_series_are_drawn_whole() -> None:
    times = T0 + np.arange(10) * STEP
    assert minmax_decimate(times, np.arange(10.0), np.zeros(10, bool), buckets=100).tolist() == list(range(10))


def test_roc_points_integrate_to_the_shared_auroc() -> None:
    rng = np.random.default_rng(7)
    labels = rng.random(3_000) < 0.1
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # rounding makes ties, which must count one half
    fpr, tpr, recall, precision = roc_pr_points(labels, scores)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(labels, scores), abs=1e-12)
    assert fpr[-1] == tpr[-1] == recall[-1] == 1.0 and precision[-1] == pytest.approx(labels.mean())


def test_empty_inputs_render_with_a_clear_message() -> None:
    report = synthetic()
    report.alerts, report.labels, report.events, report.metrics, report.settings = [], [], [], {}, {}
    page = render_report(report)
    assert "No verdict: no label windows were given." in page
    assert "No label windows for this asset: no ROC or precision-recall curve." in page
    assert "No metrics: the replay had no labels" in page and "No settings recorded" in page
    assert "No labelled windows, so no per-event results." in page
    assert len(_images(page)) == 1  # timelines still drawn, with "no alerts" in the strip
    nothing = ReplayReport("r0", "empty", "kafka:none", datetime(2026, 1, 1, tzinfo=UTC), [], [], [], {}, [])
    assert "No series, alerts or labels to draw." in render_report(nothing)


def test_a_series_with_one_class_says_so_instead_of_a_curve() -> None:
    report = synthetic(names=("spc/ewma@v3",))
    report.labels = [LabelSpan(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))]
    page = render_report(report)
    assert "spc/ewma@v3: no ROC or PR curve, the scored rows are all normal" in page
    assert len(_images(page)) == 1


def test_a_window_without_asset_applies_to_every_asset() -> None:
    report = synthetic(names=("spc/ewma@v3",))
    other = DetectorSeries("spc/ewma@v3", "press-2", report.series[0].times, report.series[0].scores[::-1].copy(),
                           3.0, report.series[0].alarms[::-1].copy())
    report.series.append(other)
    report.labels = [LabelSpan(report.labels[0].start, report.labels[0].end, None, "line stop")]
    page = render_report(report)
    assert "1 series, 2 alerts, 1 label windows" in page and "1 series, 0 alerts, 1 label windows" in page
    assert 'id="asset-1"' in page and "press-2" in page
    assert len(_images(page)) == 4  # both assets got timelines and curves from the one line-wide window


def test_a_series_without_rows_says_so() -> None:
    empty = np.array([], dtype="datetime64[us]")
    report = ReplayReport("r0", "empty", "db", datetime(2026, 1, 1, tzinfo=UTC),
                          [DetectorSeries("spc/ewma@v3", "press-9", empty, np.array([]), 3.0, np.array([], bool))],
                          [], [], {}, [])
    assert "have no rows: nothing to draw" in render_report(report)
    report.labels = [LabelSpan(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "press-9")]
    page = render_report(report)
    assert "spc/ewma@v3: no ROC or PR curve, no row was scored" in page and len(_images(page)) == 1


def test_a_malformed_series_fails_with_its_name() -> None:
    report = synthetic(names=("spc/ewma@v3",))
    report.series[0].scores = report.series[0].scores[:-1]
    with pytest.raises(DataError, match=r"spc/ewma@v3.*same replayed rows"):
        render_report(report)
    report = synthetic(names=("spc/ewma@v3",))
    report.series[0].times = report.series[0].times[::-1].copy()
    with pytest.raises(DataError, match="not sorted"):
        render_report(report)


def test_write_report_creates_the_folder(tmp_path: Path) -> None:
    out = write_report(synthetic(n=500), tmp_path / "deep" / "report.html")
    assert out.is_file() and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_nab_sized_report_is_fast_and_small() -> None:
    report = synthetic(n=25_000)
    start = time.perf_counter()
    page = render_report(report)
    elapsed = time.perf_counter() - start
    assert len(page.encode()) < 3_000_000, "three 25k-row series must stay well under a few MB"
    assert elapsed < 30, f"rendering took {elapsed:.1f}s"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)")
def test_a_real_browser_renders_the_page(tmp_path: Path) -> None:
    page = write_report(synthetic(), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
         "--window-size=1400,2400", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), f"chromium wrote no screenshot (rc {done.returncode}): {done.stderr[-2000:]}"
    assert shot.stat().st_size > 50_000
    img = Image.open(shot)
    assert img.size == (1400, 2400) and _not_one_colour(img)
    colours = img.convert("RGB").resize((140, 240)).getcolors(maxcolors=140 * 240)
    assert colours is not None and len(colours) > 50  # text, tables and charts, not a blank or an error page


def test_infinite_scores_and_thresholds_are_drawn_not_fatal() -> None:
    report = synthetic(names=("spc/ewma@v3", "image/patchcore@v2"))
    spike = int(np.flatnonzero(~np.isnan(report.series[0].scores))[10])
    report.series[0].scores[spike] = np.inf  # p underflowed to 0 on a clearly faulty row
    report.series[1].threshold = float("inf")  # uncalibrated: scores, never alarms
    report.series[1].alarms[:] = False
    page = render_report(report)
    assert "<td class=num>inf</td>" in page and len(_images(page)) == 2
