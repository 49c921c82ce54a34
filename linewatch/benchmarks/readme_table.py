"""Regenerate the README's performance table from ``linewatch bench e2e --modality all --json OUT``.

``python -m linewatch.benchmarks.readme_table --json OUT [--readme README.md]`` (also
``linewatch bench readme-table ...``) replaces everything between the marker comments
:data:`START` and :data:`END` with a markdown table drawn from that JSON, so the figures in the
README are always one run's, never edited by hand. ``--check`` only says whether the README
already holds that table (exit 1 if not). A JSON that lacks a figure fails, naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from linewatch.benchmarks.common import FUSION_CATCH_UP_S
from linewatch.benchmarks.e2e_all import summary_rows
from linewatch.errors import ConfigError

START = "<!-- perf-table:start -->"
END = "<!-- perf-table:end -->"
#: Throughput as the README says it, per modality's rate unit.
_UNITS = {"records": "records/s", "samples": "samples/s", "frames": "frames/s"}


def render_table(figures: Mapping[str, Any]) -> str:
    """The markdown table (with a line saying where and when it was measured) for ``figures``.

    >>> fig = {"spc": dict(records_per_s=2224.0, bare_faust_per_s=4488.0, bare_kafka_per_s=19637.0,
    ...        latency_p50_s=0.21, latency_p99_s=0.48, peak_rss_mb=493.0, ratio_vs_bare_faust=0.496)}
    >>> print(render_table(fig).splitlines()[2])
    | SPC | 2,224 records/s | 4,488 | 19,637 | 0.50 of bare Faust | 0.21 s / 0.48 s | 493 MB |
    """
    lines = ["| path | end to end | bare Faust msgs/s | bare Kafka + decode msgs/s | ratio to its limit "
             "| latency p50 / p99 at half rate | peak RSS |",
             "|---|---|---:|---:|---|---|---:|"]
    for r in summary_rows(figures):
        ratio = _ratio(figures[r["modality"]])
        name = _name(r["modality"], figures[r["modality"]])
        lines.append(f"| {name} | {_rate(r['rate'], r['unit'])} | {r['bare_faust_per_s']:,.0f} "
                     f"| {r['bare_kafka_per_s']:,.0f} | {ratio} "
                     f"| {r['latency_p50_s']:.2f} s / {r['latency_p99_s']:.2f} s | {r['peak_rss_mb']:,.0f} MB |")
    drain = _drain_line(summary_rows(figures))
    if drain:
        lines += ["", drain]
    machine = figures.get("machine")
    if isinstance(machine, Mapping):
        before, after = machine.get("load_before"), machine.get("load_after")
        load_text = f", load average {before[0]:.1f} at the start" if before else ""
        load_text += f" and {after[0]:.1f} at the end" if before and after else ""
        lines.append("")
        lines.append(f"Measured {machine.get('started', '')} on {machine.get('cpu_count', '?')} cores{load_text} "
                     "(`linewatch bench e2e --modality all`; how: docs/benchmarks.md).")
    return "\n".join(lines)


def _drain_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """While each backlog drained: memory growth and fusion's lag after it (empty for JSON without them).

    >>> line = _drain_line([{"modality": "spc", "rss_drain_growth_mb": 15.1, "backlog_s": 109.2,
    ...                      "fusion_lag_s": 15.2}, {"modality": "frames", "rss_drain_growth_mb": 0.4,
    ...                      "backlog_s": 42.5, "fusion_lag_s": None, "fusion_behind_messages": 1200}])
    >>> line.split("; ")[0]
    'While each backlog drained (SPC / frames: 109 / 42 s of throughput), resident memory grew +15 / +0 MB'
    >>> line.split("; ")[1]
    'fusion had read every score 15.2 s / not within 60 s (1,200 behind) after its last score row.'
    """
    shown = [r for r in rows if r.get("rss_drain_growth_mb") is not None and r.get("backlog_s") is not None]
    if not shown:
        return ""
    names = " / ".join({"spc": "SPC"}.get(r["modality"], r["modality"]) for r in shown)
    backlog = " / ".join(f"{r['backlog_s']:,.0f}" for r in shown)
    growth = " / ".join(f"{r['rss_drain_growth_mb']:+,.0f}" for r in shown)
    lags = " / ".join(f"{r['fusion_lag_s']:.1f} s" if r.get("fusion_lag_s") is not None
                      else f"not within {FUSION_CATCH_UP_S:.0f} s ({r.get('fusion_behind_messages') or 0:,} behind)"
                      for r in shown)
    return (f"While each backlog drained ({names}: {backlog} s of throughput), resident memory grew {growth} MB; "
            f"fusion had read every score {lags} after its last score row.")


def replace_table(text: str, table: str) -> str:
    """``text`` with the lines between :data:`START` and :data:`END` replaced by ``table``.

    >>> replace_table(f"a\\n{START}\\nold\\n{END}\\nb", "new")
    'a\\n<!-- perf-table:start -->\\nnew\\n<!-- perf-table:end -->\\nb'
    """
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ConfigError(f"the README has no {START} ... {END} pair to put the table between; add both "
                          "marker lines where the table belongs")
    return text[: start + len(START)] + "\n" + table + "\n" + text[end:]


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, dest="json_path",
                        help="the figures: what `linewatch bench e2e --modality all --json OUT` wrote")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="the file to update")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the table is not current")
    args = parser.parse_args(argv)
    try:
        figures = json.loads(args.json_path.read_text())
        text = args.readme.read_text()
        updated = replace_table(text, render_table(figures))
    except (OSError, json.JSONDecodeError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        current = updated == text
        print(f"{args.readme}: the performance table is {'current' if current else 'not current'}")
        return 0 if current else 1
    args.readme.write_text(updated)
    print(f"{args.readme}: performance table written from {args.json_path}")
    return 0


def _name(modality: str, fig: Mapping[str, Any]) -> str:
    if modality == "frames" and "size" in fig:
        return f"frames {fig['size']}x{fig['size']} {str(fig.get('encoding', '')).upper()}".rstrip()
    if modality == "signals" and "samples_per_window" in fig:
        return f"signals ({fig['samples_per_window']:,.0f} samples a window)"
    return {"spc": "SPC"}.get(modality, modality)


def _ratio(fig: Mapping[str, Any]) -> str:
    """The end-to-end rate against the tighter limit: the detector alone for frames (scoring-bound), else bare Faust."""
    for key, limit in (("ratio_vs_detector", "the detector alone"), ("ratio_vs_bare_faust", "bare Faust")):
        if fig.get(key) is not None:
            return f"{float(fig[key]):.2f} of {limit}"
    return ""


def _rate(rate: float, unit: str) -> str:
    if unit == "samples":
        return f"{rate / 1e6:.2f} M {_UNITS[unit]}"
    return f"{rate:,.0f} {_UNITS.get(unit, unit)}" if rate >= 100 else f"{rate:.1f} {_UNITS.get(unit, unit)}"


if __name__ == "__main__":
    raise SystemExit(main())
