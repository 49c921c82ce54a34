"""One running inspection service: its models, its two scoring lanes, its spool and forwarder.

It is built the way the worker builds its runtimes (one :class:`~linewatch.storage.model_registry.ModelCache`
per modality, refreshed every ``model_refresh_s`` from the registry, the worker's event-time window,
one ``StreamStates`` for the SPC charts' memory), so a model trained or promoted while it runs
is served by the API and the worker alike. The HTTP layer (:mod:`linewatch.serve.http`) only
parses requests and calls :meth:`InspectionService.inspect`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from threadpoolctl import threadpool_limits

from linewatch.config import Settings
from linewatch.defects.stream import DefectLayer, defect_layer
from linewatch.schemas.event_time import EventTimeWindow
from linewatch.schemas.topics import FRAMES, SPC
from linewatch.serve.lanes import Outcome, ScoringLane, Ticket
from linewatch.serve.requests import Inspection, Refused
from linewatch.serve.spool import Forwarder, Spool, SpoolFull
from linewatch.storage.model_registry import ModelCache
from linewatch.streams.frames_agent import FRAMES_BATCH_SIZE, default_scoring_threads
from linewatch.streams.frames_pipeline import HEATMAPS_ALARMS, ScoringPool, score_frames_batch
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch


class InspectionService:
    """Everything behind the routes; start it before serving and stop it after."""

    def __init__(self, settings: Settings, *, bootstrap: str, database_url: str | None,
                 security: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.spool = Spool(settings.serve_spool_path, max_bytes=settings.serve_spool_max_bytes,
                           max_events=settings.serve_spool_max_events, fsync=settings.serve_spool_fsync)
        self.forwarder = Forwarder(self.spool, bootstrap, security=security)
        self.spc_models = ModelCache(database_url=database_url, modalities=("spc",),
                                     refresh_s=settings.model_refresh_s, cache_dir=settings.model_cache_dir)
        self.frame_models = ModelCache(database_url=database_url, modalities=("frames",),
                                       refresh_s=settings.model_refresh_s, cache_dir=settings.model_cache_dir)
        window = EventTimeWindow(max_future_s=settings.event_time_max_future_s,
                                 max_age_s=settings.event_time_max_age_s)
        # The Day-30 layer, as each agent runtime has its own: a lane's classifier cache is its thread's.
        spc_defects, frame_defects = ((defect_layer(database_url, refresh_s=settings.model_refresh_s,
                                                    cache_dir=settings.model_cache_dir, modalities=(m,))
                                       for m in ("spc", "frames"))
                                      if database_url is not None else (None, None))
        self.streams = StreamStates()  # each asset's chart memory, as the SPC agent keeps it
        self.pool = ScoringPool(default_scoring_threads())
        self.spc = ScoringLane(
            "spc", SPC.name, lambda msgs, _mode: score_spc_batch(msgs, self.spc_models, self.streams,
                                                                 event_window=window, defects=spc_defects),
            spool=self.spool, max_batch=settings.batch_size, refresh=_refresher(self.spc_models, spc_defects))
        self.frames = ScoringLane(
            "frames", FRAMES.name, lambda msgs, mode: score_frames_batch(msgs, self.frame_models, heatmaps=mode,
                                                                        pool=self.pool, event_window=window,
                                                                        defects=frame_defects),
            spool=self.spool, max_batch=FRAMES_BATCH_SIZE, refresh=_refresher(self.frame_models, frame_defects))
        self.started = False

    def start(self) -> InspectionService:
        # As in the worker (register_frames_agent): parallelism comes from the scoring threads, never
        # from BLAS threads spinning against them on the same cores.
        threadpool_limits(limits=1, user_api="blas")
        self.spc_models.refresh(force=True)  # before the lanes start: from then on, each lane owns its cache
        self.frame_models.refresh(force=True)
        self.forwarder.start()
        self.spc.start()
        self.frames.start()
        self.started = True
        return self

    def stop(self) -> None:
        self.spc.stop()
        self.frames.stop()
        self.forwarder.stop()
        self.pool.close()
        self.started = False

    async def inspect(self, lane: ScoringLane, inspection: Inspection, *, mode: str = HEATMAPS_ALARMS,
                      request_id: str) -> list[Outcome]:
        """Score one request's messages on ``lane`` and spool them; :class:`Refused` when it cannot.

        Room in the spool is taken before scoring (503 when there is none, nothing scored), and the
        answer waits at most ``serve_request_timeout_s`` (504; the events are scored and published
        all the same, the client just does not hear the verdict in time).
        """
        reserved = (len(inspection.messages), inspection.nbytes)
        try:
            self.spool.reserve(*reserved)
        except SpoolFull as e:
            raise Refused(503, str(e)) from None
        ticket = Ticket(inspection.messages, inspection.event_ids, mode, request_id, reserved)
        timeout = self.settings.serve_request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(lane.submit(ticket)), timeout)
        except TimeoutError:
            raise Refused(504, f"not scored within {timeout:g} s (serve_request_timeout_s): the service is "
                               "overloaded; the event is still scored and published") from None
        except OSError as e:
            raise Refused(503, f"cannot write the spool ({self.spool.directory}): {e}") from None
        except Exception as e:  # a detector bug fails this request with its reason (logged by the lane), no more
            raise Refused(500, f"scoring failed: {type(e).__name__}: {e}") from None

    def models(self) -> list[dict[str, Any]]:
        """The versions in memory per modality and scope (what the next request is scored with)."""
        return [{"model_id": r.model_id, "version": r.version, "modality": r.modality, "scope_asset": r.scope_asset,
                 "scope_sku": r.scope_sku, "scope_camera": r.scope_camera, "shadow": r.shadow}
                for cache in (self.spc_models, self.frame_models) for r in cache.served()]

    def readiness(self) -> list[str]:
        """Why the service should not take traffic now (empty: ready)."""
        problems = []
        if not self.started:
            problems.append("the service is starting")
        if not self.spc_models.served() and not self.frame_models.served():
            problems.append("no model is loaded: train one (`linewatch train spc|frames`); the service looks for "
                            f"new models every {self.settings.model_refresh_s:g} s")
        s = self.settings
        if self.spool.events >= s.serve_spool_max_events or self.spool.bytes >= s.serve_spool_max_bytes:
            problems.append(f"the spool is full ({self.spool.events} events, {self.spool.bytes} bytes) while the "
                            f"broker at {self.forwarder.bootstrap} is {self.forwarder.broker}")
        return problems

    def health(self) -> dict[str, Any]:
        lanes = {lane.name: {"batches": lane.batches, "events": lane.scored, "busy_s": round(lane.busy_s, 3)}
                 for lane in (self.spc, self.frames)}
        return {"pid": os.getpid(), "lanes": lanes, "kafka": self.forwarder.state(),
                "models": {"spc": self.spc_models.loaded(), "frames": self.frame_models.loaded()}}


def _refresher(models: ModelCache, defects: DefectLayer | None) -> Callable[[], list[str]]:
    """What a lane refreshes before each batch: its models, then its defect classifiers (as an agent does)."""
    def refresh() -> list[str]:
        return models.refresh() + ([f"{c} (classifier)" for c in defects.refresh()] if defects is not None else [])

    return refresh
