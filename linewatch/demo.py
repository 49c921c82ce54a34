"""``linewatch demo``: the whole system on one machine, with a simulated multimodal plant and ground truth.

It starts (or connects to) the broker and the database, applies the migrations, starts the real
Faust worker (it joins its group while the models train), trains the plant's models on its own
known-good data (SPC charts and a robust Mahalanobis model, a multi-sensor signals model, a
PatchCore image model, and a shadow challenger), streams the plant in compressed time: three
machining cells whose parts are measured and photographed under one part id while their spindles
send vibration, current and temperature, with a bearing fault (vibration, then the parts'
runout), a tool wear (dimensions and surface images) and a camera-only cosmetic defect, an idle
period, and a handful of malformed messages. It waits until every message is accounted for
(scored, stored unscored or dead-lettered) and the fusion agent has settled, then reports the
alerts the system raised against the ground truth.

Time: the plant runs at :data:`SPEED` plant seconds per wall second (a part every 10 plant
seconds per cell), so the demo's ~35 streaming seconds are about 70 minutes of plant time;
every figure in the summary that has a unit of time is in plant time.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from linewatch.plant_models import train_plant_models
from linewatch.producers.plant import produce_plant
from linewatch.schemas.topics import FRAMES, SPC
from linewatch.simulation.plant import FAULT_KINDS, FaultEpisode, PlantConfig, PlantSimulation, simulate_plant
from linewatch.storage.migrations import migrate

#: Plant seconds per wall second while streaming.
SPEED = 120.0
#: Wall seconds the demo keeps for setup (training, worker start) and the final drain.
SETUP_S = 25.0
#: Seconds the demo waits after the last message for the worker to drain.
DRAIN_TIMEOUT_S = 60.0
#: Wall seconds without any new score or alert row after which fusion counts as settled.
SETTLE_S = 3.0
#: How long the worker may take to start and join its group before the demo gives up.
WORKER_START_TIMEOUT_S = 90.0
#: An alert opened this long (plant time) after an episode's end still belongs to it (the close of
#: the evidence window and the parts waiting for their images).
ATTRIBUTION_GRACE_S = 600.0
#: How often the demo's worker looks for new models (seconds): a model trained mid-run goes live quickly.
WORKER_REFRESH_S = 2
#: The shadow challenger the demo runs beside the champion EWMA chart (a faster chart).
SHADOW_DETECTOR, SHADOW_PARAMS = "ewma", {"lam": 0.4}


def malformed_messages(run_id: str) -> list[tuple[str, bytes]]:
    """One of each kind of bad input a plant will eventually send, as ``(topic, value)``.

    ``run_id`` makes this run's messages distinct from an earlier run's, which the embedded
    broker (offsets restart with it) would otherwise hand over at the same offsets with the
    same bytes, i.e. as redeliveries of dead letters already stored.
    """
    ok = {"asset_id": "cell-1", "part_id": f"bad-1-{run_id}", "ts": "2026-01-05T06:00:00Z",
          "values": {"bore_diameter_mm": 25.0}}
    return [
        (SPC.name, b"\x00\xff\xfe not json at all " + run_id.encode()),
        (SPC.name, json.dumps({**ok, "part_id": f"bad-2-{run_id}", "values": "twelve"}).encode()),
        (SPC.name, json.dumps({**ok, "part_id": f"bad-3-{run_id}",
                               "values": {"bore_diameter_mm": float("nan")}}).encode()),
        (SPC.name, b'{"asset_id":"cell-1","run":"' + run_id.encode() + b'","pad":"' + b"x" * 300_000 + b'"}'),
        (SPC.name, json.dumps({**ok, "part_id": f"bad-5-{run_id}", "colour": "red"}).encode()),
        (SPC.name, json.dumps({**ok, "part_id": f"bad-6-{run_id}", "ts": "2026-01-05T06:00:00"}).encode()),
        (FRAMES.name, b"\x89PNG\r\n\x1a\n truncated camera frame " + run_id.encode()),
    ]


@dataclass
class DemoResult:
    summary: dict[str, Any]
    ok: bool


def run_demo(settings: Settings, *, seconds: float, speed: float = SPEED, seed: int, console: Console) -> DemoResult:
    t0 = time.monotonic()
    with Stack(settings) as stack:
        console.print(f"[bold]broker[/] {stack.bootstrap}  [bold]database[/] {_mask(stack.database_url)}  "
                      f"[bold]data dir[/] {settings.data_dir.resolve()}")
        ensure_topics(stack.bootstrap, partitions=settings.topic_partitions, security=stack.kafka_security)
        applied = migrate(stack.database_url)
        console.print(f"migrations: {len(applied.applied)} applied, {len(applied.already)} already there "
                      f"({'TimescaleDB' if applied.timescale else 'plain PostgreSQL'})")
        worker = start_worker(settings, stack)  # joins its consumer group while the models train
        try:
            stream_s = max(15.0, seconds - SETUP_S)
            config = PlantConfig(duration_s=round(stream_s * speed / 10.0) * 10.0, seed=seed)
            models = train_plant_models(config, database_url=stack.database_url, model_dir=settings.model_dir,
                                        seed=seed, console=console)
            shadow = _register_shadow(config, stack.database_url, settings, seed, console)
            versions = {b.detector_name + ("" if b.modality == "spc" else f" ({b.modality})"): b.version
                        for b in models.bundles()}
            wait_for_worker(worker, settings, console)
            time.sleep(2.5)  # the worker looks for new models every 2 s: let it load these before parts arrive
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=config.duration_s)
            sim = simulate_plant(config, start=start)
            bad = malformed_messages(uuid.uuid4().hex[:8])
            baseline = _counts(stack.database_url)
            _stream_and_watch(stack, sim, bad, speed, baseline, console, worker, settings)
            summary = summarise(stack.database_url, sim, bad, baseline, speed=speed, elapsed=time.monotonic() - t0)
            summary["model_versions"] = {**versions, f"{SHADOW_DETECTOR} (shadow)": shadow}
        finally:
            stop(worker, sig=signal.SIGTERM, timeout=30)
    print_summary(summary, console)
    alerts = summary["alerts"]
    ok = (summary["scores_written"] > 0 and summary["deadletters"] == len(bad)
          and all(f["alerted"] == f["episodes"] for f in alerts["per_fault"].values()))
    return DemoResult(summary=summary, ok=ok)


def _register_shadow(config: PlantConfig, url: str, settings: Settings, seed: int, console: Console) -> str:
    """A challenger for the EWMA charts (a faster chart, lambda 0.4), registered as a shadow: scored, never routed."""
    from linewatch.plant_models import TRAIN_PARTS
    from linewatch.simulation.plant import training_spc
    from linewatch.training import train_and_register

    normal = training_spc(config, TRAIN_PARTS[SHADOW_DETECTOR])
    bundle, ref = train_and_register(normal.X, feature_names=normal.feature_names, database_url=url,
                                     model_dir=settings.model_dir, detector=SHADOW_DETECTOR,
                                     detector_params=SHADOW_PARAMS, target_far=settings.target_far, seed=seed,
                                     groups=normal.asset_id, shadow=True)
    console.print(f"shadow challenger: {SHADOW_DETECTOR} lambda {SHADOW_PARAMS['lam']} -> {ref.version} "
                  "(scored into shadow_scores, its alerts never routed)")
    return bundle.version


def _mask(url: str) -> str:
    from linewatch.config import mask_url

    return mask_url(url)


def start_worker(settings: Settings, stack: Stack):
    """The real worker as a child process of the demo, logging to the data dir's ``logs/worker.log``."""
    env = dict(os.environ)
    env.update({
        "LINEWATCH_BROKER_URL": stack.bootstrap,
        "LINEWATCH_DATABASE_URL": stack.database_url,
        "LINEWATCH_DATA_DIR": str(settings.data_dir),
        "LINEWATCH_MODEL_REFRESH_S": str(WORKER_REFRESH_S),
        **settings.kafka_env(),  # the broker's TLS/SASL settings, if any came from --config
    })
    log_path = settings.data_dir / "logs" / "worker.log"
    log_path.unlink(missing_ok=True)  # the readiness check reads this run's log only
    return spawn([sys.executable, "-m", "linewatch", "worker", "--processes", "1", "--log-level", "warn"],
                 log_path=log_path, env=env)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM scores), (SELECT count(DISTINCT event_id) FROM spc_measurements),
                      (SELECT count(*) FROM scores WHERE modality = 'frames'), (SELECT count(*) FROM deadletters),
                      (SELECT count(*) FROM alerts), (SELECT count(*) FROM shadow_scores)""").fetchone()
    return dict(zip(("scores", "parts", "frames", "dead", "alerts", "shadow_scores"), row, strict=True))


def wait_for_worker(worker, settings: Settings, console: Console) -> None:
    """The worker is ready when it has joined its group (its log says so)."""
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


def _stream_and_watch(stack, sim: PlantSimulation, bad, speed, baseline, console, worker, settings) -> None:
    n_parts = len(sim.parts.t)
    expected = 2 * n_parts + len(bad)  # every part's record and frame, stored or dead-lettered
    sent = {"n": 0}
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            produce_plant(stack.bootstrap, sim, speed=speed, extra=bad, security=stack.kafka_security,
                          progress=lambda counts: sent.__setitem__("n", sum(counts.values())))
        except BaseException as e:
            errors.append(e)

    producer = threading.Thread(target=produce, name="simulated-plant", daemon=True)
    producer.start()
    total_messages = n_parts * 2 + len(sim.signal_messages()) + len(sim.machine_states()) + len(bad)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    log_path = settings.data_dir / "logs" / "worker.log"
    with Progress(*columns, console=console) as progress:
        t_sent = progress.add_task("messages produced      ", total=total_messages)
        t_done = progress.add_task("parts + frames handled ", total=expected)
        t_alerts = progress.add_task("alert events           ", total=None)
        drain_deadline = None
        last_change, last = time.monotonic(), None
        while True:
            now = _counts(stack.database_url)
            d = {k: now[k] - baseline[k] for k in now}
            handled = d["parts"] + d["frames"] + d["dead"]
            progress.update(t_sent, completed=sent["n"])
            progress.update(t_done, completed=min(handled, expected))
            progress.update(t_alerts, completed=d["alerts"])
            if errors:
                raise errors[0]
            if worker.poll() is not None:
                raise InfrastructureError(f"the worker died (exit {worker.returncode}):\n{tail(log_path)}")
            if last != now:
                last, last_change = now, time.monotonic()
            if not producer.is_alive():
                settled = time.monotonic() - last_change >= SETTLE_S
                if handled >= expected and settled:
                    break
                drain_deadline = drain_deadline or time.monotonic() + DRAIN_TIMEOUT_S
                if time.monotonic() > drain_deadline:
                    console.print("[yellow]the worker did not drain every message in time; reporting what landed")
                    break
            time.sleep(0.5)
    producer.join(timeout=5)


# -- the summary ---------------------------------------------------------------------------------
def _matches(culprits: dict[str, tuple[str, ...]], contributor: dict[str, Any] | None) -> bool:
    if not contributor:
        return False
    names = culprits.get(contributor.get("modality") or "", ())
    return any(contributor["name"].startswith(n) for n in names)


def summarise(url: str, sim: PlantSimulation, bad, baseline: dict[str, int], *, speed: float, elapsed: float
              ) -> dict[str, Any]:
    """The demo's figures against the plant's ground truth (times in plant seconds)."""
    start, end = sim.span
    assets = list(sim.config.assets)
    now = _counts(url)
    with psycopg.connect(url) as conn:
        opens = conn.execute(
            """SELECT alert_id, asset_id, opened_at, contributors, severity, route, shadow FROM alerts
               WHERE kind = 'anomaly' AND state = 'open' AND asset_id = ANY(%s) AND opened_at >= %s
               ORDER BY opened_at""", (assets, start - timedelta(minutes=5))).fetchall()
        closed = {r[0] for r in conn.execute(
            "SELECT DISTINCT alert_id FROM alerts WHERE state = 'close' AND asset_id = ANY(%s) AND ts >= %s",
            (assets, start)).fetchall()}
        suppressed = conn.execute(
            "SELECT reason, count(*) FROM alert_suppressions WHERE NOT shadow AND asset_id = ANY(%s) AND ts >= %s "
            "GROUP BY reason", (assets, start)).fetchall()
        retrain = conn.execute(
            "SELECT count(*) FROM alerts WHERE kind = 'retrain_recommended' AND asset_id = ANY(%s) AND ts >= %s",
            (assets, start)).fetchone()[0]
        dl = conn.execute("SELECT reason FROM deadletters ORDER BY received_at DESC LIMIT %s",
                          (now["dead"] - baseline["dead"],)).fetchall()
        by_modality = dict(conn.execute(
            "SELECT modality, count(*) FROM scores WHERE asset_id = ANY(%s) AND ts >= %s GROUP BY modality",
            (assets, start)).fetchall())
    first_open: dict[uuid.UUID, tuple] = {}
    for r in opens:
        first_open.setdefault(r[0], r)  # a re-opened alert is still the one incident
    live = [r for r in first_open.values() if not r[6]]
    shadow = [r for r in first_open.values() if r[6]]
    grace = timedelta(seconds=ATTRIBUTION_GRACE_S)

    def episode_of(r) -> FaultEpisode | None:
        for ep in sim.episodes:
            if ep.asset_id == r[1] and ep.start <= r[2] <= ep.end + grace:
                return ep
        return None

    per_fault: dict[str, Any] = {}
    attributed: set[uuid.UUID] = set()
    for kind in FAULT_KINDS:
        eps = [e for e in sim.episodes if e.kind == kind]
        if not eps:
            continue
        delays, right, alerts_of_kind = [], 0, 0
        detected = 0
        for ep in eps:
            mine = [r for r in live if episode_of(r) is ep]
            attributed.update(r[0] for r in mine)
            alerts_of_kind += len(mine)
            right += sum(_matches(ep.culprits, (r[3] or [None])[0]) for r in mine)
            if mine:
                detected += 1
                delays.append((mine[0][2] - ep.start).total_seconds())
        per_fault[kind] = {
            "episodes": len(eps), "alerted": detected, "alerts": alerts_of_kind,
            "median_delay_s": round(statistics.median(delays), 1) if delays else None,
            "contributors_right": round(right / alerts_of_kind, 3) if alerts_of_kind else None,
            "modalities": list(eps[0].modalities),
            "top_contributors": sorted({f"{(r[3] or [{}])[0].get('modality')}:{(r[3] or [{}])[0].get('name')}"
                                        for r in live if r[0] in attributed and episode_of(r) in eps}),
        }
    false_alerts = [r for r in live if r[0] not in attributed]
    asset_hours = len(assets) * (end - start).total_seconds() / 3600.0
    all_right = [_matches(episode_of(r).culprits, (r[3] or [None])[0]) for r in live if r[0] in attributed]
    return {
        "plant": {"assets": assets, "plant_seconds": (end - start).total_seconds(), "speed": speed,
                  "parts": len(sim.parts.t), "signal_windows": len(sim.signal_messages()),
                  "time_mapping": f"1 wall second = {speed:.0f} plant seconds; a part every "
                                  f"{sim.config.part_interval_s:.0f} plant seconds per cell"},
        "events_in": len(sim.parts.t) * 2 + len(sim.signal_messages()) + len(bad),
        "scores_written": now["scores"] - baseline["scores"],
        "scores_by_modality": by_modality,
        "shadow_scores_written": now["shadow_scores"] - baseline["shadow_scores"],
        "deadletters": len(dl),
        "deadletter_reasons": [r[0][:120] for r in dl],
        "alerts": {
            "opened": len(live),
            "closed": sum(r[0] in closed for r in live),
            "per_fault": per_fault,
            "false_alerts": len(false_alerts),
            "false_alerts_per_asset_hour": round(len(false_alerts) / asset_hours, 4),
            "false_alerts_per_asset_day": round(24 * len(false_alerts) / asset_hours, 3),
            "contributors_right": round(float(np.mean(all_right)), 3) if all_right else None,
            "shadow_alerts": len(shadow),
            "suppressed": int(sum(n for _, n in suppressed)),
            "suppressed_by_reason": {reason: int(n) for reason, n in suppressed},
            "retrain_recommended": int(retrain),
            "incidents": [
                {"asset": r[1], "opened_at": r[2].isoformat(), "severity": r[4], "route": r[5],
                 "fault": (episode_of(r).kind if episode_of(r) else None),
                 "top": [f"{c.get('modality')}:{c['name']} ({c['share']:.0%})" for c in (r[3] or [])[:3]]}
                for r in live],
        },
        "elapsed_s": round(elapsed, 1),
    }


def print_summary(s: dict[str, Any], console: Console) -> None:
    a = s["alerts"]
    table = Table(title=f"Alerts on the simulated plant ({s['plant']['time_mapping']})")
    table.add_column("fault", min_width=15, no_wrap=True)
    for col, justify in (("shows in", "left"), ("episodes", "right"), ("alerted", "right"),
                         ("median delay", "right"), ("cause named first", "right")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for kind, f in a["per_fault"].items():
        delay = f"{f['median_delay_s'] / 60:.1f} min" if f["median_delay_s"] is not None else "-"
        right = f"{f['contributors_right']:.0%}" if f["contributors_right"] is not None else "-"
        table.add_row(kind, " + ".join(f["modalities"]), str(f["episodes"]), str(f["alerted"]), delay, right)
    hours = s["plant"]["plant_seconds"] / 3600
    table.add_row("false alerts", "", "", str(a["false_alerts"]), "", "")
    console.print(table)
    console.print(f"false alerts: {a['false_alerts']} = {a['false_alerts_per_asset_day']:.2f} per asset-day over "
                  f"{len(s['plant']['assets'])} cells x {hours:.1f} plant h (delays in plant time)")
    console.print(f"alerts opened: {a['opened']} (closed {a['closed']}), shadow alerts (never routed): "
                  f"{a['shadow_alerts']}, suppressed units: {a['suppressed']} {a['suppressed_by_reason'] or ''}, "
                  f"retrain recommended: {a['retrain_recommended']}")
    for inc in a["incidents"]:
        console.print(f"  [bold]{inc['asset']}[/] {inc['opened_at'][11:19]} {inc['severity']:8s} -> "
                      f"{inc['route']:11s} {inc['fault'] or 'no injected fault'}: {', '.join(inc['top'])}")
    console.print(f"events in: {s['events_in']}   scores written: {s['scores_written']} "
                  f"{s['scores_by_modality']}   dead letters: {s['deadletters']}   elapsed: {s['elapsed_s']} s")
    for reason in s["deadletter_reasons"]:
        console.print(f"  [dim]dead letter:[/] {reason}")


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
