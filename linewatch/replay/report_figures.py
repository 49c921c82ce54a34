"""The report's pictures: score timelines and ROC / precision-recall curves as inline base64 PNG.

Why PNG and not SVG: several matplotlib SVGs in one page share glyph and clip-path ids, and an
SVG carries the ``http://www.w3.org`` namespace; a PNG data URI is one opaque string that every
browser shows offline. Figures are built with :class:`matplotlib.figure.Figure` on the Agg
canvas, never through ``pyplot``, so no global figure state leaks between reports or threads.

Drawing 25,000 points per series is wasteful when the axis is ~1,300 pixels wide, so lines are
decimated with :func:`minmax_decimate`: per pixel bucket it keeps the lowest and the highest
score (a one-row spike survives), the edges of every not-scored gap, and every alarm.

>>> import numpy as np
>>> t = np.arange(10_000).astype("datetime64[s]").astype("datetime64[us]")
>>> y = np.zeros(10_000); y[1234] = 9.0
>>> alarms = np.zeros(10_000, bool); alarms[[5, 6, 7]] = True
>>> keep = minmax_decimate(t, y, alarms, buckets=100)
>>> keep.size < 500, 1234 in keep, {5, 6, 7} <= set(keep.tolist())
(True, True, True)
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

#: Figure width in inches at :data:`DPI`; 13 in x 100 dpi fits a 1,400-px browser window.
FIGURE_WIDTH_IN = 13.0
DPI = 100
#: Decimation buckets for a timeline: about one per horizontal pixel of the plot area.
PIXEL_BUCKETS = 1200
#: A ROC or PR curve needs no more points than this to look smooth at its drawn size.
CURVE_POINTS = 2000
#: Layout in inches (fixed, so figures render fast and line up from asset to asset).
MARGIN_LEFT_IN, MARGIN_RIGHT_IN, MARGIN_TOP_IN, MARGIN_BOTTOM_IN = 1.0, 0.2, 0.3, 0.65
STRIP_IN, PANEL_IN, PANEL_GAP_IN, CURVES_IN = 0.45, 1.6, 0.35, 4.6
#: PNG palette size: charts use a dozen colours plus anti-aliasing shades; 64 keeps text and lines smooth.
PALETTE_COLOURS = 64
#: Severity -> bar colour for alert spans; an unknown severity is drawn grey.
SEVERITY_COLOURS = {"critical": "#b2182b", "high": "#d6604d", "warning": "#f4a582", "low": "#92c5de", "info": "#4393c3"}
LABEL_SHADE = "#fdb863"


@dataclass(frozen=True)
class Window:
    """A label window in plot units (naive UTC ``datetime64[us]``)."""

    start: np.datetime64
    end: np.datetime64


@dataclass(frozen=True)
class Bar:
    """An alert span in plot units; ``end`` already extended to the plot's end when the alert is open."""

    start: np.datetime64
    end: np.datetime64
    severity: str
    shadow: bool
    open: bool


@dataclass(frozen=True)
class Trace:
    """One series as the timeline draws it."""

    name: str
    times: np.ndarray
    scores: np.ndarray
    threshold: float
    alarms: np.ndarray


