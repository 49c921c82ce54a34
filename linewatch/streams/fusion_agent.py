"""The fusion agent: ``scores``, ``shadow_scores`` and ``machine_states`` in; alerts out, with their lifecycle.

It runs on the shared batch runtime (:mod:`linewatch.streams.runtime`), so it has the same
durability contract as the scoring agents: a batch's alert rows, suppressed windows and machine
states are committed and its ``alerts`` messages confirmed before Faust acknowledges the
batch; a message that cannot be decoded is a dead letter with its reason; a batch that breaks
the engine is retried one message at a time (the engine ignores scores it has already seen, so
nothing counts twice).

The fusing itself (both engines, champion and challenger, and score drift) is
:class:`~linewatch.streams.fusion_stage.FusionStage`, which ``linewatch replay`` runs too.

From the database, every ``model_refresh_s``: the declared maintenance windows, and alerts
acknowledged or closed by hand (``linewatch alerts ack|close``). At start, the alerts that were
open when the previous worker stopped, so they close instead of being forgotten.

Scores are keyed by asset, so all of one asset's scores reach the same worker and its alert
state lives in one place. Machine states on ``machine_states`` are keyed by asset too; with more
than one worker the ``machine_state`` field on the scored messages is the reliable path (it
travels with the scores).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import psycopg

from linewatch.config import Settings
from linewatch.feedback.alerts import hand_made_transitions
from linewatch.feedback.maintenance import suppression_windows
from linewatch.fusion.lifecycle import Contributor, OpenAlert
from linewatch.schemas.topics import MACHINE_STATES, SCORES, SHADOW_SCORES
from linewatch.storage.connection import connect
from linewatch.storage.drift import load_promises
from linewatch.streams.batch import BatchResult
from linewatch.streams.fusion_stage import FusionStage
from linewatch.streams.messages import RawMessage
from linewatch.streams.runtime import BatchRuntime, raw_topic, register_batch_agent

log = logging.getLogger(__name__)

#: How far back a starting worker looks for open alerts, maintenance windows and hand-made actions.
HISTORY = timedelta(days=30)
#: Overlap between two reads of hand-made acknowledgements and closes.
ACTIONS_OVERLAP = timedelta(minutes=1)


class FusionRuntime(BatchRuntime):
    """The fusion agent: the fusion stage (both engines, drift), and what it reads back from the database."""

    modality = "fusion"
    classifies = False
    unit = "scores"
    train_hint = "linewatch train"

    def __init__(self, *, settings: Settings, bootstrap: str, database_url: str) -> None:
        super().__init__(settings=settings, bootstrap=bootstrap, database_url=database_url, logger=log)
        self.stage = FusionStage(settings.fusion_config())
        self._url = database_url
        self._refresh_s = settings.model_refresh_s
        self._next_context = 0.0
        self._handled: set[tuple[uuid.UUID, str]] = set()  # hand acks/closes already applied
        self._actions_since = datetime.now(UTC) - HISTORY
        self._promised: set[str] = set()  # model versions whose promised false-alarm rate the tracker has
        self._restored = False

    def score(self, messages: list[RawMessage]) -> BatchResult:
        self._read_context()
        return self.stage.process(messages)

    # -- what the database says -----------------------------------------------------------------
    def _read_context(self) -> None:
        """Every ``model_refresh_s``: maintenance windows, hand-made acks and closes, new versions' promises."""
        now = time.monotonic()
        if now < self._next_context:
            return
        self._next_context = now + self._refresh_s
        try:
            with connect(self._url) as conn:
                if not self._restored:
                    self._restore(conn)
                    self._restored = True
                since = datetime.now(UTC) - HISTORY
                self.stage.set_maintenance(suppression_windows(conn, since=since))
                self._hand_actions(conn)
                versions = {r[0] for r in conn.execute("SELECT version FROM model_versions WHERE active")}
                if versions - self._promised:
                    self.stage.drift.set_promises(load_promises(conn, versions - self._promised))
                    self._promised |= versions
        except psycopg.Error as e:
            # Alerts keep flowing on the context we have; the writer decides whether the database is gone.
            self.log.warning("cannot read maintenance windows and hand-made alert changes (%s); keeping the last", e)

    def _restore(self, conn: psycopg.Connection) -> None:
        """Alerts still open (the ``open_alerts`` view): resume them so they close (or update) instead of being lost."""
        rows = conn.execute(
            """SELECT alert_id, asset_id, shadow, last_state, max_severity, opened_at, modalities, last_contributors,
                      model_versions, last_ts
               FROM open_alerts WHERE kind = 'anomaly' AND last_ts > %s""", (datetime.now(UTC) - HISTORY,)).fetchall()
        n = 0
        for alert_id, asset, shadow, state, severity, opened_at, modalities, contributors, versions, ts in rows:
            alert = OpenAlert(alert_id=alert_id, opened_at=opened_at, severity=severity, modalities=set(modalities),
                              model_versions=set(versions), last_message_ts=ts, acknowledged=state == "acknowledge")
            for c in contributors if isinstance(contributors, list) else json.loads(contributors):
                held = Contributor(c.get("modality") or "spc", c["name"], c.get("kind", "feature"), c.get("detail"),
                                   float(c.get("share", 0.0)), float(c.get("value", 0.0)))
                alert.contributors[held.key] = held
            (self.stage.shadow if shadow else self.stage.champion).restore(asset, alert)
            n += 1
        if n:
            self.log.warning("fusion resumed %d open alert(s) from the database", n)

    def _hand_actions(self, conn: psycopg.Connection) -> None:
        """Acknowledgements and closes written by ``linewatch alerts ack|close`` since the last look.

        Read with a minute of overlap (the database's clock and this host's need not agree to the
        second); an action already applied is skipped.
        """
        since = self._actions_since
        self._actions_since = datetime.now(UTC) - ACTIONS_OVERLAP
        for alert_id, state, ts, _actor in hand_made_transitions(conn, since=since):
            if (alert_id, state) in self._handled:
                continue
            self._handled.add((alert_id, state))
            for engine in self.stage.engines:
                if state == "acknowledge":
                    engine.acknowledge(alert_id)
                else:
                    engine.closed_by_hand(alert_id, ts)


def register_fusion_agent(app: faust.App, *, settings: Settings, bootstrap: str, database_url: str) -> Any:
    """Add the fusion agent (``scores``, ``shadow_scores``, ``machine_states``) to ``app``; returns its runtime.

    It runs on its own thread of the worker process, not in a child like SPC scoring: a batch of
    scores costs less to fuse than to decode (``linewatch bench fusion``), so a child process would
    cost a start-up and memory per worker for little relief of Faust's loop.
    """
    runtime = FusionRuntime(settings=settings, bootstrap=bootstrap, database_url=database_url)
    topic = raw_topic(app, SCORES.name, SHADOW_SCORES.name, MACHINE_STATES.name)
    register_batch_agent(app, topic, runtime, batch_size=settings.batch_size, within=settings.batch_within_s,
                         name="linewatch.fuse_scores", thread_name_prefix="fusion-batch")
    return runtime
