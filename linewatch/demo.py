"""``linewatch demo``: the whole system on one machine, with a simulated plant and ground truth.

It starts (or connects to) the broker and the database, applies the migrations, trains a
model on simulated known-good parts, runs the real Faust worker as a child process, streams
parts with injected faults plus a handful of malformed messages, waits until every message
is accounted for (scored, stored unscored, or dead-lettered), and reports what the system
found against the ground truth.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from linewatch.config import Settings
from linewatch.embedded.process import spawn, stop, tail
from linewatch.embedded.stack import Stack
from linewatch.errors import InfrastructureError
from linewatch.kafka import ensure_topics
from linewatch.lifecycle import READY_MESSAGE
from linewatch.producers.spc import produce_spc
from linewatch.simulation.spc import FAULT_TYPES, simulate_spc
from linewatch.storage.migrations import migrate
from linewatch.training import train_and_register

#: A multivariate model and a univariate chart side by side: the correlation break shows why
#: both are needed (the chart cannot see it; the chart catches small sustained shifts sooner).
DEMO_DETECTORS: tuple[str, ...] = ("robust_mahalanobis", "ewma")
PRIMARY_DETECTOR = DEMO_DETECTORS[0]
#: Known-good parts the demo trains on (enough for an empirical 1-in-1,000 threshold).
TRAIN_PARTS = 20_000
#: Seconds the demo waits after the last message for the worker to drain.
DRAIN_TIMEOUT_S = 60.0
#: How long the worker may take to start and join its group before the demo gives up.
WORKER_START_TIMEOUT_S = 90.0


def malformed_messages(run_id: str) -> list[tuple[str, bytes]]:
    """One of each kind of bad input a plant will eventually send, with its expected reason.

    ``run_id`` makes this run's messages distinct from an earlier run's, which the embedded
    broker (offsets restart with it) would otherwise hand over at the same offsets with the
    same bytes, i.e. as redeliveries of dead letters already stored.
    """
    ok = {"asset_id": "press-1", "part_id": f"bad-1-{run_id}", "ts": "2026-01-05T06:00:00Z",
          "values": {"length_mm": 120.0}}
    return [
        ("undecodable bytes", b"\x00\xff\xfe not json at all " + run_id.encode()),
        ("schema violation", json.dumps({**ok, "part_id": f"bad-2-{run_id}", "values": "twelve"}).encode()),
        ("NaN value", json.dumps({**ok, "part_id": f"bad-3-{run_id}", "values": {"length_mm": float("nan")}}).encode()),
        ("absurd size", b'{"asset_id":"press-1","run":"' + run_id.encode() + b'","pad":"' + b"x" * 300_000 + b'"}'),
        ("unknown field", json.dumps({**ok, "part_id": f"bad-5-{run_id}", "colour": "red"}).encode()),
        ("naive timestamp", json.dumps({**ok, "part_id": f"bad-6-{run_id}", "ts": "2026-01-05T06:00:00"}).encode()),
    ]


@dataclass
class DemoResult:
    summary: dict[str, Any]
    ok: bool


def run_demo(settings: Settings, *, seconds: float, rate: float, seed: int, console: Console) -> DemoResult:
    t0 = time.monotonic()
    with Stack(settings) as stack:
        console.print(f"[bold]broker[/] {stack.bootstrap}  [bold]database[/] {_mask(stack.database_url)}  "
                      f"[bold]data dir[/] {settings.data_dir.resolve()}")
        ensure_topics(stack.bootstrap, partitions=settings.topic_partitions, security=stack.kafka_security)
        applied = migrate(stack.database_url)
        console.print(f"migrations: {len(applied.applied)} applied, {len(applied.already)} already there "
                      f"({'TimescaleDB' if applied.timescale else 'plain PostgreSQL'})")

        normal = simulate_spc(n_parts=TRAIN_PARTS, seed=seed, fault_fraction=0.0)
        versions: dict[str, str] = {}
        for detector in DEMO_DETECTORS:
            bundle, ref = train_and_register(
                normal.X, feature_names=normal.feature_names, database_url=stack.database_url,
                model_dir=settings.model_dir, detector=detector, target_far=settings.target_far, seed=seed,
                groups=normal.asset_id,
            )
            versions[detector] = bundle.version
            console.print(f"trained [bold]{detector}[/] on {len(normal)} known-good parts -> {ref.version}")

        worker = _start_worker(settings, stack)
        try:
            _wait_for_worker(worker, settings, stack.database_url, console)
            stream_seconds = max(10.0, seconds - (time.monotonic() - t0))
            n_parts = max(1000, int(stream_seconds * rate))
            sim = simulate_spc(n_parts=n_parts, seed=seed + 1, fault_fraction=0.2,
                               start=_now_minus(n_parts))
            bad = malformed_messages(uuid.uuid4().hex[:8])
            expected_total = n_parts + len(bad)
            baseline = _count(stack.database_url)
            _stream_and_watch(stack, sim, bad, rate, expected_total, baseline, console, worker, settings)
            summary = _summarise(stack.database_url, sim, bad, versions, baseline, time.monotonic() - t0)
        finally:
            stop(worker, sig=signal.SIGTERM, timeout=30)
    _print_summary(summary, console)
    ok = summary["scores_written"] > 0 and summary["deadletters"] == len(bad)
    return DemoResult(summary=summary, ok=ok)


def _now_minus(n_parts: int):
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n_parts)


def _mask(url: str) -> str:
    from linewatch.config import mask_url

    return mask_url(url)


def _start_worker(settings: Settings, stack: Stack):
    env = dict(os.environ)
    env.update({
        "LINEWATCH_BROKER_URL": stack.bootstrap,
        "LINEWATCH_DATABASE_URL": stack.database_url,
        "LINEWATCH_DATA_DIR": str(settings.data_dir),
        "LINEWATCH_MODEL_REFRESH_S": "2",
        **settings.kafka_env(),  # the broker's TLS/SASL settings, if any came from --config
    })
    log_path = settings.data_dir / "logs" / "worker.log"
    log_path.unlink(missing_ok=True)  # the readiness check reads this run's log only
    return spawn([sys.executable, "-m", "linewatch", "worker", "--log-level", "warn"], log_path=log_path, env=env)


def _count(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        scores = conn.execute("SELECT count(*) FROM scores").fetchone()[0]
        parts = conn.execute("SELECT count(DISTINCT event_id) FROM spc_measurements").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM deadletters").fetchone()[0]
    return scores, parts, dead


def _wait_for_worker(worker, settings: Settings, url: str, console: Console) -> None:
    """The worker is ready when it has joined its group; we see it by a probe record being stored."""
    log_path = settings.data_dir / "logs" / "worker.log"
    with console.status("starting the Faust worker and joining its consumer group..."):
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise InfrastructureError(f"the worker exited with code {worker.returncode}:\n{tail(log_path)}")
            if READY_MESSAGE in log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
    raise InfrastructureError(f"the worker did not start within {WORKER_START_TIMEOUT_S:.0f} s:\n{tail(log_path)}")


def _stream_and_watch(stack, sim, bad, rate, expected_total, baseline, console, worker, settings) -> None:
    import threading

    sent = {"n": 0}
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            records = sim.records()
            half = len(records) // 2
            # Malformed messages arrive mid-stream: the agent must keep scoring what follows.
            produce_spc(stack.bootstrap, records[:half], rate_per_s=rate,
                        progress=lambda n: sent.__setitem__("n", n), security=stack.kafka_security)
            produce_spc(stack.bootstrap, records[half:], rate_per_s=rate, extra=[b for _, b in bad],
                        progress=lambda n: sent.__setitem__("n", half + n), security=stack.kafka_security)
        except BaseException as e:
            errors.append(e)

    producer = threading.Thread(target=produce, name="simulated-plant", daemon=True)
    producer.start()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        t_sent = progress.add_task("parts produced ", total=expected_total)
        t_done = progress.add_task("parts processed", total=expected_total)
        t_anom = progress.add_task("scores written ", total=len(sim) * len(DEMO_DETECTORS))
        drain_deadline = None
        while True:
            scores, parts, dead = (now - before for now, before in zip(_count(stack.database_url), baseline,
                                                                         strict=True))
            progress.update(t_sent, completed=sent["n"])
            progress.update(t_done, completed=parts + dead)
            progress.update(t_anom, completed=scores)
            if errors:
                raise errors[0]
            if worker.poll() is not None:
                log_path = settings.data_dir / "logs" / "worker.log"
                raise InfrastructureError(f"the worker died (exit {worker.returncode}):\n{tail(log_path)}")
            if parts + dead >= expected_total:
                break
            if not producer.is_alive():
                drain_deadline = drain_deadline or time.monotonic() + DRAIN_TIMEOUT_S
                if time.monotonic() > drain_deadline:
                    console.print("[yellow]the worker did not drain every message in time; reporting what landed")
                    break
            time.sleep(0.5)
    producer.join(timeout=5)


def _summarise(url: str, sim, bad, versions: dict[str, str], baseline: tuple[int, int, int], elapsed: float
               ) -> dict[str, Any]:
    event_ids = sim.event_ids()
    truth = dict(zip(event_ids, sim.fault.tolist(), strict=True))
    now = _count(url)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT detector, event_id::text, is_anomaly, top_feature FROM scores WHERE model_version = ANY(%s)",
            (list(versions.values()),),
        ).fetchall()
        dl = conn.execute("SELECT reason FROM deadletters ORDER BY received_at DESC LIMIT %s",
                          (now[2] - baseline[2],)).fetchall()
    by_detector = {det: _detection_table(truth, [r[1:] for r in rows if r[0] == det]) for det in versions}
    primary = by_detector[PRIMARY_DETECTOR]
    return {
        "events_in": len(sim) + len(bad),
        "parts_stored": now[1] - baseline[1],
        "scores_written": len(rows),
        "deadletters": len(dl),
        "deadletter_reasons": [r[0][:120] for r in dl],
        "primary_detector": PRIMARY_DETECTOR,
        "faults": primary["faults"],
        "false_alarms": primary["false_alarms"],
        "normal_parts_scored": primary["normal_parts_scored"],
        "false_alarm_rate": primary["false_alarm_rate"],
        "by_detector": by_detector,
        "model_versions": versions,
        "elapsed_s": round(elapsed, 1),
        "correlation_break_detected": bool(primary["faults"]["correlation_break"]["detected"]),
    }


def _detection_table(truth: dict[str, str], rows: list[tuple]) -> dict[str, Any]:
    """Per fault type: parts, how many were scored and flagged, and the feature most often blamed."""
    flagged = {eid: anomalous for eid, anomalous, _ in rows}
    top = {eid: feature for eid, _, feature in rows}
    faults: dict[str, Any] = {}
    for kind in (*FAULT_TYPES, "none"):
        ids = [e for e, f in truth.items() if f == kind]
        scored = [e for e in ids if e in flagged]
        hits = sum(flagged[e] for e in scored)
        entry: dict[str, Any] = {"parts": len(ids), "scored": len(scored), "detected": hits,
                                 "detection_rate": round(hits / len(scored), 4) if scored else None}
        culprits = [top[e] for e in scored if flagged[e] and top[e]]
        entry["top_feature"] = max(set(culprits), key=culprits.count) if culprits else None
        faults[kind] = entry
    normal = faults.pop("none")
    return {
        "faults": faults,
        "false_alarms": normal["detected"],
        "normal_parts_scored": normal["scored"],
        "false_alarm_rate": round(normal["detected"] / normal["scored"], 5) if normal["scored"] else None,
    }


def _print_summary(s: dict[str, Any], console: Console) -> None:
    detectors = list(s["by_detector"])
    table = Table(title="What linewatch found (simulated plant, ground truth known)")
    table.add_column("fault")
    table.add_column("parts", justify="right")
    for det in detectors:
        table.add_column(f"{det}\nflagged", justify="right")
    table.add_column(f"blamed by {detectors[0]}")
    for kind, f in s["faults"].items():
        cells = []
        for det in detectors:
            g = s["by_detector"][det]["faults"][kind]
            cells.append(f"{g['detected']}/{g['scored']} ({g['detection_rate']:.0%})" if g["scored"] else "-")
        table.add_row(kind, str(f["parts"]), *cells, f["top_feature"] or "-")
    cells = []
    for det in detectors:
        d = s["by_detector"][det]
        rate = f"{d['false_alarm_rate']:.2%}" if d["false_alarm_rate"] is not None else "-"
        cells.append(f"{d['false_alarms']}/{d['normal_parts_scored']} ({rate})")
    table.add_row("normal (false alarms)", "", *cells, "")
    console.print(table)
    console.print(f"events in: {s['events_in']}   scores written: {s['scores_written']}   "
                  f"dead letters: {s['deadletters']}   elapsed: {s['elapsed_s']} s")
    for reason in s["deadletter_reasons"]:
        console.print(f"  [dim]dead letter:[/] {reason}")


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
