"""The dashboards' main views as pictures: matplotlib figures from query results, PNG files and one HTML page.

For people without a Grafana at hand (an e-mail, a shift report, the README): ``linewatch report`` fetches the
registry queries the dashboards run (:mod:`linewatch.dashboards.report_data`) and this module draws them the
way the panels do, overview, one asset, the SPC chart of one characteristic and drift, and writes
``report-<view>.png`` plus ``report.html``, which embeds the pictures as base64 and a few small tables, so the
page is one file that opens anywhere with nothing fetched.

Pure rendering: :class:`~matplotlib.figure.Figure` objects on the Agg canvas, never ``pyplot`` (no global
state, safe in a worker thread). A view with no rows still gets a picture and a line that says so.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.dashboards.report_data import Frame, ReportData

#: The views, in page order: file stem -> title.
VIEW_TITLES: dict[str, str] = {
    "overview": "Plant overview",
    "asset": "Asset: calibrated scores against thresholds",
    "spc": "SPC: individuals chart",
    "drift": "Drift: model calibration",
}
SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
_DPI = 110
_MAX_LEGEND = 10
HTML_FILE = "report.html"


@dataclass(frozen=True)
class View:
    """One rendered view: its stem (``report-<stem>.png``), title, the figure, what it is about, its tables
    (title, frame, columns to show) and a note when it has no data."""

    stem: str
    title: str
    figure: Any
    subtitle: str
    tables: tuple[tuple[str, Frame, tuple[str, ...]], ...] = ()
    empty: str | None = None

    @property
    def file(self) -> str:
        return f"report-{self.stem}.png"


# --- figure helpers ---------------------------------------------------------------------------------------

def _figure(height: float, width: float = 12.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _time_axis(ax: Any, start: datetime, end: datetime) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=start.tzinfo))
    ax.set_xlim(start, end)
    ax.grid(True, alpha=0.3)


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="#666666",
            wrap=True)
    ax.set_yticks([])
    ax.set_xticks([])


def _legend(ax: Any, n: int, title: str | None = None) -> None:
    if 0 < n <= _MAX_LEGEND:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title=title,
                  title_fontsize=8)
    elif n > _MAX_LEGEND:
        ax.text(1.01, 1.0, f"{n} series\n(top {_MAX_LEGEND} named)", transform=ax.transAxes, fontsize=8,
                va="top")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[:_MAX_LEGEND], labels[:_MAX_LEGEND], loc="upper left", bbox_to_anchor=(1.01, 0.9),
                  fontsize=7, frameon=False)


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _range_text(data: ReportData) -> str:
    return (f"{data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} UTC, "
            f"{data.interval_s:g} s buckets")


def _stat(frame: Frame) -> int:
    return int(frame.rows[0][0]) if frame.rows and frame.rows[0][0] is not None else 0


# --- the four views ---------------------------------------------------------------------------------------

def overview_view(data: ReportData) -> View:
    """Open alerts by asset and severity beside the fused score per asset over time (overview dashboard)."""
    by_asset, heat = data.frame("overview.open-by-asset"), data.frame("overview.fused-heatmap")
    stats = (f"open alerts {_stat(data.frame('overview.open-alerts'))} "
             f"(critical {_stat(data.frame('overview.critical-open'))}), "
             f"incidents in range {_stat(data.frame('overview.incidents'))}, "
             f"dead letters {_stat(data.frame('overview.deadletters'))}")
    fig = _figure(5.2)
    left, right = fig.subplots(1, 2, width_ratios=[1, 2.2])
    fig.suptitle(f"{VIEW_TITLES['overview']}: {stats}", fontsize=12)
    left.set_title("Open alerts by asset and severity (now)", fontsize=10)
    if by_asset.rows:
        assets = by_asset.column("asset")[::-1]
        y, base = np.arange(len(assets)), np.zeros(len(assets))
        for severity, colour in SEVERITY_COLOURS.items():
            counts = _floats(by_asset.column(severity)[::-1])
            left.barh(y, counts, left=base, color=colour, label=severity, height=0.6)
            base += counts
        left.set_yticks(y, assets, fontsize=8)
        left.set_xlabel("open alerts")
        left.xaxis.get_major_locator().set_params(integer=True)
        left.legend(fontsize=8, frameon=False, loc="lower right")
        left.grid(True, axis="x", alpha=0.3)
    else:
        n = _stat(data.frame("overview.incidents"))
        _no_data(left, "no open alerts" + (f"\n({n} routed incident(s) in range, all closed)" if n else ""))
    right.set_title("Fused alert score per asset (max per bucket; blank = no alert activity)", fontsize=10)
    if heat.rows:
        import matplotlib.dates as mdates

        series = heat.series("fused score")
        names = sorted(series)
        edges = np.arange(mdates.date2num(data.start), mdates.date2num(data.end) + 1e-9,
                          data.interval_s / 86400.0)
        if len(edges) < 2:
            edges = np.array([mdates.date2num(data.start), mdates.date2num(data.end)])
        grid = np.full((len(names), len(edges) - 1), np.nan)
        for i, name in enumerate(names):
            times, values = series[name]
            cols = np.clip(np.searchsorted(edges, mdates.date2num(times), side="right") - 1, 0, len(edges) - 2)
            np.fmax.at(grid[i], cols, _floats(values))
        mesh = right.pcolormesh(edges, np.arange(len(names) + 1), np.ma.masked_invalid(grid), cmap=_heat_cmap(),
                                shading="flat", vmin=0)
        right.set_yticks(np.arange(len(names)) + 0.5, names, fontsize=8)
        right.invert_yaxis()
        fig.colorbar(mesh, ax=right, label="fused score (-log10 p)", pad=0.01)
        _time_axis(right, data.start, data.end)
    else:
        _no_data(right, "no routed anomaly alerts in range")
    incidents = data.frame("overview.incidents-table")
    return View("overview", VIEW_TITLES["overview"], fig, stats,
                (("Recent incidents", incidents, ("opened", "asset", "kind", "severity", "max score", "state",
                                                   "contributors", "disposition", "shadow")),),
                None if by_asset.rows or heat.rows or incidents.rows else "No open alerts and no alerts in range.")


def asset_view(data: ReportData) -> View:
    """Each modality's calibrated score per detector with its threshold, alerts shaded (asset dashboard)."""
    from linewatch.dashboards.queries import MODALITIES

    fig = _figure(7.5)
    axes = fig.subplots(len(MODALITIES), 1, sharex=True)
    name = data.asset or "any asset"
    fig.suptitle(f"{VIEW_TITLES['asset']}: {name}", fontsize=12)
    alerts = data.frame("asset.annotation.alerts").records()
    colours = _colour_cycle()
    any_rows = False
    for ax, modality in zip(axes, MODALITIES, strict=True):
        frame = data.frame(f"asset.score.{modality}")
        ax.set_title(f"{modality}: calibrated score (-log10 tail probability), threshold dashed", fontsize=10,
                     loc="left")
        for a in alerts:
            ax.axvspan(a["time"], a["timeend"] or data.end, color=SEVERITY_COLOURS.get(a["tags"].split(",")[0],
                                                                                        "#d62728"),
                       alpha=0.12, lw=0)
        if not frame.rows:
            _no_data(ax, f"no {modality} scores for {name} in range")
            _time_axis(ax, data.start, data.end)
            continue
        any_rows = True
        scores, thresholds = frame.series("score"), frame.series("threshold")
        for detector in sorted(scores):
            colour = next(colours)
            times, values = scores[detector]
            ax.plot(times, _floats(values), color=colour, lw=1.2, label=detector)
            ax.plot(times, _floats(thresholds[detector][1]), color=colour, lw=1, ls="--", alpha=0.8)
        ax.set_ylabel("score")
        ax.set_ylim(bottom=0)
        _legend(ax, len(scores), "detector")
        _time_axis(ax, data.start, data.end)
    if alerts:
        axes[-1].set_xlabel(f"shaded: {len(alerts)} alert(s) on this asset, open to close (red critical, "
                            "orange warning, blue info)", fontsize=8)
    return View("asset", VIEW_TITLES["asset"], fig, f"asset {name}, {len(alerts)} alert(s) in range",
                (("Alerts on this asset", data.frame("asset.annotation.alerts"), ("time", "timeend", "text")),),
                None if any_rows else f"No scores for {name} in range.")