@dataclass(frozen=True)
class Curve:
    """One series' ROC and PR points against the label windows, with its AUROC for the legend."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    auroc: float


def minmax_decimate(times: np.ndarray, scores: np.ndarray, alarms: np.ndarray, *, buckets: int = PIXEL_BUCKETS,
                    span: tuple[np.datetime64, np.datetime64] | None = None) -> np.ndarray:
    """Sorted row indices worth drawing: per time bucket its min and max, gap edges, the ends and every alarm.

    ``span`` is the shared x-range of the figure (so buckets line up with pixels across stacked
    axes); by default the series' own first and last time. NaN (not scored) rows are never a
    bucket's min or max, but the first and last row of each NaN run are kept so the line shows
    the gap instead of bridging it.
    """
    n = scores.size
    if n <= 2 * buckets:
        return np.arange(n)
    t = times.astype("datetime64[us]").astype(np.int64).astype(np.float64)
    lo, hi = (t[0], t[-1]) if span is None else (float(span[0].astype(np.int64)), float(span[1].astype(np.int64)))
    width = max(hi - lo, 1.0)
    bucket = np.clip(((t - lo) / width * buckets).astype(np.int64), 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])  # times are sorted, so buckets are runs
    counts = np.diff(np.r_[starts, n])
    nan = np.isnan(scores)
    keep = [np.array([0, n - 1]), np.flatnonzero(alarms)]
    for fill, reduce in ((-np.inf, np.maximum), (np.inf, np.minimum)):
        filled = np.where(nan, fill, scores)
        best = np.repeat(reduce.reduceat(filled, starts), counts)
        hits = np.flatnonzero((filled == best) & ~nan)
        _, first = np.unique(bucket[hits], return_index=True)  # first extreme row of each bucket
        keep.append(hits[first])
    edges = np.flatnonzero(nan[1:] != nan[:-1])
    keep += [edges, edges + 1]
    return np.unique(np.concatenate(keep))


def window_mask(times: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """True for rows inside any window, ends included (NAB windows are closed intervals)."""
    inside = np.zeros(times.size, dtype=bool)
    for w in windows:
        a, b = np.searchsorted(times, w.start, "left"), np.searchsorted(times, w.end, "right")
        inside[a:b] = True
    return inside


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """At most :data:`CURVE_POINTS` evenly spaced points, both ends kept (curves are monotone, nothing spikes)."""
    n = arrays[0].size
    if n <= CURVE_POINTS:
        return arrays
    idx = np.unique(np.linspace(0, n - 1, CURVE_POINTS).round().astype(np.int64))
    return tuple(a[idx] for a in arrays)


def roc_pr_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, recall, precision)`` at every distinct score threshold, highest threshold first.

    Ties share one point (a threshold cannot split equal scores). The caller has removed NaN
    rows and checked both classes are present.
    """
    order = np.argsort(-scores, kind="stable")
    y, s = labels[order], scores[order]
    last_of_tie = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tp = np.cumsum(y)[last_of_tie].astype(np.float64)
    fp = (last_of_tie + 1) - tp
    pos, neg = float(y.sum()), float(y.size - y.sum())
    fpr, tpr = np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]
    recall, precision = tp / pos, tp / (tp + fp)
    return fpr, tpr, recall, precision


def _png(fig: Figure) -> str:
    """The figure as a PNG data URI, quantised to a small palette: a third of the bytes, no visible loss on charts."""
    canvas = FigureCanvasAgg(fig)  # the non-interactive canvas, explicitly; no pyplot, no backend switch
    canvas.draw()
    img = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    buf = io.BytesIO()
    img.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", compress_level=9)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _margins(height_in: float) -> dict[str, float]:
    """Fixed margins in inches as figure fractions: a third of constrained layout's cost, same look every time."""
    return {"left": MARGIN_LEFT_IN / FIGURE_WIDTH_IN, "right": 1 - MARGIN_RIGHT_IN / FIGURE_WIDTH_IN,
            "top": 1 - MARGIN_TOP_IN / height_in, "bottom": MARGIN_BOTTOM_IN / height_in}


