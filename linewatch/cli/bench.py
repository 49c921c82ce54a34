"""``linewatch bench``: benchmarks that print figures (throughput, latency, detection quality, limits).

``e2e`` is a Typer command of its own. The others wrap the ``main`` of a module in
:mod:`linewatch.benchmarks`, which also runs as ``python -m linewatch.benchmarks.<module>``:
their arguments go to that module's own parser untouched, ``--help`` included, so the two ways
of running a benchmark take exactly the same options. The module is imported only when its
command runs, after the CLI has loaded nothing heavy, so a benchmark that sizes BLAS's thread
pool before numpy loads does so here too.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, settings
from linewatch.errors import ConfigError

bench_app = typer.Typer(help="Benchmarks that print figures (throughput, latency, limits).", no_args_is_help=True)

#: Command name -> (module in linewatch.benchmarks, one line for `linewatch bench --help`).
MODULE_BENCHMARKS = {
    "tabular-detectors": ("tabular_detectors", "Records/s of every tabular detector on one core; ONNX isolation "
                          "forest vs scikit-learn."),
    "spc-quality": ("spc_quality", "Recall per fault type at a fixed false-alarm rate for every tabular detector."),
    "signal-features": ("signal_features", "Samples/s per core through signal features, quality gate and "
                        "detectors."),
    "signal-quality": ("signal_quality", "Detection, delay and false alarms per hour on the machine simulator "
                       "and NAB's machine temperature."),
    "calibration": ("calibration", "Target vs realised false-alarm rate per detector family on autocorrelated, "
                    "drifting normal data (SPC and machine simulators, NAB, images)."),
    "images": ("images", "Image detection: frames/s, AUROC per defect type, memory-bank trade-off, faiss."),
    "recordings": ("recordings", "Detection on waveform recordings (WAV/NPY/CSV folders) per bearing-fault "
                   "severity, with and without shaft speed."),
    "fusion": ("fusion", "Fused false-alarm rate and false alerts per asset-day on normal, autocorrelated "
               "calibrated scores; detection of evidence spread over modalities; engine scores/s."),
    "serve": ("serve", "The inspection API (linewatch serve): p50/p99 latency and requests/s for frames and SPC "
              "records with concurrent clients, next to the detector alone."),
    "latency-sweep": ("latency_sweep", "SPC latency (p50/p90/p99) per worker setting at a fixed rate: how the fetch "
                      "wait and the flush interval were chosen."),
    "readme-table": ("readme_table", "Regenerate the README's performance table (between its perf-table markers) "
                     "from the JSON of `linewatch bench e2e --modality all --json OUT`."),
    "image-sota": ("image_sota", "Image accuracy levers on the public sets and textured SKUs: resize, resolution, "
                   "layers, bank, re-weighting, image score, backbones; frames/s per preset."),
}
#: Hand every argument, ``--help`` too, to the module's own parser.
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@bench_app.command("e2e", short_help="End-to-end throughput and latency through broker, worker and database, "
                   "next to bare Kafka and bare Faust limits measured in the same run.")
def bench_e2e_cmd(
    config: ConfigOption = None,
    modality: Annotated[str, typer.Option(help="which input path to measure: spc, signals, frames, or all (one "
                                          "after the other, one table and one JSON)")] = "spc",
    seconds: Annotated[float, typer.Option(help="rough budget (per modality with all); sets how many records "
                                                "are pre-filled")] = 30.0,
    records: Annotated[int | None, typer.Option(help="exact number of records (overrides --seconds)")] = None,
    records_per_message: Annotated[int, typer.Option(
        min=1, help="spc only: records per message (above 1: batched messages, JSON arrays of one asset's records)"
    )] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here as JSON")] = None,
    processes: Annotated[int, typer.Option(
        "--processes", min=1, metavar="N", help="SPC: run the worker as `linewatch worker --processes N`")] = 1,
) -> None:
    """End-to-end throughput and latency through broker, worker and database, next to the limits
    of bare confluent-kafka and bare Faust measured in the same run on the same messages."""
    from linewatch.benchmarks.e2e import run_bench_e2e

    s = settings(config)
    if records_per_message != 1 and modality != "spc":
        raise ConfigError(f"--records-per-message applies to --modality spc only, not {modality}")
    if modality == "all":
        from linewatch.benchmarks.e2e_all import print_table, run_all

        if records is not None:
            raise ConfigError("--records sets one modality's message count; with --modality all use --seconds")
        figures = run_all(s, seconds=seconds, console=console)
        print_table(console, figures)
    elif modality == "spc":
        figures = run_bench_e2e(s, seconds=seconds, records=records, console=console, processes=processes,
                                records_per_message=records_per_message)
    elif modality == "signals":
        from linewatch.benchmarks.signals_e2e import planned_windows, run_signals_bench

        figures = run_signals_bench(s, windows=records or planned_windows(seconds), console=console)
    elif modality == "frames":
        from linewatch.benchmarks.frames_e2e import planned_frames, run_frames_bench

        figures = run_frames_bench(s, frames=records or planned_frames(seconds), size=256, console=console)
    else:
        raise ConfigError(f"unknown modality {modality!r}; use spc, signals, frames or all")
    print(json.dumps(figures, indent=2))
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2) + "\n")


def _module_command(name: str, module: str, summary: str) -> None:
    """Register ``linewatch bench <name>``, which runs ``linewatch.benchmarks.<module>.main`` with its arguments."""

    def command(ctx: typer.Context) -> None:
        bench = importlib.import_module(f"linewatch.benchmarks.{module}")
        status = bench.main(list(ctx.args), prog=f"linewatch bench {name}")
        if status:
            raise typer.Exit(status)

    command.__doc__ = f"{summary}\n\nOptions: `linewatch bench {name} --help`."
    bench_app.command(name, context_settings=_PASS_THROUGH, add_help_option=False, short_help=summary)(command)


for _name, (_module, _summary) in MODULE_BENCHMARKS.items():
    _module_command(_name, _module, _summary)