def spc_view(data: ReportData) -> View:
    """The individuals chart (value, centre line, control and spec limits, rule violations) and its moving
    range (SPC dashboard)."""
    chart, mr = data.frame("spc.individuals"), data.frame("spc.moving-range")
    series = f"{data.asset} / {data.sku} / {data.characteristic}" if data.characteristic else "(no characteristic)"
    fig = _figure(6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    fig.suptitle(f"{VIEW_TITLES['spc']}: {series}", fontsize=12)
    top.set_title("Individuals: centre line and 3-sigma limits from the Phase I baseline, spec limits, "
                  "points completing a Nelson rule", fontsize=10, loc="left")
    if chart.rows:
        t = chart.column("time")
        top.plot(t, _floats(chart.column("value")), color="#1f77b4", lw=0.9, marker=".", ms=3, label="value")
        for column, style in (("centre line", {"color": "#2ca02c", "lw": 1.3}),
                              ("UCL", {"color": "#d62728", "ls": "--", "lw": 1.1}),
                              ("LCL", {"color": "#d62728", "ls": "--", "lw": 1.1}),
                              ("USL", {"color": "#ff7f0e", "ls": "-.", "lw": 1.5}),
                              ("LSL", {"color": "#ff7f0e", "ls": "-.", "lw": 1.5})):
            values = _floats(chart.column(column))
            if not np.isnan(values).all():
                top.plot(t, values, label=column, **style)
        ooc = _floats(chart.column("out of control"))
        n_ooc = int(np.count_nonzero(~np.isnan(ooc)))
        top.plot(t, ooc, ls="none", marker="o", ms=6, mfc="none", mec="#d62728", mew=1.5,
                 label=f"out of control ({n_ooc})")
        top.set_ylabel(data.characteristic or "value")
        _legend(top, 7)
    else:
        _no_data(top, f"no measurements of {series} in range")
    bottom.set_title("Moving range, UCL = 3.267 MR-bar", fontsize=10, loc="left")
    if mr.rows:
        t = mr.column("time")
        bottom.plot(t, _floats(mr.column("moving range")), color="#1f77b4", lw=0.8, label="moving range")
        bottom.plot(t, _floats(mr.column("MR UCL")), color="#d62728", ls="--", lw=1.1, label="MR UCL")
        bottom.set_ylabel("|x(i) - x(i-1)|")
        bottom.set_ylim(bottom=0)
        _legend(bottom, 2)
    else:
        _no_data(bottom, "no moving range")
    for ax in (top, bottom):
        _time_axis(ax, data.start, data.end)
    return View("spc", VIEW_TITLES["spc"], fig, series,
                (("Rule violations", data.frame("spc.violations"), ("time", "part", "value", "z", "rules")),
                 ("Capability per day", data.frame("spc.capability-daily"),
                  ("day", "n", "mean", "s within", "lsl", "usl", "cp", "cpk", "pp", "ppk"))),
                None if chart.rows else f"No SPC measurements of {series} in range.")


def drift_view(data: ReportData) -> View:
    """Score and input drift (PSI) per model version and the alarm rate against the calibrated promise
    (drift dashboard)."""
    score, inputs, rate = (data.frame(k) for k in ("drift.score-psi", "drift.input-psi", "drift.alarm-rate"))
    name = data.asset or "any asset"
    fig = _figure(7.5)
    axes = fig.subplots(3, 1, sharex=True)
    fig.suptitle(f"{VIEW_TITLES['drift']}: {name}", fontsize=12)
    # one colour per "detector model_version", the same in every panel (input series start with it)
    versions = sorted({*score.series("PSI"), *rate.series("alarm rate")}) if score.rows or rate.rows else []
    palette = _colour_cycle()
    colour_of = {v: next(palette) for v in versions}

    def colour(metric: str) -> Any:
        owner = next((v for v in versions if metric == v or metric.startswith(v + " ")), None)
        return colour_of[owner] if owner else colour_of.setdefault(metric, next(palette))

    for ax, frame, kind, title in (
            (axes[0], score, "score", "Score drift: PSI of tail probabilities against Uniform(0, 1)"),
            (axes[1], inputs, "input", "Input drift: PSI per feature against the training reference")):
        ax.set_title(title + " (dashed: 0.1 watch, 0.25 drifted)", fontsize=10, loc="left")
        if frame.rows:
            series = frame.series("PSI")
            ranked = sorted(series, key=lambda m: -np.nanmax(_floats(series[m][1]), initial=0))
            for metric in ranked:
                times, values = series[metric]
                ax.plot(times, _floats(values), marker=".", ms=4, lw=1, color=colour(metric), label=metric)
            for level, line_colour in ((0.1, "#ff7f0e"), (0.25, "#d62728")):
                ax.axhline(level, color=line_colour, ls="--", lw=1)
            ax.set_ylabel("PSI")
            ax.set_ylim(bottom=0)
            _legend(ax, len(series), "detector model version" + (" feature" if kind == "input" else ""))
        else:
            _no_data(ax, f"no {kind} drift checks for {name} in range")
    ax = axes[2]
    ax.set_title("Alarm rate per check window (dots) against the promised false-alarm rate (dashed, band: its "
                 "90 % interval)", fontsize=10, loc="left")
    if rate.rows:
        observed, promised = rate.series("alarm rate"), rate.series("promised")
        low, high = rate.series("promise low"), rate.series("promise high")
        for metric in sorted(observed):
            times = observed[metric][0]
            ax.fill_between(times, _floats(low[metric][1]), _floats(high[metric][1]), color=colour(metric),
                            alpha=0.12, lw=0)
            ax.plot(times, _floats(promised[metric][1]), color=colour(metric), ls="--", lw=1)
            ax.plot(times, _floats(observed[metric][1]), color=colour(metric), marker=".", ms=5, lw=1.2,
                    label=metric)
        # the promise is ~0.1 % and a drifted model alarms on tens of %: linear near 0, logarithmic above
        positive = _floats([v for m in promised.values() for v in m[1]])
        floor = float(np.nanmin(positive[positive > 0])) if (positive > 0).any() else 1e-3
        ax.set_yscale("symlog", linthresh=floor, linscale=0.5)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(_percent)
        ax.set_ylabel("share of verdicts")
        _legend(ax, len(observed), "detector model version")
    else:
        _no_data(ax, f"no alarm-rate checks for {name} in range")
    for a in axes:
        _time_axis(a, data.start, data.end)
    return View("drift", VIEW_TITLES["drift"], fig, f"asset {name}",
                (("Latest drift check per model version", data.frame("drift.latest"),
                  ("checked", "detector", "model version", "kind", "feature", "psi", "drifted", "retrain")),),
                None if score.rows or inputs.rows or rate.rows else f"No drift checks for {name} in range.")


def _heat_cmap() -> Any:
    """inferno_r without its palest end, so a low score still shows against the blank (no activity) cells."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    return ListedColormap(matplotlib.colormaps["inferno_r"](np.linspace(0.18, 1.0, 256)), name="lw_heat")


def _percent(value: float, _pos: int | None = None) -> str:
    return f"{100 * value:.3g} %"


def _colour_cycle() -> Any:
    from itertools import cycle

    import matplotlib

    return cycle(matplotlib.colormaps["tab10"].colors)


#: Every view's renderer, in page order.
VIEWS: dict[str, Callable[[ReportData], View]] = {
    "overview": overview_view, "asset": asset_view, "spc": spc_view, "drift": drift_view,
}


# --- files ------------------------------------------------------------------------------------------------

def render_views(data: ReportData) -> list[View]:
    """Every view's figure (nothing written yet)."""
    return [render(data) for render in VIEWS.values()]


def _cell(value: Any) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _table(title: str, frame: Frame, columns: Sequence[str], limit: int = 15) -> str:
    shown = [c for c in columns if c in frame.columns]
    if not frame.rows:
        return f"<h3>{html.escape(title)}</h3><p class=empty>none in range</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in shown) + "</tr>"
                   for r in frame.records()[:limit])
    more = f"<p class=more>{len(frame) - limit} more rows</p>" if len(frame) > limit else ""
    return f"<h3>{html.escape(title)}</h3><table><tr>{head}</tr>{body}</table>{more}"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1340px;color:#222}
