"""``linewatch replay --report OUT.html``: one self-contained HTML page that says whether the escape was caught.

The page is read offline, mailed around and attached to quality reports, so it carries
everything itself: inline CSS, no script, no font or CDN, pictures as base64 PNG data URIs
(:mod:`linewatch.replay.report_figures`). Every piece of text from the run (asset ids, detector
names, settings, event fields) goes through :func:`html.escape`.

Reading order, top to bottom: the verdict (labelled windows caught by the fused alerts), the run
and its settings, the metrics table, then per asset the score timelines (threshold, alarms,
label windows shaded, alert spans as bars) with ROC and precision-recall curves, and last the
per-event table.

>>> from datetime import UTC, datetime
>>> import numpy as np
>>> t = np.arange(0, 600, 60).astype("datetime64[s]").astype("datetime64[us]")
>>> s = DetectorSeries("spc/ewma@v1", "press-1", t, np.linspace(0, 5, 10), 3.0, np.linspace(0, 5, 10) > 3)
>>> r = ReplayReport("r1", "demo", "file", datetime(2026, 1, 1, tzinfo=UTC), [s], [], [], {}, [])
>>> page = render_report(r)
>>> page.startswith("<!DOCTYPE html>"), "spc/ewma@v1" in page, "<script" in page
(True, True, False)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path

import numpy as np

from linewatch.backtest.metrics import auroc
from linewatch.errors import DataError
from linewatch.replay.evaluate import AlertSpan, as_utc64
from linewatch.replay.report_figures import (
    Bar,
    Curve,
    Trace,
    Window,
    curves_png,
    roc_pr_points,
    timeline_png,
    window_mask,
)

#: Metrics shown first and in this order; any other key the lead adds follows, in first-seen order.
METRIC_ORDER = ("precision", "recall", "f1", "auroc", "far", "missed_alarm_rate", "median_delay_s",
                "false_alarms_per_hour", "nab_score_standard", "nab_score_low_fp", "nab_score_low_fn")
#: Event columns shown first; extra keys follow.
EVENT_ORDER = ("asset", "start", "end", "detected", "delay_s", "first_alarm", "blamed")
#: The metrics row for the fused alerts, named as the lead fills ``ReplayReport.metrics``.
FUSED_ALERTS = "fused alerts"
MISSING = "-"


@dataclass
class DetectorSeries:
    """One detector's (or the fusion's) calibrated scores for one asset over the replayed span."""

    name: str  # e.g. "spc/ewma@v3" (modality/detector@version), or "fused" for the fused unit scores
    asset_id: str
    times: np.ndarray  # datetime64[us], sorted
    scores: np.ndarray  # calibrated score (-log10 tail probability); NaN = not scored
    threshold: float
    alarms: np.ndarray  # bool


@dataclass
class LabelSpan:
    """A known-anomalous window; ``asset_id`` None = it applies to every asset (a line-wide event)."""

    start: datetime
    end: datetime
    asset_id: str | None = None
    name: str = ""


@dataclass
class ReplayReport:
    """Everything the page shows; the replay command fills it, :func:`render_report` only draws it."""

    run_id: str
    title: str
    source: str
    created_at: datetime
    series: list[DetectorSeries]
    alerts: list[AlertSpan]
    labels: list[LabelSpan]
    metrics: dict[str, dict[str, object]]  # per series name (and "fused alerts")
    events: list[dict[str, object]]  # per labelled window: asset, start, end, detected, delay_s, first_alarm, blamed
    settings: dict[str, object] = field(default_factory=dict)  # models, thresholds, fusion config


def _check(series: DetectorSeries) -> None:
    """Fail on a malformed series here, with its name, rather than deep inside matplotlib."""
    n = series.times.shape[0] if series.times.ndim == 1 else -1
    if n < 0 or series.scores.shape != (n,) or series.alarms.shape != (n,):
        raise DataError(
            f"series {series.name!r} for asset {series.asset_id!r}: times, scores and alarms must be 1-D of one "
            f"length, got {series.times.shape}, {series.scores.shape}, {series.alarms.shape}; build them from the "
            "same replayed rows")
    if not np.issubdtype(series.times.dtype, np.datetime64):
        raise DataError(f"series {series.name!r}: times must be datetime64[us], got {series.times.dtype}")
    if n > 1 and (np.diff(series.times.astype("datetime64[us]").astype(np.int64)) < 0).any():
        raise DataError(f"series {series.name!r} for asset {series.asset_id!r}: times are not sorted; sort the rows "
                        "by event time before building the report")


def _fmt(value: object) -> str:
    """One cell's text: None as '-', floats to 4 significant digits, datetimes in ISO, lists comma-joined."""
    if value is None:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return MISSING if np.isnan(value) else f"{float(value):.4g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, np.datetime64):
        return str(value.astype("datetime64[s]")).replace("T", " ")
    if isinstance(value, list | tuple | set):
        return ", ".join(_fmt(v) for v in value) or MISSING
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _cell(value: object, tag: str = "td") -> str:
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return f'<{tag}{" class=num" if numeric else ""}>{escape(_fmt(value))}</{tag}>'


