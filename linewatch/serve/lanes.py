"""One scoring thread per modality: the requests waiting when it is free are scored as one batch.

Why one thread: the model cache and each asset's chart memory belong to one thread, as in the
worker's agents (``StreamStates`` is not shared), and scoring an asset's parts in the order they
arrived is what makes a stateful chart (EWMA, CUSUM) answer as the worker's does. Why batches:
under load, twenty frames waiting cost one backbone call instead of twenty, and an SPC batch one
call of the detector; an idle lane scores a lone request at once, without waiting for company.

A lane calls the worker's batch function (``score_spc_batch`` / ``score_frames_batch``), splits
its :class:`~linewatch.streams.batch.BatchResult` back into one :class:`Outcome` per message,
appends every event that was not rejected to the spool (one fsync'd segment per batch, with the
API's verdict in its headers) and only then resolves the requests' futures: a verdict is never
returned for an event that could still be lost.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from linewatch.schemas.frame_rows import FrameHeatmapRow
from linewatch.serve.spool import Event, Spool
from linewatch.streams.batch import BatchResult
from linewatch.streams.messages import RawMessage

log = logging.getLogger(__name__)

#: Header naming who inspected a published event (``linewatch-serve@<host>``): plant consumers can tell
#: an event the API already answered from one a camera gateway sent.
INSPECTED_BY_HEADER = "linewatch-inspected-by"
#: Header with the API's verdict (small JSON): ``{"anomaly": bool, "status": ..., "detectors": {...}}``.
VERDICT_HEADER = "linewatch-verdict"
#: Header with the request id of the HTTP call that inspected the event (for joining access logs).
REQUEST_ID_HEADER = "linewatch-request-id"
INSPECTED_BY = f"linewatch-serve@{socket.gethostname()}".encode()

#: ``score(messages, mode)``: a modality's batch function with its options for one request ``mode``.
ScoreFn = Callable[[list[RawMessage], str], BatchResult]


@dataclass
class Outcome:
    """What became of one inspected message: its scores, its heat map, or why it was rejected."""

    message: RawMessage
    event_id: str
    #: Decoded ``scores`` / ``shadow_scores`` messages about this event (champions first), exactly as published.
    scores: list[dict[str, Any]] = field(default_factory=list)
    #: The ``frame_heatmaps`` row of this frame (columns by name) when one was drawn.
    heatmap: dict[str, Any] | None = None
    #: The dead-letter reason when the pipeline rejected the message; nothing is published then.
    reason: str | None = None

    @property
    def status(self) -> str:
        """``rejected``, ``scored`` or ``unscored`` (no model for its scope yet; published and stored all the same)."""
        return "rejected" if self.reason is not None else "scored" if self.scores else "unscored"

    @property
    def champions(self) -> list[dict[str, Any]]:
        return [s for s in self.scores if not s.get("shadow")]

    @property
    def anomaly(self) -> bool:
        """A champion flagged it (a shadow's verdict never rejects a part: it is not routed anywhere)."""
        return any(s["is_anomaly"] for s in self.champions)

    def verdict_header(self) -> bytes:
        detectors = {s["detector"]: {"version": s["model_version"], "calibrated_score": s["calibrated_score"],
                                     "is_anomaly": s["is_anomaly"]} for s in self.champions}
        return json.dumps({"anomaly": self.anomaly, "status": self.status, "detectors": detectors},
                          separators=(",", ":")).encode()


@dataclass
class Ticket:
    """One request's messages on their way through a lane."""

    messages: list[RawMessage]
    event_ids: list[str]
    mode: str
    request_id: str
    reserved: tuple[int, int]
    future: Future[list[Outcome]] = field(default_factory=Future)


def split(result: BatchResult, messages: Sequence[RawMessage], event_ids: Sequence[str]) -> list[Outcome]:
    """One :class:`Outcome` per message of a scored batch (dead letters by offset, scores by event id)."""
    outcomes = [Outcome(m, eid) for m, eid in zip(messages, event_ids, strict=True)]
    by_offset = {o.message.offset: o for o in outcomes}
    by_event: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_event.setdefault(o.event_id, []).append(o)
    for d in result.deadletters.items:
        if d.offset in by_offset:
            by_offset[d.offset].reason = d.reason
    for _, value, *_ in [*result.score_messages, *result.shadow_messages]:
        score = json.loads(value)
        for o in by_event.get(score["event_id"], ()):
            if o.reason is None:
                o.scores.append(score)
    columns = list(FrameHeatmapRow.model_fields)
    for row in result.tables.get(FrameHeatmapRow, ()):
        heat = dict(zip(columns, row, strict=True))
        for o in by_event.get(str(heat["event_id"]), ()):
            o.heatmap = heat
    return outcomes


class ScoringLane:
    """A thread that scores the tickets of one modality in batches and spools what it scored."""

    def __init__(self, name: str, topic: str, score: ScoreFn, *, spool: Spool, max_batch: int,
                 refresh: Callable[[], list[str]]) -> None:
        self.name = name
        self.topic = topic
        self._score = score
        self._spool = spool
        self._max_batch = max_batch
        self._refresh = refresh
        self._queue: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        self._offsets = itertools.count()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.scored = 0
        self.busy_s = 0.0

    def message(self, key: bytes | None, value: bytes) -> RawMessage:
        """A raw message as the lane's topic would carry it; its offset is unique within this lane."""
        return RawMessage(self.topic, 0, next(self._offsets), key, value, time.time())

    def start(self) -> ScoringLane:
        self._thread = threading.Thread(target=self._run, name=f"serve-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, ticket: Ticket) -> Future[list[Outcome]]:
        self._queue.put(ticket)
        return ticket.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            tickets, n = [first], len(first.messages)
            while n < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                tickets.append(nxt)
                n += len(nxt.messages)
            self._process(tickets)

    def _process(self, tickets: list[Ticket]) -> None:
        try:
            changed = self._refresh()
            if changed:
                log.warning("%s models loaded: %s", self.name, ", ".join(changed))
        except Exception:  # a registry hiccup must not fail the requests: the loaded models keep serving
            log.exception("refreshing the %s models failed; serving the loaded ones", self.name)
        by_mode: dict[str, list[Ticket]] = {}
        for t in tickets:
            by_mode.setdefault(t.mode, []).append(t)
        for mode, group in by_mode.items():
            self._score_group(mode, group)

    def _score_group(self, mode: str, group: list[Ticket]) -> None:
        """Score, spool and answer one batch of tickets; when it fails, each ticket alone (as the worker does).

        So a message that breaks a detector fails its own request (500 with the reason), not the
        requests that happened to share its batch.
        """
        t0 = time.perf_counter()
        messages = [m for t in group for m in t.messages]
        try:
            outcomes = split(self._score(messages, mode), messages, [e for t in group for e in t.event_ids])
            parts = _cut(outcomes, [len(t.messages) for t in group])
            self._spool.append([self._event(o, t.request_id) for t, part in zip(group, parts, strict=True)
                                for o in part if o.reason is None])
        except Exception as e:  # a detector bug or a full disk fails these requests (500/503), not the lane
            if len(group) > 1:
                log.warning("scoring a batch of %d %s requests failed (%s: %s); scoring them one at a time",
                            len(group), self.name, type(e).__name__, e)
                for t in group:
                    self._score_group(mode, [t])
                return
            log.exception("scoring a %s request failed", self.name)
            self._spool.release(*group[0].reserved)
            if not group[0].future.done():  # a request that timed out has cancelled its future
                group[0].future.set_exception(e)
            return
        finally:
            self.busy_s += time.perf_counter() - t0
        self.batches += 1
        self.scored += len(messages)
        for t, part in zip(group, parts, strict=True):
            self._spool.release(*t.reserved)
            if not t.future.done():  # the client may have stopped waiting (504): the event is spooled all the same
                t.future.set_result(part)

    def _event(self, o: Outcome, request_id: str) -> Event:
        headers = ((INSPECTED_BY_HEADER, INSPECTED_BY), (VERDICT_HEADER, o.verdict_header()),
                   (REQUEST_ID_HEADER, request_id.encode()))
        return Event(self.topic, o.message.key, o.message.value or b"", headers)


def _cut(items: list[Outcome], sizes: list[int]) -> list[list[Outcome]]:
    out, lo = [], 0
    for n in sizes:
        out.append(items[lo:lo + n])
        lo += n
    return out