h2{margin-top:2em;border-bottom:1px solid #ccc}img{max-width:100%;border:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
th{background:#f4f4f4}.empty{color:#a00}.more,.meta{color:#666;font-size:13px}"""


def render_html(data: ReportData, views: Sequence[View], pngs: dict[str, bytes]) -> str:
    """One self-contained page: each view's PNG as a base64 ``data:`` URI, its note and its small tables."""
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>linewatch report</title>"
             f"<style>{_CSS}</style></head><body><h1>linewatch report</h1>"
             f"<p class=meta>{html.escape(_range_text(data))}; asset {html.escape(str(data.asset))}, "
             f"characteristic {html.escape(str(data.sku))} / {html.escape(str(data.characteristic))}; "
             f"queried as {html.escape(data.role or 'the login itself')} with the dashboards' own queries "
             f"(linewatch/dashboards/queries.py)</p>"]
    for view in views:
        encoded = base64.b64encode(pngs[view.file]).decode("ascii")
        parts.append(f"<h2 id={view.stem}>{html.escape(view.title)}</h2>"
                     f"<p class=meta>{html.escape(view.subtitle)}</p>")
        if view.empty:
            parts.append(f"<p class=empty>{html.escape(view.empty)}</p>")
        parts.append(f'<img alt="{html.escape(view.file)}" src="data:image/png;base64,{encoded}">')
        parts += [_table(title, frame, columns) for title, frame, columns in view.tables]
    parts.append("</body></html>\n")
    return "".join(parts)


def png_bytes(figure: Any) -> bytes:
    """A figure as PNG bytes (Agg)."""
    from io import BytesIO

    buf = BytesIO()
    figure.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def write_report(data: ReportData, out_dir: Path) -> list[Path]:
    """Write ``report-<view>.png`` for every view and ``report.html`` under ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    views = render_views(data)
    pngs = {v.file: png_bytes(v.figure) for v in views}
    paths = []
    for name, blob in pngs.items():
        (out_dir / name).write_bytes(blob)
        paths.append(out_dir / name)
    (out_dir / HTML_FILE).write_text(render_html(data, views, pngs), encoding="utf-8")
    return [*paths, out_dir / HTML_FILE]
