"""``linewatch bench e2e --modality all``: the SPC, signals and frames end-to-end benchmarks in one run.

Each modality runs its own benchmark (:mod:`~linewatch.benchmarks.e2e`,
:mod:`~linewatch.benchmarks.signals_e2e`, :mod:`~linewatch.benchmarks.frames_e2e`) one after the
other, each on a fresh stack of its own, as a single ``--modality`` run does. Why not one stack for
all three: every figure is a ratio against limits measured on that modality's own backlog, and a
worker draining three backlogs at once would measure the modalities' competition for two cores
rather than any one path; separate runs keep each row comparable with its single-modality run and
with earlier releases. A stack starts in a few seconds, so little is lost.

The result is one JSON object: per modality the figures that benchmark returns (which always
include :data:`SUMMARY_KEYS`), plus ``machine`` (cores, load average before and after, when).
:func:`summary_rows` picks the common keys; the README's table is generated from the same JSON
(:mod:`linewatch.benchmarks.readme_table`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from linewatch.benchmarks.common import FUSION_CATCH_UP_S
from linewatch.config import Settings
from linewatch.errors import ConfigError

MODALITIES = ("spc", "signals", "frames")
#: The throughput figure of each modality, in its own unit.
RATE_KEYS = {"spc": "records_per_s", "signals": "samples_per_s", "frames": "frames_per_s"}
#: Keys every modality's figures carry besides its rate (the bare limits are messages per second).
SUMMARY_KEYS = ("bare_faust_per_s", "bare_kafka_per_s", "latency_p50_s", "latency_p99_s", "peak_rss_mb")
#: Keys shown where present (JSON of older versions lacks them; the README table does not need them).
OPTIONAL_KEYS = ("ratio_vs_bare_faust", "latency_rate_per_s", "rss_drain_growth_mb", "backlog_s", "fusion_lag_s",
                 "fusion_behind_messages")
#: Frame side of the frames benchmark, as in a plain ``--modality frames`` run.
FRAME_SIZE = 256


def run_modality(modality: str, settings: Settings, *, seconds: float, records: int | None,
                 console: Console) -> dict[str, Any]:
    """One modality's end-to-end figures (``records``: exact messages to pre-fill, else from ``seconds``)."""
    if modality == "spc":
        from linewatch.benchmarks.e2e import run_bench_e2e

        return run_bench_e2e(settings, seconds=seconds, records=records, console=console)
    if modality == "signals":
        from linewatch.benchmarks.signals_e2e import planned_windows, run_signals_bench

        return run_signals_bench(settings, windows=records or planned_windows(seconds), console=console)
    if modality == "frames":
        from linewatch.benchmarks.frames_e2e import planned_frames, run_frames_bench

        return run_frames_bench(settings, frames=records or planned_frames(seconds), size=FRAME_SIZE,
                                console=console)
    raise ConfigError(f"unknown modality {modality!r}; use {', '.join(MODALITIES)} or all")


def run_all(settings: Settings, *, seconds: float, console: Console,
            run: Callable[..., dict[str, Any]] = run_modality) -> dict[str, Any]:
    """Every modality in turn (``seconds`` each, roughly); returns ``{modality: figures, "machine": ...}``.

    The load average is recorded before and after, since other jobs on the machine move every figure.
    """
    machine: dict[str, Any] = {"cpu_count": os.cpu_count(), "started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "load_before": _load()}
    out: dict[str, Any] = {}
    for modality in MODALITIES:
        console.rule(f"{modality} end to end")
        out[modality] = run(modality, settings, seconds=seconds, records=None, console=console)
    machine["load_after"] = _load()
    out["machine"] = machine
    return out


def summary_rows(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per modality present in ``figures``: ``modality``, ``rate``, ``unit`` and :data:`SUMMARY_KEYS`.

    Raises :class:`ConfigError` naming the modality and key when one is missing, so a table is never
    drawn from half a run.

    >>> row = dict(records_per_s=2000.0, bare_faust_per_s=4000.0, bare_kafka_per_s=19000.0,
    ...            latency_p50_s=0.2, latency_p99_s=0.5, peak_rss_mb=480.0)
    >>> summary_rows({"spc": row})[0]["rate"]
    2000.0
    """
    present = [m for m in MODALITIES if m in figures]
    if not present:
        raise ConfigError(f"no modality in the figures (expected keys among {', '.join(MODALITIES)}); "
                          "pass the JSON that `linewatch bench e2e --modality all --json OUT` wrote")
    rows = []
    for modality in present:
        fig = figures[modality]
        needed = (RATE_KEYS[modality], *SUMMARY_KEYS)
        missing = [k for k in needed if fig.get(k) is None]
        if missing:
            raise ConfigError(f"{modality} figures lack {', '.join(missing)}; rerun `linewatch bench e2e "
                              f"--modality all --json OUT` with this version")
        rows.append({"modality": modality, "rate": float(fig[RATE_KEYS[modality]]),
                     "unit": RATE_KEYS[modality].removesuffix("_per_s"),
                     **{k: float(fig[k]) for k in SUMMARY_KEYS}, **{k: fig.get(k) for k in OPTIONAL_KEYS}})
    return rows


def print_table(console: Console, figures: Mapping[str, Any]) -> None:
    """The run as one rich table: throughput, the two limits, latency at half rate, peak memory and its growth."""
    table = Table(title="linewatch end to end (limits measured in the same run)")
    for col in ("modality", "end to end /s", "bare Faust msgs/s", "bare Kafka msgs/s", "vs bare Faust",
                "latency p50 / p99 s", "at /s", "peak RSS MB", "RSS growth MB (backlog s)", "fusion lag s"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    for r in summary_rows(figures):
        ratio = r["ratio_vs_bare_faust"]
        table.add_row(r["modality"], f"{r['rate']:,.0f} {r['unit']}", f"{r['bare_faust_per_s']:,.0f}",
                      f"{r['bare_kafka_per_s']:,.0f}", "" if ratio is None else f"{ratio:.2f}",
                      f"{r['latency_p50_s']:.2f} / {r['latency_p99_s']:.2f}",
                      "" if r["latency_rate_per_s"] is None else f"{r['latency_rate_per_s']:,.0f}",
                      f"{r['peak_rss_mb']:,.0f}", _growth(r), _fusion(r))
    console.print(table)


def _growth(row: Mapping[str, Any]) -> str:
    """Memory growth while the backlog drained, with the backlog's length in seconds of throughput.

    >>> _growth({"rss_drain_growth_mb": 3.0, "backlog_s": 98.4}), _growth({"rss_drain_growth_mb": None})
    ('+3 (98 s)', '')
    """
    growth, backlog = row.get("rss_drain_growth_mb"), row.get("backlog_s")
    if growth is None:
        return ""
    return f"{growth:+,.0f}" + (f" ({backlog:,.0f} s)" if backlog is not None else "")


def _fusion(row: Mapping[str, Any]) -> str:
    """Seconds the fusion agent needed after the backlog's last score row, or how far behind it stayed.

    >>> _fusion({"fusion_lag_s": 2.6, "fusion_behind_messages": 0}), _fusion({"fusion_lag_s": None,
    ...                                                                       "fusion_behind_messages": 5200})
    ('2.6', '> 60 (5,200 behind)')
    """
    lag, behind = row.get("fusion_lag_s"), row.get("fusion_behind_messages")
    if lag is not None:
        return f"{lag:.1f}"
    return "" if behind is None else f"> {FUSION_CATCH_UP_S:.0f} ({behind:,} behind)"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