def _date_axis(ax) -> None:  # a matplotlib Axes (untyped: matplotlib ships no stubs worth importing here)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def timeline_png(traces: Sequence[Trace], windows: Sequence[Window], bars: Sequence[Bar],
                 span: tuple[np.datetime64, np.datetime64]) -> str:
    """One asset: an alert strip on top, then one score panel per series, sharing a UTC date axis."""
    height = MARGIN_TOP_IN + MARGIN_BOTTOM_IN + STRIP_IN + len(traces) * (PANEL_IN + PANEL_GAP_IN)
    fig = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI)
    mean_axes_in = (STRIP_IN + len(traces) * PANEL_IN) / (1 + len(traces))  # matplotlib's unit for hspace
    grid = _margins(height) | {"hspace": PANEL_GAP_IN / mean_axes_in}
    axes = fig.subplots(1 + len(traces), 1, sharex=True, squeeze=False, gridspec_kw=grid,
                        height_ratios=[STRIP_IN] + [PANEL_IN] * len(traces))[:, 0]
    strip = axes[0]
    for w in windows:
        for ax in axes:
            ax.axvspan(mdates.date2num(w.start), mdates.date2num(w.end), color=LABEL_SHADE, alpha=0.35, lw=0)
    for bar in bars:
        colour = SEVERITY_COLOURS.get(bar.severity.lower(), "#999999")
        x0, x1 = mdates.date2num(bar.start), mdates.date2num(bar.end)
        strip.barh(0, max(x1 - x0, 0.0), left=x0, height=0.6, color=colour,
                   alpha=0.45 if bar.shadow else 0.95, hatch="//" if bar.shadow else None,
                   edgecolor="#333333", lw=0.5)
        if bar.open:
            strip.plot([x1], [0], marker=">", color=colour, ms=6)
    strip.set_yticks([])
    strip.set_ylabel("alerts", rotation=0, ha="right", va="center")
    strip.set_ylim(-0.5, 0.5)
    if not bars:
        strip.text(0.5, 0.5, "no alerts", transform=strip.transAxes, ha="center", va="center", color="#666666")
    for ax, tr in zip(axes[1:], traces, strict=True):
        keep = minmax_decimate(tr.times, tr.scores, tr.alarms, span=span)
        ax.plot(tr.times[keep], tr.scores[keep], lw=0.8, color="#2166ac", label="score")
        if np.isfinite(tr.threshold):  # an uncalibrated detector has an infinite threshold: it never alarms
            ax.axhline(tr.threshold, color="#b2182b", ls="--", lw=1.0, label=f"threshold {tr.threshold:.3g}")
        else:
            ax.plot([], [], " ", label=f"threshold {tr.threshold:.3g} (never alarms)")
        hit = np.flatnonzero(tr.alarms)
        if hit.size:
            marks = np.where(np.isnan(tr.scores[hit]) & np.isfinite(tr.threshold), tr.threshold, tr.scores[hit])
            ax.plot(tr.times[hit], marks, "o", ms=3, color="#b2182b", label=f"alarms ({hit.size})")
        ax.set_ylabel("score\n(-log10 p)")
        ax.set_title(tr.name, loc="left", fontsize=10)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlim(span[0], span[1])
    _date_axis(axes[-1])
    axes[-1].set_xlabel("time (UTC)")
    return _png(fig)


def curves_png(curves: Sequence[Curve]) -> str:
    """ROC (with the chance diagonal) and precision-recall side by side, one line per series."""
    fig = Figure(figsize=(FIGURE_WIDTH_IN, CURVES_IN), dpi=DPI)
    roc, pr = fig.subplots(1, 2, squeeze=True, gridspec_kw=_margins(CURVES_IN) | {"wspace": 0.12})
    roc.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1)
    for c in curves:
        fpr, tpr = _thin(c.fpr, c.tpr)
        recall, precision = _thin(c.recall, c.precision)
        roc.plot(fpr, tpr, lw=1.4, label=f"{c.name}  AUROC {c.auroc:.3f}")
        pr.plot(recall, precision, lw=1.4, label=c.name)
    for ax, (x, y, title) in zip((roc, pr), (("false-positive rate", "true-positive rate", "ROC"),
                                            ("recall", "precision", "precision-recall")), strict=True):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(title, loc="left", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right" if ax is roc else "upper right", fontsize=8)
    return _png(fig)