def _columns(rows: Iterable[dict[str, object]], first: Sequence[str]) -> list[str]:
    seen = dict.fromkeys(k for row in rows for k in row)
    return [k for k in first if k in seen] + [k for k in seen if k not in first]


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], css: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _verdict(report: ReplayReport) -> str:
    """The one line a reader wants first: how many labelled windows the alerts caught, and which were missed."""
    if not report.events:
        why = "no label windows were given" if not report.labels else "no per-event results were computed"
        return f'<div class="verdict none">No verdict: {escape(why)}.</div>'
    caught = [e for e in report.events if e.get("detected")]
    missed = [e for e in report.events if not e.get("detected")]
    css = "ok" if not missed else ("bad" if not caught else "mixed")
    text = f"Caught {len(caught)} of {len(report.events)} labelled windows"
    if missed:
        where = "; ".join(f"{_fmt(e.get('asset'))} {_fmt(e.get('start'))}" for e in missed[:5])
        text += f". Missed: {where}" + (f" and {len(missed) - 5} more" if len(missed) > 5 else "")
    return f'<div class="verdict {css}">{escape(text)}.</div>'


def _metrics_section(metrics: dict[str, dict[str, object]]) -> str:
    if not metrics:
        return _note("No metrics: the replay had no labels to score against.")
    cols = _columns(metrics.values(), METRIC_ORDER)
    rows = [[name, *(m.get(c) for c in cols)] for name, m in metrics.items()]
    rows.sort(key=lambda r: r[0] == FUSED_ALERTS, reverse=True)  # the fused verdict first, then the detectors
    return _table(["series", *cols], rows, "metrics")


def _settings_section(settings: dict[str, object]) -> str:
    if not settings:
        return _note("No settings recorded for this run.")
    return _table(["setting", "value"], list(settings.items()), "settings")


def _windows(labels: Sequence[LabelSpan], asset: str) -> list[Window]:
    return [Window(as_utc64(lb.start), as_utc64(lb.end)) for lb in labels if lb.asset_id in (None, asset)]


def _span(traces: Sequence[Trace], windows: Sequence[Window],
          alerts: Sequence[AlertSpan]) -> tuple[np.datetime64, np.datetime64] | None:
    """The asset's x-range: every row, label window and alert open/close time; None when there is none."""
    moments = [t for tr in traces if tr.times.size for t in (tr.times[0], tr.times[-1])]
    moments += [m for w in windows for m in (w.start, w.end)]
    moments += [as_utc64(a.opened_at) for a in alerts] + [as_utc64(a.closed_at) for a in alerts if a.closed_at]
    if not moments:
        return None
    lo, hi = min(moments), max(moments)
    if hi <= lo:  # one instant: widen by a minute so the axis has a width
        hi = lo + np.timedelta64(60_000_000, "us")
    return lo, hi


