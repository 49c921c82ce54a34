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
#: Good parts the Day-1 anomaly model is trained on.
TRAIN_GOOD = 60
#: Seconds of event time between parts.
INTERVAL_S = 6.0
#: How long the demo waits for the worker to score a phase's frames.
SCORE_TIMEOUT_S = 180.0


@dataclass
class Day30Result:
    summary: dict[str, Any]
    ok: bool


def run_day30(settings: Settings, *, day1_parts: int = 180, run_length: int = 10, seed: int = 11,
              console: Console) -> Day30Result:
    """The Day-1 -> Day-30 path end to end; ``ok`` when a class became ready, trained and reached the alerts."""
    from linewatch.defects.classifier import train_classifier
    from linewatch.defects.label_store import class_counts, training_set
    from linewatch.defects.registry import register_classifier
    from linewatch.detectors.bundle import Scope
    from linewatch.simulation.confirmations import confirm_flagged
    from linewatch.simulation.frames import render_batch
    from linewatch.training import train_and_register

    run = uuid.uuid4().hex[:6]
    asset = f"{ASSET}-{run}"
    with Stack(settings) as stack:
        ensure_topics(stack.bootstrap, partitions=settings.topic_partitions, security=stack.kafka_security)
        migrate(stack.database_url)
        worker = start_worker(settings, stack)
        try:
            console.rule("[bold]Day 1[/]: an anomaly model from good parts only")
            good = render_batch(SKU, n=TRAIN_GOOD, size=SIZE, seed=seed)[0]
            bundle, _ = train_and_register(good, modality="frames", scope=Scope(sku=SKU),
                                           database_url=stack.database_url, model_dir=settings.model_dir,
                                           target_far=0.02, detector_params={"image_size": SIZE}, seed=seed)
            console.print(f"PatchCore {bundle.version} for {SKU}: {TRAIN_GOOD} good parts, no defect known")
            wait_for_worker(worker, settings, console)
            time.sleep(WORKER_REFRESH_S + 1.0)

            console.rule("[bold]Days 1-29[/]: the line runs; an inspector confirms what was flagged")
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
            day1 = _mixed(asset, day1_parts, seed=seed + 1, start=start)
            truth = _stream(stack, settings, worker, day1, console, "days 1-29")
            with psycopg.connect(stack.database_url) as conn:
                confirmed = confirm_flagged(conn, truth)
                counts = class_counts(conn, sku=SKU)
            console.print("confirmed: " + ", ".join(f"{c} {n}" for c, n in sorted(confirmed.items())))
            _print_counts(counts, console)
            ready = sorted(r["class"] for r in counts if r["ready"] and r["class"] not in NOT_A_DEFECT
                           and r["modality"] == "frames")

            console.rule("[bold]Day 30[/]: a classifier for the classes that are ready")
            data = training_set(stack.database_url, modality="frames", sku=SKU)
            keep = [c in ready or c not in DEFECTS for c in data.y]  # classes short of examples wait
            X, y = data.X[np.array(keep)], [c for c, k in zip(data.y, keep, strict=True) if k]
            clf, report = train_classifier(X, y, data.feature_names, seed=seed)
            with psycopg.connect(stack.database_url) as conn:
                ref = register_classifier(conn, clf, modality="frames", scope=Scope(sku=SKU),
                                          model_dir=settings.model_dir)
            _print_report(report, console)
            console.print(f"registered defect classifier {ref.version} for {SKU} (classes {', '.join(clf.classes)})")
            time.sleep(WORKER_REFRESH_S + 1.0)

            console.rule("[bold]After[/]: runs of one defect at a time")
            later = _runs(asset, ready, run_length, seed=seed + 2, start=start + timedelta(hours=20))
            truth_after = _stream(stack, settings, worker, later, console, "day 30")
            summary = _summarise(stack.database_url, asset, truth_after, confirmed, counts, report, ref.version,
                                 ready)
        finally:
            stop(worker, sig=signal.SIGTERM, timeout=30)
    _print_summary(summary, console)
    ok = bool(ready) and summary["alerts_with_class"] > 0 and summary["accuracy_on_flagged"] >= 0.6
    return Day30Result(summary, ok)


def _frames(asset: str, labels: Iterable[str], *, seed: int, start: datetime) -> list[tuple[CameraFrame, str]]:
    """One part per label (``good`` or a defect kind), each drawn with its own seed, INTERVAL_S apart."""
    from linewatch.simulation.frames import render_frame

    out = []
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, i])
        image, _ = render_frame(SKU, defect=None if label == "good" else label, size=SIZE, rng=rng)
        ts = start + timedelta(seconds=i * INTERVAL_S)
        out.append((CameraFrame(asset, CAMERA, SKU, f"{asset}-{seed}-{i:05d}", ts, image), label))
    return out


def _mixed(asset: str, n: int, *, seed: int, start: datetime) -> list[tuple[CameraFrame, str]]:
    """Days of production: 40 % good parts, the rest one of :data:`DEFECTS` each, in random order."""
    rng = np.random.default_rng(seed)
    labels = [str(rng.choice(DEFECTS)) if rng.random() < 0.6 else "good" for _ in range(n)]
    return _frames(asset, labels, seed=seed, start=start)


def _runs(asset: str, classes: list[str], length: int, *, seed: int, start: datetime) -> list[tuple[CameraFrame, str]]:
    """Good parts, then ``length`` parts of one defect, for each class in turn: one alert per run."""
    labels: list[str] = ["good"] * 15
    for c in classes:
        labels += [c] * length + ["good"] * 15
    return _frames(asset, labels, seed=seed, start=start)


def _stream(stack: Stack, settings: Settings, worker: Any, frames: list[tuple[CameraFrame, str]], console: Console,
            what: str) -> dict[uuid.UUID, str]:
    """Publish the frames, wait until every one has its score; the truth by event id."""
    from linewatch.embedded.process import tail

    truth = {event_id("frame", f.asset_id, f.camera, f.part_id, f.ts.isoformat()): label for f, label in frames}
    with console.status(f"{what}: {len(frames)} parts through the worker..."):
        produce_frames(stack.bootstrap, (f for f, _ in frames), security=stack.kafka_security)
        deadline = time.monotonic() + SCORE_TIMEOUT_S
        while True:
            with psycopg.connect(stack.database_url) as conn:
                n = conn.execute("SELECT count(DISTINCT event_id) FROM scores WHERE event_id = ANY(%s)",
                                 (list(truth),)).fetchone()[0]
            if n >= len(truth):
                break
            if worker.poll() is not None:
                raise InfrastructureError(f"the worker died (exit {worker.returncode}):\n"
                                          f"{tail(settings.data_dir / 'logs' / 'worker.log')}")
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
            """SELECT alert_id, min(defect_class) FILTER (WHERE state = 'open'), min(defect_route), count(*)
               FROM alerts WHERE asset_id = %s AND NOT shadow AND ts >= (SELECT min(ts) FROM scores
                                                                           WHERE event_id = ANY(%s))
               GROUP BY alert_id""", (asset, list(truth))).fetchall()
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
        "alerts": [{"alert_id": str(a), "defect_class": c, "route": r, "rows": n} for a, c, r, n in alerts],
        "alerts_with_class": sum(c is not None for _, c, _, _ in alerts),
    }


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
                      + (f" -> {a['route']}" if a["route"] else ""))
