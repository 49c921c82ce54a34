"""``linewatch replay`` without the command line: read the history, choose the models, run, judge, store, report.

The command and the tests call :func:`run_job`; everything it decides is in :class:`ReplayRequest`.
Models come from the registry (the versions active now, champions and shadows, exactly as a
worker would load them) unless the request fits one on the history itself (``train_until``: the
rows before that time, minus the labelled ones, as ``linewatch backtest csv`` does); a fitted model
is never registered unless the threshold recommendation is applied.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.backtest.labels import load_windows, split_until
from linewatch.config import Settings
from linewatch.defects.stream import defect_layer
from linewatch.detectors.bundle import ModelBundle, Scope
from linewatch.errors import ConfigError
from linewatch.loaders import parse_times
from linewatch.replay import evaluate as ev
from linewatch.replay.kafka_source import KafkaRange, kafka_history
from linewatch.replay.pipeline import FUSION_TOPICS, INPUT_TOPICS, ReplayPipeline
from linewatch.replay.run import ReplayOutcome, run_replay
from linewatch.replay.sources import (
    History,
    database_history,
    image_folder_history,
    is_recordings_folder,
    recordings_history,
    spc_table_history,
)
from linewatch.replay.store import ReplayStore
from linewatch.schemas.topics import MACHINE_STATES
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.messages import RawMessage

SOURCES = ("file", "database", "kafka")
#: The metrics the JSON carries at its top level: the fused alerts', the system's own answer.
HEADLINE = ("nab_score_standard", "nab_score_low_fp", "nab_score_low_fn", "precision", "recall", "f1", "far",
            "median_delay_s", "false_alarms_per_hour", "windows_detected", "n_windows")


@dataclass
class ReplayRequest:
    """What to replay, with which models, against which labels, and where the results go."""

    source: str
    data: Path | None = None  # file source: a CSV/Parquet table or an image folder
    time_column: str | None = None
    asset: str | None = None
    asset_column: str | None = None
    part_column: str | None = None
    sku: str = "default"
    camera: str = "cam-1"
    columns: list[str] | None = None
    sep: str = ","
    image_start: datetime | None = None
    image_interval_s: float = 1.0
    sample_rate: float | None = None  # recordings folder: samples per second
    window_s: float = 1.0  # recordings folder: seconds per window (as trained)
    kind: str = "vibration"
    speed_hz: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    assets: list[str] | None = None  # database / kafka: only these assets
    topics: list[str] = field(default_factory=lambda: [MACHINE_STATES.name, *INPUT_TOPICS])
    offsets: dict[tuple[str, int], tuple[int, int]] | None = None
    train_until: str | None = None
    detector: str = "auto"
    target_far: float = 1e-3
    seed: int = 0
    labels: Path | None = None
    labels_key: str | None = None
    labels_from_dispositions: bool = False
    recommend_far: float | None = None
    costs: dict[str, tuple[float, float]] = field(default_factory=dict)
    store: bool = True
    run_id: uuid.UUID | None = None


@dataclass
class ReplayResult:
    """Everything a replay reports: the run, its figures, the timelines and incidents behind them."""

    run_id: uuid.UUID
    description: str
    outcome: ReplayOutcome
    timelines: list[ev.Timeline]
    incidents: list[ev.AlertSpan]
    labels: ev.Labels | None
    metrics: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    thresholds: list[dict[str, Any]]
    models: dict[str, str]
    fitted: list[ModelBundle]
    stored: bool

    def summary(self) -> dict[str, Any]:
        """The JSON document: headline figures (the fused alerts'), then every series, events and thresholds."""
        alerts = self.metrics.get(ev.FUSED_ALERTS) or {}
        return {
            "run_id": str(self.run_id), "source": self.description, "stored": self.stored,
            "labels": self.labels.source if self.labels else None,
            **{k: alerts.get(k) for k in HEADLINE},
            "alerts_opened": len([i for i in self.incidents if not i.shadow]),
            "counts": dict(self.outcome.counts), "seconds": self.outcome.seconds,
            "messages_per_s": self.outcome.counts["messages"] / max(self.outcome.seconds, 1e-9),
            "deadletter_reasons": dict(self.outcome.deadletter_reasons),
            "models": self.models,
            "per_series": self.metrics,
            "events": self.events,
            "thresholds": self.thresholds,
            "incidents": [{**asdict(i), "opened_at": i.opened_at.isoformat(),
                           "closed_at": i.closed_at.isoformat() if i.closed_at else None} for i in self.incidents],
        }


def read_history(req: ReplayRequest, settings: Settings, database_url: str | None) -> History:
    """The request's messages, in the order the worker would have seen them."""
    if req.source not in SOURCES:
        raise ConfigError(f"--source {req.source!r}; use one of {', '.join(SOURCES)}")
    if req.source == "file":
        if req.data is None:
            raise ConfigError("--source file needs --data PATH (a CSV/Parquet table or an image folder)")
        if req.data.is_dir() and is_recordings_folder(req.data):
            if req.sample_rate is None:
                raise ConfigError("a recordings folder needs --sample-rate (samples per second of the recordings)")
            return recordings_history(req.data, asset=req.asset or req.data.name, sample_rate=req.sample_rate,
                                      window_s=req.window_s, kind=req.kind, speed_hz=req.speed_hz)
        if req.data.is_dir():
            return image_folder_history(req.data, asset=req.asset or req.data.name, sku=req.sku, camera=req.camera,
                                        start=req.image_start or datetime(2026, 1, 1, tzinfo=UTC),
                                        interval_s=req.image_interval_s)
        if req.time_column is None:
            raise ConfigError("--source file with a table needs --time-column (the replay runs in event time)")
        return spc_table_history(req.data, time_column=req.time_column, asset=req.asset, asset_column=req.asset_column,
                                 sku=req.sku, part_column=req.part_column, columns=req.columns, sep=req.sep)
    if req.source == "database":
        if database_url is None:
            raise ConfigError("--source database needs a database: set LINEWATCH_DATABASE_URL")
        if req.since is None or req.until is None:
            raise ConfigError("--source database needs --since and --until (the time range to replay)")
        return database_history(database_url, since=req.since, until=req.until, assets=req.assets)
    if not settings.broker_url:
        raise ConfigError("--source kafka needs a broker: set LINEWATCH_BROKER_URL")
    unknown = sorted(set(req.topics) - set(INPUT_TOPICS) - set(FUSION_TOPICS))
    if unknown:
        raise ConfigError(f"--topics {', '.join(unknown)}: a replay reads {', '.join(FUSION_TOPICS + INPUT_TOPICS)}")
    selection = KafkaRange(since=req.since, until=req.until, offsets=req.offsets,
                           assets=frozenset(req.assets) if req.assets else None)
    messages = list(kafka_history(settings.broker_url, req.topics, selection, security=settings.kafka_client_config()))
    if not messages:
        raise ConfigError(f"nothing to replay on {', '.join(req.topics)} for that selection; check --since/--until, "
                          "--offsets and --asset")
    return History(messages, f"kafka {','.join(req.topics)} ({len(messages)} messages)")


def read_labels(req: ReplayRequest, history: History, database_url: str | None) -> ev.Labels | None:
    if req.labels is not None:
        windows = load_windows(req.labels, test_file=req.data or Path(req.labels_key or "replay"), key=req.labels_key,
                               sep=req.sep)
        return ev.Labels(windows=windows, source=windows.source)
    if req.labels_from_dispositions:
        if database_url is None:
            raise ConfigError("--labels-from-dispositions reads the database: set LINEWATCH_DATABASE_URL")
        from linewatch.storage.connection import connect

        with connect(database_url) as conn:
            rows = conn.execute("""SELECT DISTINCT ON (event_id) event_id, verdict FROM dispositions
                                   WHERE event_id IS NOT NULL ORDER BY event_id, ts DESC""").fetchall()
        return ev.Labels(events={str(e): v == "true_defect" for e, v in rows}, source="operator dispositions")
    if history.labels:
        return ev.Labels(events={e: lab != "good" for e, lab in history.labels.items()},
                         source=f"{req.data} condition folders")
    return None


def _fit_on_history(req: ReplayRequest, history: History, labels: ev.Labels | None
                    ) -> tuple[ModelBundle, datetime]:
    """``--train-until``: a model fitted on the table's earlier, unlabelled rows (the backtest's split)."""
    from linewatch.backtest.tabular import choose_detector
    from linewatch.training import fit_model

    table = history.table
    if table is None or table.timestamps is None:
        raise ConfigError("--train-until fits on the rows of a table: use --source file with a CSV or Parquet file")
    windows = labels.windows if labels else None
    anomalous = windows.mask(table.timestamps) if windows is not None else np.zeros(len(table.X), dtype=bool)
    train, _, _ = split_until(table, str(req.train_until), anomalous)
    detector = req.detector if req.detector != "auto" else choose_detector(train.X)[0]
    assets = {m.key.decode() for m in history.messages if m.key}
    scope = Scope(asset=next(iter(assets))) if len(assets) == 1 else Scope()
    bundle = fit_model(train.X, feature_names=train.feature_names, detector=detector, target_far=req.target_far,
                       seed=req.seed, scope=scope)
    return bundle, ev.from_utc64(parse_times([str(req.train_until)], "--train-until")[0])


def run_job(req: ReplayRequest, settings: Settings, *, database_url: str | None,
            progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Read, replay, judge and (with a database) store one replay; see :class:`ReplayRequest`."""
    history = read_history(req, settings, database_url)
    labels = read_labels(req, history, database_url)
    cache = ModelCache(database_url=None if req.train_until else database_url,
                       modalities=("spc", "signals", "frames"), refresh_s=1e12, cache_dir=settings.model_cache_dir)
    fitted: list[ModelBundle] = []
    messages: Sequence[RawMessage] = history.messages
    if req.train_until is not None:
        bundle, until = _fit_on_history(req, history, labels)
        cache.add(bundle)
        fitted.append(bundle)
        messages = [m for m in messages if m.timestamp is None or m.timestamp >= until.timestamp()]
    elif database_url is None:
        raise ConfigError("no models: set LINEWATCH_DATABASE_URL to replay with the registry's models, or fit one "
                          "on the history with --train-until TIME")
    else:
        cache.refresh(force=True)
        if not len(cache):
            raise ConfigError("the registry has no active model; train one (`linewatch train`) or use --train-until")
    models = dict(cache.loaded()) | {f"{b.modality}:{b.detector_name} (fitted)": b.version for b in fitted}
    defects = None
    if req.train_until is None and database_url is not None:  # the registry's classifiers, as the worker runs them
        defects = defect_layer(database_url, refresh_s=1e12, cache_dir=settings.model_cache_dir)
        defects.refresh()
        models |= {f"{m} (classifier)": v for m, v in defects.loaded().items()}
    pipeline = ReplayPipeline.from_settings(cache, settings, defects=defects)
    store = ReplayStore(database_url, req.run_id) if (req.store and database_url) else None
    run_id = store.run_id if store else (req.run_id or uuid.uuid4())
    try:
        if store is not None:
            store.start(source=req.source, description=history.description,
                        arguments=json.loads(json.dumps(asdict(req), default=str)), models=models)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, len(messages))

        outcome = run_replay(messages, pipeline, store=store, progress=step)
        timelines = ev.score_timelines(outcome.scores)
        fused = ev.fused_timelines(outcome.verdicts, pipeline.fusion.config.threshold)
        found = ev.incidents(outcome.alerts)
        metrics: dict[str, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        thresholds: list[dict[str, Any]] = []
        if labels is not None:
            for t in [*timelines, *fused]:
                metrics[t.key] = ev.timeline_metrics(t, labels)
            openings = ev.alert_openings({t.asset_id: t.times for t in fused}, found)
            alert_row = ev.alert_metrics(openings, labels)
            if alert_row is not None and openings is not None:
                metrics[ev.FUSED_ALERTS] = alert_row
                # the per-window table is the incidents' view: was each labelled window alerted, and when
                events = ev.event_table(openings, labels)
            # With costs and no explicit --recommend-far, the cost ratio alone decides (the cheapest threshold);
            # with both, the cheapest that keeps the rate; with neither, the --target-far the models promise.
            far = req.recommend_far if (req.recommend_far is not None or req.costs) else req.target_far
            thresholds = ev.recommend_thresholds(timelines, labels, target_far=far, costs=req.costs or None)
        result = ReplayResult(run_id, history.description, outcome, [*timelines, *fused], found, labels, metrics,
                              events, thresholds, models, fitted, stored=store is not None)
        if store is not None:
            summary = result.summary()
            store.finish(counts=summary["counts"], metrics={k: summary[k] for k in HEADLINE} | {"per_series": metrics})
        return result
    finally:
        if store is not None:
            store.close()


def as_costs(specs: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``SKU=FALSE_REJECT:ESCAPE`` (``*`` for every SKU) -> the costs :func:`evaluate.recommend_thresholds` takes.

    >>> as_costs(["*=1:20", "bracket-a=1:50"])
    {'*': (1.0, 20.0), 'bracket-a': (1.0, 50.0)}
    """
    out: dict[str, tuple[float, float]] = {}
    for spec in specs:
        try:
            sku, ratio = spec.split("=", 1)
            fr, esc = ratio.split(":", 1)
            out[sku] = (float(fr), float(esc))
        except ValueError:
            raise ConfigError(f"--cost {spec!r}: write SKU=FALSE_REJECT:ESCAPE, e.g. '*=1:20' (an escaped defect "
                              "costs 20 false rejects)") from None
    return out


def report_of(result: ReplayResult, *, title: str) -> Any:
    """The HTML report's content (:class:`linewatch.replay.report.ReplayReport`) for ``result``."""
    from linewatch.replay.report import DetectorSeries, LabelSpan, ReplayReport

    series = [DetectorSeries(t.name, t.asset_id, t.times, t.scores, t.threshold, t.alarms) for t in result.timelines]
    spans = []
    windows = result.labels.windows if result.labels else None
    if windows is not None:
        for s, e in zip(windows.starts, windows.ends, strict=True):
            spans.append(LabelSpan(ev.from_utc64(s), ev.from_utc64(e)))
    metrics = {name: {k: v for k, v in m.items() if not isinstance(v, list)} for name, m in result.metrics.items()}
    settings = {"models": ", ".join(f"{k}@{v}" for k, v in result.models.items()),
                "labels": result.labels.source if result.labels else "none",
                "messages": result.outcome.counts["messages"], "replay seconds": round(result.outcome.seconds, 2)}
    return ReplayReport(str(result.run_id), title, result.description, datetime.now(UTC), series, result.incidents,
                        spans, metrics, result.events, settings)