def _drawable(scores: np.ndarray) -> np.ndarray:
    """Scores for the line: +inf drawn 10% above the highest finite score instead of vanishing from the chart."""
    scores = scores.astype(np.float64)
    finite = scores[np.isfinite(scores)]
    top = float(finite.max()) if finite.size else 1.0
    return np.where(scores == np.inf, top + 0.1 * max(abs(top), 1.0), np.where(scores == -np.inf, np.nan, scores))


def _rankable(scores: np.ndarray) -> np.ndarray:
    """Infinite scores (p underflowed to 0) moved just past the finite ones: same order, finite for the ranks."""
    finite = scores[np.isfinite(scores)]
    top, bottom = (finite.max(), finite.min()) if finite.size else (0.0, 0.0)
    return np.where(scores == np.inf, top + 1.0, np.where(scores == -np.inf, bottom - 1.0, scores))


def _curve(series: DetectorSeries, windows: Sequence[Window]) -> Curve | str:
    """The series' ROC/PR curve, or the reason there is none (a curve needs both classes)."""
    times = series.times.astype("datetime64[us]")
    scored = ~np.isnan(series.scores)
    labels = window_mask(times, windows)[scored]
    scores = _rankable(series.scores[scored].astype(np.float64))
    if not scores.size:
        return f"{series.name}: no ROC or PR curve, no row was scored"
    value = auroc(labels, scores)
    if value is None:
        n_pos = int(labels.sum())
        return (f"{series.name}: no ROC or PR curve, the scored rows are all "
                f"{'anomalous' if n_pos else 'normal'} ({scores.size} rows, {n_pos} inside a label window)")
    fpr, tpr, recall, precision = roc_pr_points(labels, scores)
    return Curve(series.name, fpr, tpr, recall, precision, value)


def _series_table(series: Sequence[DetectorSeries], found: Sequence[Curve | str | None]) -> str:
    """The drawn series as text too: names searchable in the page, counts and the AUROC the pictures show."""
    rows = []
    for s, curve in zip(series, found, strict=True):
        scored = ~np.isnan(s.scores)
        rows.append([s.name, float(s.threshold), int(s.scores.size), int(scored.sum()), int(np.count_nonzero(s.alarms)),
                     float(np.max(s.scores[scored])) if scored.any() else None,  # inf shown as inf: p underflowed
                     curve.auroc if isinstance(curve, Curve) else None,
                     s.times[0] if s.times.size else None, s.times[-1] if s.times.size else None])
    header = ["series", "threshold", "rows", "scored", "alarms", "max score", "AUROC vs windows", "first", "last"]
    return _table(header, rows, "series")


def _alerts_table(alerts: Sequence[AlertSpan]) -> str:
    rows = [[a.alert_id, a.opened_at, a.closed_at if a.closed_at else "open", a.severity, a.contributors,
             "shadow" if a.shadow else "live"] for a in alerts]
    return _table(["alert", "opened", "closed", "severity", "contributors", "mode"], rows, "alerts")


