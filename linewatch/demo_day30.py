"""``linewatch demo --day30``: from anomaly detection on day 1 to a defect classifier on day 30, on a simulated line.

A camera line of one SKU runs through the real worker, broker and database:

1. **Day 1**: an image anomaly model is trained on good parts only (no defect is known yet).
2. **Days 1-29**: parts stream in, a share of them with surface defects of three kinds; the worker
   flags anomalies and keeps the flagged frames' pooled patch features. A simulated inspector
   confirms each flagged part from the simulator's ground truth (``true_defect`` with its class,
   or ``false_alarm``), as operators' dispositions would (:mod:`linewatch.simulation.confirmations`).
3. **Day 30**: the label store shows which classes are ready; a classifier is trained on the
   confirmed examples (cross-validated figures printed) and registered like any model version.
4. **After**: more parts stream in, runs of one defect at a time; the worker's scores now carry
   the class and its route, the alerts name the defect, and known defects the anomaly layer
   missed are reported as such. The anomaly model keeps running beside the classifier.

The summary scores the classes the stream reported against the simulator's truth.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from rich.console import Console
from rich.table import Table

from linewatch.config import Settings
from linewatch.demo import WORKER_REFRESH_S, start_worker, wait_for_worker
from linewatch.embedded.process import stop
from linewatch.embedded.stack import Stack
from linewatch.errors import InfrastructureError
from linewatch.kafka import ensure_topics
from linewatch.producers.frames import CameraFrame, produce_frames
from linewatch.schemas.ids import event_id
from linewatch.schemas.messages import NOT_A_DEFECT
from linewatch.storage.migrations import migrate

#: The simulated line: one SKU under one camera; the three defect kinds its parts get.
SKU, ASSET, CAMERA = "bracket-a", "line-30", "cam-1"
DEFECTS = ("scratch", "missing_feature", "colour_patch")
#: Frame side in pixels: at 128 px the anomaly model sees these defects in most parts (at 96 px it misses most).
SIZE = 128
#: Good parts the Day-1 anomaly model is trained on (cross-fitted, as the plant demo's: tails to 1e-3).
TRAIN_GOOD = 200
#: Seconds of event time between parts.
INTERVAL_S = 6.0
#: The line stands still this long between the runs of one defect after day 30 (> the alerts' cooldown).
PAUSE = timedelta(minutes=30)
#: How long the demo waits for the worker to score a phase's frames.
SCORE_TIMEOUT_S = 180.0


@dataclass
class Day30Result:
    summary: dict[str, Any]
    ok: bool


def run_day30(settings: Settings, *, seed: int = 11, console: Console) -> Day30Result:
    """The Day-1 -> Day-30 path with its own broker, database and worker (``linewatch demo --day30``)."""
    with Stack(settings) as stack:
        ensure_topics(stack.bootstrap, partitions=settings.topic_partitions, security=stack.kafka_security)
        migrate(stack.database_url)
        worker = start_worker(settings, stack)  # joins its group while the anomaly model trains
        try:
            result = day30_path(Line(stack.bootstrap, stack.database_url, settings, worker, stack.kafka_security,
                                     WORKER_REFRESH_S), seed=seed, console=console,
                                ready_check=lambda: wait_for_worker(worker, settings, console))
        finally:
            stop(worker, sig=signal.SIGTERM, timeout=30)
    if "after_per_class" in result.summary:
        _print_summary(result.summary, console)
    else:
        console.print("[yellow]no class reached the examples it needs; stream more parts (see `linewatch labels`)")
    return result


@dataclass
class Line:
    """Where the simulated line runs: the broker, the database and a running worker."""

    bootstrap: str
    database_url: str
    settings: Settings
    worker: Any  # the worker process (polled: a dead worker ends the run with its log)
    security: Any = None
    refresh_s: float = WORKER_REFRESH_S  # how often the worker looks for new models


def day30_path(line: Line, *, seed: int, console: Console, sku: str = SKU, train_good: int = TRAIN_GOOD,
               day1_parts: int = 240, run_length: int = 10, ready_check: Any = None) -> Day30Result:
    """The four steps on ``line``; ``ok`` when a class became ready, was trained, and alerts name it.

    ``sku`` is the name the line's parts carry (frames are drawn as :data:`SKU` parts whatever it is).
    """
    from linewatch.defects.classifier import train_classifier
    from linewatch.defects.label_store import class_counts, training_set
    from linewatch.defects.registry import register_classifier
    from linewatch.detectors.bundle import Scope
    from linewatch.simulation.confirmations import confirm_flagged
    from linewatch.simulation.frames import render_batch
    from linewatch.training import train_and_register

    asset, settings, url = f"{ASSET}-{uuid.uuid4().hex[:6]}", line.settings, line.database_url
    console.rule("[bold]Day 1[/]: an anomaly model from good parts only")
    good = render_batch(SKU, n=train_good, size=SIZE, seed=seed)[0]
    bundle, _ = train_and_register(good, modality="frames", scope=Scope(sku=sku), database_url=url,
                                   model_dir=settings.model_dir, target_far=settings.target_far,
                                   detector_params={"image_size": SIZE}, seed=seed)
    console.print(f"PatchCore {bundle.version} for {sku}: {train_good} good parts, no defect known")
    if ready_check is not None:
        ready_check()
    time.sleep(line.refresh_s + 1.0)  # the worker's next look at the registry

    console.rule("[bold]Days 1-29[/]: the line runs; an inspector confirms what was flagged")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    truth = _stream(line, _mixed(asset, sku, day1_parts, seed=seed + 1, start=start), console, "days 1-29")
    with psycopg.connect(url) as conn:
        confirmed = confirm_flagged(conn, truth)
        counts = class_counts(conn, sku=sku)
    console.print("confirmed: " + ", ".join(f"{c} {n}" for c, n in sorted(confirmed.items())))
    _print_counts(counts, console)
    ready = sorted(r["class"] for r in counts
                   if r["ready"] and r["class"] not in NOT_A_DEFECT and r["modality"] == "frames")
    if not ready:
        return Day30Result({"confirmed": confirmed, "ready_classes": []}, ok=False)

    console.rule("[bold]Day 30[/]: a classifier for the classes that are ready")
    data = training_set(url, modality="frames", sku=sku)
    keep = np.array([c in ready or c not in DEFECTS for c in data.y])  # classes short of examples wait
    clf, report = train_classifier(data.X[keep], [c for c, k in zip(data.y, keep, strict=True) if k],
                                   data.feature_names, seed=seed, meta={"feature_model": data.feature_model})
    with psycopg.connect(url) as conn:
        ref = register_classifier(conn, clf, modality="frames", scope=Scope(sku=sku), model_dir=settings.model_dir)
    _print_report(report, console)
    console.print(f"registered defect classifier {ref.version} for {sku} (classes {', '.join(clf.classes)})")
    time.sleep(line.refresh_s + 1.0)

    console.rule("[bold]After[/]: runs of one defect at a time")
    later = _runs(asset, sku, ready, run_length, seed=seed + 2, start=start + timedelta(hours=20))
    summary = _summarise(url, asset, _stream(line, later, console, "day 30"), confirmed, counts, report,
                         ref.version, ready)
    ok = summary["alerts_with_class"] > 0 and summary["accuracy_on_flagged"] >= 0.6
    return Day30Result(summary, ok)


def _frames(asset: str, sku: str, labels: Iterable[str], *, seed: int, start: datetime, gaps: Iterable[int] = ()
            ) -> list[tuple[CameraFrame, str]]:
    """One part per label (``good`` or a defect kind), each drawn with its own seed, INTERVAL_S apart.

    ``gaps`` are part indices before which the line stood still for :data:`PAUSE` (a shift change).
    """
    from linewatch.simulation.frames import render_frame

    pauses = sorted(gaps)
    out = []
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, i])
        image, _ = render_frame(SKU, defect=None if label == "good" else label, size=SIZE, rng=rng)
        ts = start + timedelta(seconds=i * INTERVAL_S) + PAUSE * sum(g <= i for g in pauses)
        out.append((CameraFrame(asset, CAMERA, sku, f"{asset}-{seed}-{i:05d}", ts, image), label))
    return out


def _mixed(asset: str, sku: str, n: int, *, seed: int, start: datetime) -> list[tuple[CameraFrame, str]]:
    """Days of production: 40 % good parts, the rest one of :data:`DEFECTS` each, in random order."""
    rng = np.random.default_rng(seed)
    labels = [str(rng.choice(DEFECTS)) if rng.random() < 0.6 else "good" for _ in range(n)]
    return _frames(asset, sku, labels, seed=seed, start=start)


def _runs(asset: str, sku: str, classes: list[str], length: int, *, seed: int, start: datetime
          ) -> list[tuple[CameraFrame, str]]:
    """For each class in turn: good parts, ``length`` parts of that defect, good parts, then a pause.

    The pause (longer than the alert lifecycle's cooldown) makes each run its own incident: a
    problem that comes back within the cooldown re-opens the alert it had.
    """
    labels: list[str] = []
    gaps = []
    for c in classes:
        if labels:
            gaps.append(len(labels))
        labels += ["good"] * 15 + [c] * length + ["good"] * 15
    return _frames(asset, sku, labels, seed=seed, start=start, gaps=gaps)


def _stream(line: Line, frames: list[tuple[CameraFrame, str]], console: Console, what: str) -> dict[uuid.UUID, str]:
    """Publish the frames, wait until every one has its score; the truth by event id."""
    from linewatch.embedded.process import tail

    truth = {event_id("frame", f.asset_id, f.camera, f.part_id, f.ts.isoformat()): label for f, label in frames}
    with console.status(f"{what}: {len(frames)} parts through the worker..."):
        produce_frames(line.bootstrap, (f for f, _ in frames), security=line.security)
        deadline = time.monotonic() + SCORE_TIMEOUT_S
        while True:
            with psycopg.connect(line.database_url) as conn:
                n = conn.execute("SELECT count(DISTINCT event_id) FROM scores WHERE event_id = ANY(%s)",
                                 (list(truth),)).fetchone()[0]
            if n >= len(truth):
                break
            if line.worker.poll() is not None:
                log = getattr(line.worker, "log_path", line.settings.data_dir / "logs" / "worker.log")
                raise InfrastructureError(f"the worker died (exit {line.worker.returncode}):\n{tail(log)}")
            if time.monotonic() > deadline:
                raise InfrastructureError(f"only {n} of {len(truth)} parts were scored in {SCORE_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
    time.sleep(3.0)  # fusion decides the last parts and writes their alerts
    return truth


def _summarise(url: str, asset: str, truth: dict[uuid.UUID, str], confirmed: dict[str, int], counts: list[dict],
               report: dict[str, Any], version: str, ready: list[str]) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        scored = conn.execute(
            """SELECT event_id, bool_or(is_anomaly), min(defect_class), max(defect_confidence), min(defect_route)
               FROM scores WHERE event_id = ANY(%s) GROUP BY event_id""", (list(truth),)).fetchall()
        alerts = conn.execute(
            """SELECT alert_id, min(defect_class) FILTER (WHERE state = 'open'), min(defect_route), count(*),
                      array_agg(DISTINCT e) AS events
               FROM alerts CROSS JOIN LATERAL unnest(event_ids) AS e
               WHERE asset_id = %s AND NOT shadow AND ts >= (SELECT min(ts) FROM scores WHERE event_id = ANY(%s))
               GROUP BY alert_id ORDER BY min(ts)""", (asset, list(truth))).fetchall()
    flagged = [(truth[e], c) for e, a, c, _, _ in scored if a and truth[e] in ready]
    missed = [(truth[e], c) for e, a, c, _, _ in scored if not a and c not in (None, *NOT_A_DEFECT)]
    per_class = {}
    for c in ready:
        predicted = [t for t, p in ((truth[e], cl) for e, _, cl, _, _ in scored) if p == c]
        actual = [p for t, p in ((truth[e], cl) for e, _, cl, _, _ in scored) if t == c]
        per_class[c] = {"precision": round(sum(t == c for t in predicted) / len(predicted), 3) if predicted else None,
                        "recall": round(sum(p == c for p in actual) / len(actual), 3) if actual else None,
                        "n": len(actual)}
    return {
        "confirmed": confirmed,
        "label_counts": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in counts],
        "ready_classes": ready,
        "classifier_version": version,
        "classifier_cv": {k: report[k] for k in ("macro_f1", "accuracy", "unknown_rate", "per_class") if k in report},
        "after_per_class": per_class,
        "accuracy_on_flagged": round(sum(t == c for t, c in flagged) / len(flagged), 3) if flagged else 0.0,
        "flagged_after": len(flagged),
        "known_defects_below_threshold": len(missed),
        "alerts": [{"alert_id": str(a), "defect_class": c, "route": r, "rows": n, "drawn": _drawn(events, truth)}
                   for a, c, r, n, events in alerts],
        "alerts_with_class": sum(c is not None for _, c, _, _, _ in alerts),
    }


def _drawn(events: list[uuid.UUID], truth: dict[uuid.UUID, str]) -> str | None:
    """The defect the simulator drew in most of an alert's defective parts (what the alert should name)."""
    drawn = [truth[e] for e in events if truth.get(e, "good") != "good"]
    return max(sorted(set(drawn)), key=drawn.count) if drawn else None


def _print_counts(rows: list[dict], console: Console) -> None:
    table = Table(title="label store: confirmed examples per class")
    for col in ("class", "examples", "with features", "ready"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["class"], str(r["examples"]), str(r["with_features"]), "yes" if r["ready"] else "no")
    console.print(table)


def _print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"cross-validated: macro F1 {report['macro_f1']:.3f}, accuracy {report['accuracy']:.3f}, "
                        f"unknown {report['unknown_rate']:.1%}")
    for col in ("class", "precision", "recall", "f1", "n"):
        table.add_column(col, justify="right")
    for c, m in report["per_class"].items():
        table.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["n"]))
    console.print(table)


def _print_summary(s: dict[str, Any], console: Console) -> None:
    table = Table(title="after day 30: the classes the stream reported, against the simulator's truth")
    for col in ("class", "precision", "recall", "parts"):
        table.add_column(col, justify="right")
    for c, m in s["after_per_class"].items():
        table.add_row(c, str(m["precision"]), str(m["recall"]), str(m["n"]))
    console.print(table)
    console.print(f"flagged defects named right: {s['accuracy_on_flagged']:.0%} of {s['flagged_after']}; "
                  f"known defects the anomaly layer missed, reported by the classifier: "
                  f"{s['known_defects_below_threshold']}")
    for a in s["alerts"]:
        console.print(f"alert {a['alert_id']}: {a['defect_class'] or 'unclassified'}"
                      + (f" -> {a['route']}" if a["route"] else "") + f" (the parts had: {a['drawn']})")
