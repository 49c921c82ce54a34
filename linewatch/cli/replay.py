"""``linewatch replay``: the live pipeline run on history, with the figures that decide models and thresholds.

Reads history from files, the database or Kafka, runs the worker's own decode, detectors, fusion
and alert lifecycle on it in event time (:mod:`linewatch.replay`), stores the results under a run
id in the ``replay`` schema (never in the live tables), and judges them against labels.

Examples::

    # NAB's machine temperature: fit on the first week, replay the rest, judge against NAB's windows
    linewatch replay --source file --data machine_temperature_system_failure.csv --time-column timestamp \\
        --train-until 2013-12-10 --labels combined_windows.json --json out.json --report out.html
    # last week of the plant, from Kafka, with the registry's models
    linewatch replay --source kafka --since 7d --asset press-1
    # a month of stored SPC, against the operators' dispositions, recommend and apply thresholds
    linewatch replay --source database --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z \\
        --labels-from-dispositions --cost '*=1:20' --apply --shadow
    # the history back into Kafka at ten times its pace (demos, soak and load tests)
    linewatch replay --source database --since 1d --until 0h --to-kafka --speed 10
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from linewatch.cli.common import ConfigOption, console, counting_progress, fmt, jsonable, settings
from linewatch.cli.feedback_options import parse_time

TABLE_METRICS = ("precision", "recall", "f1", "auroc", "far", "missed_alarm_rate", "median_delay_s",
                 "false_alarms_per_hour", "nab_score_standard", "nab_score_low_fp", "nab_score_low_fn")
SHORT = {"missed_alarm_rate": "missed", "median_delay_s": "delay s", "false_alarms_per_hour": "false/h",
         "nab_score_standard": "NAB", "nab_score_low_fp": "NAB lowFP", "nab_score_low_fn": "NAB lowFN"}


def replay_cmd(
    source: Annotated[str, typer.Option(help="where history comes from: file, database or kafka")],
    data: Annotated[Path | None, typer.Option(
        help="file source: a CSV/Parquet table of SPC records (one row per part), an image folder (MVTec "
             "layout test/<class>/*.png, or any folder of images), or a waveform recordings folder "
             "(test/<condition>/*.wav|npy|csv, with --sample-rate)")] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="file source: the event time column")
                           ] = None,
    asset: Annotated[list[str] | None, typer.Option(
        help="file: the asset id (default: the file's name); database/kafka: only this asset (repeatable)")] = None,
    asset_column: Annotated[str | None, typer.Option("--asset-column", help="file: the asset id column")] = None,
    part_column: Annotated[str | None, typer.Option("--part-column", help="file: the part id column")] = None,
    sku: Annotated[str, typer.Option(help="file: the SKU of the records or images")] = "default",
    camera: Annotated[str, typer.Option(help="image folder: the camera id")] = "cam-1",
    sample_rate: Annotated[float | None, typer.Option(
        "--sample-rate", help="recordings folder: samples per second")] = None,
    window_s: Annotated[float, typer.Option("--window-s", help="recordings folder: seconds per window (as the "
                                                               "model was trained)")] = 1.0,
    kind: Annotated[str, typer.Option(help="recordings folder: kind of channels not named after one")] = "vibration",
    speed_hz: Annotated[float | None, typer.Option("--speed-hz", help="recordings folder: shaft speed (Hz)")
                        ] = None,
    columns: Annotated[str | None, typer.Option(help="file: comma-separated characteristics (default: every "
                                                     "numeric column)")] = None,
    sep: Annotated[str, typer.Option(help="file: the CSV field separator")] = ",",
    since: Annotated[str | None, typer.Option(help="database/kafka: from this time (ISO 8601 with zone, or a "
                                                   "look-back such as 7d)")] = None,
    until: Annotated[str | None, typer.Option(help="database/kafka: up to this time (default: now)")] = None,
    topics: Annotated[str, typer.Option(help="kafka: comma-separated topics to read (the input topics and "
                                             "machine_states; 'scores' re-fuses stored scores)")
                      ] = "machine_states,spc,signals,frames",
    offsets: Annotated[list[str] | None, typer.Option(
        help="kafka: TOPIC:PARTITION:FIRST-LAST offsets to replay (repeatable; other partitions are read whole)")
    ] = None,
    train_until: Annotated[str | None, typer.Option(
        "--train-until", help="file: fit a model on the table's rows before this time (minus labelled ones) "
        "instead of using the registry's models; only later rows are replayed")] = None,
    detector: Annotated[str, typer.Option(help="with --train-until: the detector, or 'auto'")] = "auto",
    target_far: Annotated[float, typer.Option("--target-far", help="with --train-until: false alarms per normal "
                                                                     "event the fitted model is calibrated to")
                          ] = 1e-3,
    labels: Annotated[Path | None, typer.Option(
        help="label windows: a NAB-style JSON {\"file\": \\[\\[start, end], ...]} or a start,end CSV")] = None,
    labels_key: Annotated[str | None, typer.Option("--labels-key", help="which entry of the --labels JSON "
                                                                         "(default: the one matching --data)")
                          ] = None,
    labels_from_dispositions: Annotated[bool, typer.Option(
        "--labels-from-dispositions", help="judge against operators' dispositions in the database "
        "(true_defect = anomalous; every other verdict = normal; undispositioned events are not judged)")] = False,
    recommend_far: Annotated[float | None, typer.Option(
        "--recommend-far", help="recommend per detector and asset the threshold meeting this false-alarm rate "
        "on the labelled history (default: --target-far)")] = None,
    cost: Annotated[list[str] | None, typer.Option(
        help="SKU=FALSE_REJECT:ESCAPE costs ('*' for every SKU): recommend the cheapest threshold instead "
             "(with --recommend-far: the cheapest that keeps that rate)")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="register each recommended threshold as a new model "
                                                         "version")] = False,
    shadow: Annotated[bool, typer.Option("--shadow", help="with --apply: as a shadow (challenger) first")] = False,
    actor: Annotated[str | None, typer.Option(help="with --apply: who (default: $USER)")] = None,
    store: Annotated[bool, typer.Option("--store/--no-store", help="keep the results in the replay schema "
                                                                   "(with a database)")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="write every figure as JSON")] = None,
    report: Annotated[Path | None, typer.Option(help="write a self-contained HTML report (timelines, alerts "
                                                      "against labels, ROC/PR curves, per-event table)")] = None,
    to_kafka: Annotated[bool, typer.Option("--to-kafka", help="publish the history to its topics instead of "
                                                               "scoring it (demos, soak and load tests)")] = False,
    speed: Annotated[float | None, typer.Option(help="with --to-kafka: this many times the original pace "
                                                     "(default: as fast as the broker takes it)")] = None,
    config: ConfigOption = None,
) -> None:
    """Replay history through the worker's own pipeline, store it under a run id, and judge it against labels.

    The same input gives the same scores and alerts as the live worker (bit for bit). With labels it
    prints, per detector and model version, for the fused units and for the fused alerts: precision,
    recall, F1, AUROC, false-alarm and missed-alarm rates, detection delay, false alarms per hour and
    the NAB scores (standard, reward low FP, reward low FN), then the threshold each detector's
    history supports.
    """
    from contextlib import ExitStack

    from linewatch.embedded.stack import Stack
    from linewatch.replay.job import ReplayRequest, as_costs, read_history, report_of, run_job
    from linewatch.replay.kafka_source import parse_offsets
    from linewatch.storage.migrations import migrate

    s = settings(config)
    if source == "file" and asset and len(asset) > 1:
        raise typer.BadParameter("a file source takes one --asset (or --asset-column)")
    req = ReplayRequest(
        source=source, data=data, time_column=time_column, asset=asset[0] if source == "file" and asset else None,
        asset_column=asset_column, part_column=part_column, sku=sku, camera=camera, sample_rate=sample_rate,
        window_s=window_s, kind=kind, speed_hz=speed_hz,
        columns=[c.strip() for c in columns.split(",")] if columns else None, sep=sep,
        since=parse_time(since, "--since"), until=parse_time(until or ("0s" if since else None), "--until"),
        assets=list(asset) if source != "file" and asset else None, topics=[t.strip() for t in topics.split(",")],
        offsets=parse_offsets(offsets or []) or None, train_until=train_until, detector=detector,
        target_far=target_far, labels=labels, labels_key=labels_key, labels_from_dispositions=labels_from_dispositions,
        recommend_far=recommend_far, costs=as_costs(cost or []), store=store)
    needs_db = (source == "database" or labels_from_dispositions or apply or train_until is None
                or (store and s.database_url is not None))
    with ExitStack() as stack:
        database_url = None
        if needs_db or source == "kafka" or to_kafka:
            services = stack.enter_context(Stack(s, need_broker=source == "kafka" or to_kafka))
            s = s.model_copy(update={"broker_url": services.bootstrap or s.broker_url})
            if needs_db:
                database_url = services.database_url
                migrate(database_url)
        if to_kafka:
            _to_kafka(read_history(req, s, database_url), s, speed)
            return
        with counting_progress("replaying") as bar:
            result = run_job(req, s, database_url=database_url, progress=bar)
        summary = result.summary()
        _print(summary)
        if apply:
            _apply(result, database_url, s, shadow=shadow, actor=actor)
        if json_out is not None:
            import json

            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(jsonable(summary), indent=2, default=str))
            console.print(f"figures written to {json_out}")
        if report is not None:
            from linewatch.replay.report import write_report

            write_report(report_of(result, title=f"linewatch replay: {result.description}"), report)
            console.print(f"report written to {report}")


def _print(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(width=200)
    counts = summary["counts"]
    out.print(f"run {summary['run_id']}: {summary['source']}; {counts.get('messages', 0)} messages in "
              f"{summary['seconds']:.1f} s ({summary['messages_per_s']:.0f}/s), {counts.get('scores', 0)} scores, "
              f"{summary['alerts_opened']} alert(s) opened, {counts.get('deadletters', 0)} dead letter(s)"
              + ("; stored in the replay schema" if summary["stored"] else "; not stored (no database)"))
    if not summary["per_series"]:
        out.print("no labels given (--labels or --labels-from-dispositions): no metrics")
        return
    table = Table(title=f"against {summary['labels']}")
    table.add_column("series")
    for m in TABLE_METRICS:
        table.add_column(SHORT.get(m, m), justify="right")
    for name, m in summary["per_series"].items():
        table.add_row(name, *[fmt(m.get(k)) for k in TABLE_METRICS])
    out.print(table)
    if summary["thresholds"]:
        th = Table(title="thresholds the labelled history supports")
        for col in ("asset", "series", "current", "recommended", "far", "recall", "reason"):
            th.add_column(col)
        for r in summary["thresholds"]:
            th.add_row(r["asset"], r["series"], fmt(r["current"]), fmt(r["threshold"]), fmt(r.get("far")),
                       fmt(r.get("recall")), r["reason"])
        out.print(th)


def _apply(result: Any, database_url: str | None, s: Any, *, shadow: bool, actor: str | None) -> None:
    """Register every finite recommended threshold that differs from the current one as a new model version."""
    import math

    from linewatch.cli.feedback_options import operator_name
    from linewatch.feedback.apply import apply_threshold
    from linewatch.training import register

    if database_url is None:
        raise typer.BadParameter("--apply registers model versions: it needs a database (LINEWATCH_DATABASE_URL)")
    who = operator_name(actor)
    for r in result.thresholds:
        t = r.get("threshold")
        if t is None or not math.isfinite(t) or t == r["current"]:
            console.print(f"{r['asset']} {r['series']}: kept at {fmt(r['current'])} ({r['reason']})")
            continue
        reason = f"replay {result.run_id}: {r['reason']}"
        fitted = next((b for b in result.fitted if b.version == r["version"]), None)
        if fitted is not None:
            bundle = fitted.with_threshold(t, reason=reason, dispositions=[], actor=who)
            ref = register(bundle, database_url=database_url, model_dir=s.model_dir, shadow=shadow)
        else:
            ref = apply_threshold(database_url, detector=r["detector"], asset=r["asset"], threshold=t, reason=reason,
                                  actor=who, dispositions=[], model_dir=s.model_dir, cache_dir=s.model_cache_dir,
                                  shadow=shadow, modality=r["modality"]).new
        console.print(f"{r['asset']} {r['series']}: threshold {fmt(r['current'])} -> {fmt(t)} registered as "
                      f"{ref.model_id}@{ref.version}" + (" (shadow)" if shadow else ""))


def _to_kafka(history: Any, s: Any, speed: float | None) -> None:
    from datetime import UTC, datetime

    from linewatch.kafka import Publisher
    from linewatch.producers.plant import publish_in_event_time

    messages = [(m.topic, m.key, m.value, datetime.fromtimestamp(m.timestamp or 0.0, UTC))
                for m in history.messages if m.value is not None]
    pub = Publisher(s.broker_url, security=s.kafka_client_config())
    with counting_progress("publishing", len(messages)) as bar:
        counts = publish_in_event_time(pub, messages, speed=speed,
                                       progress=lambda c: bar(sum(c.values())))
        pub.flush()
    console.print(f"published {sum(counts.values())} messages ({', '.join(f'{t} {n}' for t, n in counts.items())}) "
                  f"at {'full speed' if not speed else f'{speed:g}x their pace'}")