def _asset_section(i: int, asset: str, series: Sequence[DetectorSeries], alerts: Sequence[AlertSpan],
                   labels: Sequence[LabelSpan]) -> str:
    """One asset: its timelines, the series table, ROC/PR curves and its alerts; a note where a part cannot be."""
    windows = _windows(labels, asset)
    traces = [Trace(s.name, s.times.astype("datetime64[us]"), _drawable(s.scores), float(s.threshold),
                    s.alarms.astype(bool)) for s in series]
    parts = [f'<section id="asset-{i}"><h2>{escape(asset)}</h2>']
    facts = f"{len(series)} series, {len(alerts)} alerts, {len(windows)} label windows"
    parts.append(f'<p class="facts">{escape(facts)}</p>')
    if not series:
        parts.append(_note("No scored series for this asset; only its alerts and label windows are drawn."))
    span = _span(traces, windows, alerts)
    if span is None:
        parts.append(_note("The series of this asset have no rows: nothing to draw."))
    else:
        bars = [Bar(as_utc64(a.opened_at), as_utc64(a.closed_at) if a.closed_at else span[1], a.severity, a.shadow,
                    a.closed_at is None) for a in alerts]
        parts.append(f'<img class="timeline" alt="score timelines for {escape(asset)}" '
                     f'src="{timeline_png(traces, windows, bars, span)}">')
    found = [_curve(s, windows) if windows else None for s in series]
    curves = [c for c in found if isinstance(c, Curve)]
    if series:
        parts.append(_series_table(series, found))
    if not windows:
        parts.append(_note("No label windows for this asset: no ROC or precision-recall curve."))
    elif curves:
        parts.append(f'<img class="curves" alt="ROC and precision-recall for {escape(asset)}" '
                     f'src="{curves_png(curves)}">')
    parts += [_note(c) for c in found if isinstance(c, str)]
    if alerts:
        parts.append("<h3>Alerts</h3>" + _alerts_table(alerts))
    return "".join(parts) + "</section>"


def _events_section(events: Sequence[dict[str, object]]) -> str:
    if not events:
        return _note("No labelled windows, so no per-event results.")
    cols = _columns(events, EVENT_ORDER)
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join(f'<tr class="{"hit" if e.get("detected") else "miss"}">' + "".join(_cell(e.get(c)) for c in cols)
                   + "</tr>" for e in events)
    return f'<table class="events"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1340px;color:#222}
h1{margin:0 0 .2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;display:block;margin:.5em 0}
.verdict{font-size:1.2em;padding:.6em 1em;margin:.8em 0;border-radius:4px}.ok{background:#d9f0d3}
.bad{background:#f4cccc}.mixed{background:#fde9c8}.none{background:#eee}.note{color:#555;font-style:italic}
tr.miss td{background:#fbe3e3}tr.hit td{background:#eef7ec}.facts{color:#555;margin:0}nav a{margin-right:1em}
.meta td:first-child{font-weight:600}
"""


def render_report(report: ReplayReport) -> str:
    """The whole page as one HTML string: no external reference, every run-supplied text escaped."""
    for s in report.series:
        _check(s)
    assets = list(dict.fromkeys([s.asset_id for s in report.series] + [a.asset_id for a in report.alerts]
                                + [lb.asset_id for lb in report.labels if lb.asset_id is not None]))
    facts = [("run id", report.run_id), ("source", report.source), ("created", report.created_at),
             ("series", len(report.series)), ("alerts", len(report.alerts)), ("label windows", len(report.labels))]
    rows = "".join(f"<tr>{_cell(k)}{_cell(v)}</tr>" for k, v in facts)
    meta = f'<table class="meta"><tbody>{rows}</tbody></table>'
    nav = "".join(f'<a href="#asset-{i}">{escape(a)}</a>' for i, a in enumerate(assets))
    body = [f"<h1>{escape(report.title)}</h1>", _verdict(report), meta,
            "<h2>Settings</h2>", _settings_section(report.settings),
            "<h2>Metrics</h2>", _metrics_section(report.metrics),
            "<h2>Assets</h2>", f"<nav>{nav}</nav>" if assets else _note("No series, alerts or labels to draw.")]
    body += [_asset_section(i, a, [s for s in report.series if s.asset_id == a],
                            [x for x in report.alerts if x.asset_id == a], report.labels) for i, a in enumerate(assets)]
    body += ["<h2>Labelled windows</h2>", _events_section(report.events)]
    title = re.sub(r"\s+", " ", f"{report.title} - {report.run_id}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(report: ReplayReport, path: Path) -> Path:
    """Render and write the page (UTF-8), creating the folder; returns the path for the CLI to print."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(report), encoding="utf-8")
    return path
