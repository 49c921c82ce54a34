"""The FastAPI application: ``/v1/inspect/frame``, ``/v1/inspect/spc``, ``/v1/models``, ``/healthz``, ``/readyz``.

Routes only parse and answer; scoring is :class:`~linewatch.serve.service.InspectionService`'s.
Every error answer has one shape, ``{"error": status, "reason": "...", "request_id": "..."}``
(plus ``records`` for an SPC request with invalid records), and its reason uses the dead-letter
words of the pipelines. The OpenAPI document is at ``/openapi.json`` and its page at ``/docs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from linewatch.serve.guard import BodyTooLarge, Guard, parse_keys
from linewatch.serve.requests import (
    FRAME_BODY_TYPES,
    FrameFields,
    Refused,
    frame_inspection,
    frame_view,
    record_view,
    spc_inspection,
)
from linewatch.serve.service import InspectionService
from linewatch.streams.frames_pipeline import HEATMAPS_ALARMS, HEATMAPS_ALL

API_DESCRIPTION = """Score one part now, with the worker's own models and code, and get the verdict back.

Every inspected event is also published to its Kafka topic (`spc`, `frames`), with the API's verdict in
its headers, so the worker stores it and fusion and the dashboards see it like any other event. While
Kafka is away the events wait in an on-disk spool; the verdict is returned all the same.

Auth: when `serve_api_keys` is set, send `Authorization: Bearer KEY` or `X-API-Key: KEY`.
"""
#: SPC bodies up to this size (a few dozen records) are parsed on the event loop; larger ones on a thread.
PARSE_INLINE_BYTES = 64 * 1024
_FRAME_BODY = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "PNG or JPEG (or raw pixels)"},
            **{name: {"type": "string"} for name in ("asset_id", "camera", "sku", "part_id", "ts", "machine_state")},
            **{name: {"type": "integer"} for name in ("width", "height", "channels")},
        }}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": "raw uint8 pixels, row-major; needs width, height, channels"},
        "application/vnd.linewatch.frame": {"schema": {"type": "string", "format": "binary"},
                                            "description": "a whole `frames` message (envelope), as a producer "
                                                           "sends it"},
    }},
}
_SPC_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        {"$ref": "#/components/schemas/SpcRecord"},
        {"type": "array", "items": {"$ref": "#/components/schemas/SpcRecord"}},
    ]}}}},
}


def _error(status: int, reason: str, request: Request, **details: Any) -> JSONResponse:
    body = {"error": status, "reason": reason, "request_id": request.scope["state"].get("request_id"), **details}
    return JSONResponse(body, status_code=status)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def create_app(service: InspectionService) -> Guard:
    """The ASGI application: FastAPI routes inside the :class:`~linewatch.serve.guard.Guard`."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not service.started:
            service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="linewatch inspection API", version="1", description=API_DESCRIPTION, lifespan=lifespan)

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        return _error(e.status, e.reason, request, **e.details)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, e: BodyTooLarge) -> JSONResponse:
        return _error(413, str(e), request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
        return _error(422, f"request failed validation: {problems}", request)

    @app.post("/v1/inspect/frame", openapi_extra=_FRAME_BODY, summary="Score one camera frame now")
    async def inspect_frame(
        request: Request,
        asset_id: Annotated[str | None, Query(description="the station (asset) that took the frame")] = None,
        camera: Annotated[str | None, Query()] = None,
        sku: Annotated[str | None, Query(description="the part type: chooses the model with the camera")] = None,
        part_id: Annotated[str | None, Query(description="default: from the image's SHA-256")] = None,
        ts: Annotated[str | None, Query(description="ISO 8601 with a zone; default: now")] = None,
        machine_state: Annotated[str | None, Query()] = None,
        width: Annotated[int | None, Query(description="raw pixels only")] = None,
        height: Annotated[int | None, Query(description="raw pixels only")] = None,
        channels: Annotated[int | None, Query(description="raw pixels only: 1 or 3")] = None,
        heatmap: Annotated[bool, Query(description="return the heat map (PNG, base64) even for a pass")] = False,
    ) -> JSONResponse:
        """Verdict, calibrated score, threshold, model version and hot region of one frame (and its heat map).

        Send the image as multipart (field `image`, the other fields beside it) or as the body
        (`image/png`, `image/jpeg`, raw pixels as `application/octet-stream`, or a whole `frames`
        envelope as `application/vnd.linewatch.frame`) with the fields as query parameters.
        """
        kind = _content_type(request)
        query = {"asset_id": asset_id, "camera": camera, "sku": sku, "part_id": part_id, "ts": ts,
                 "machine_state": machine_state, "width": width, "height": height, "channels": channels}
        if kind == "multipart/form-data":
            body, kind, query = await _form_frame(request, query)
        elif kind in FRAME_BODY_TYPES:
            body = await request.body()
        else:
            raise Refused(415, f"content type {kind or '(none)'} is not a frame; send one of "
                               f"{', '.join(FRAME_BODY_TYPES)}")
        inspection, meta = frame_inspection(body, kind, FrameFields(**query), service.frames.message,
                                            max_side=settings.serve_max_image_side)
        outcomes = await service.inspect(service.frames, inspection, mode=HEATMAPS_ALL if heatmap else HEATMAPS_ALARMS,
                                         request_id=request.scope["state"]["request_id"])
        o = outcomes[0]
        if o.reason is not None:
            raise Refused(422, o.reason)
        return JSONResponse(frame_view(o, meta, heatmap=heatmap))  # plain JSON: no per-field encoder pass

    @app.post("/v1/inspect/spc", openapi_extra=_SPC_BODY, summary="Score SPC records now")
    async def inspect_spc(request: Request) -> JSONResponse:
        """Per record and detector, the `scores` messages the worker would publish (the `spc` JSON Schema in).

        A request whose records do not all decode is refused whole (422, `records` says which and
        why). A record that decodes but the pipeline rejects (too old, lacking a characteristic its
        models need) is answered `rejected` with the dead-letter reason; 422 when every record is.
        """
        if _content_type(request) != "application/json":
            raise Refused(415, f"content type {_content_type(request) or '(none)'} is not JSON; send "
                               "application/json (one spc record, or an array of them)")
        body = await request.body()
        parse = partial(spc_inspection, body, service.spc.message, max_records=settings.serve_max_records)
        # A large request (thousands of records) is parsed off the event loop, so it delays no other request.
        inspection = parse() if len(body) < PARSE_INLINE_BYTES else await asyncio.to_thread(parse)
        outcomes = await service.inspect(service.spc, inspection, request_id=request.scope["state"]["request_id"])
        records = [record_view(o) for o in outcomes]
        if all(o.reason is not None for o in outcomes):
            return _error(422, outcomes[0].reason or "", request, records=records)
        return JSONResponse({"records": records, "anomalies": sum(o.anomaly for o in outcomes), "published": "queued"})

    @app.get("/v1/models", summary="Model versions served now, per modality and scope")
    async def models() -> dict[str, Any]:
        return {"models": service.models()}

    @app.get("/healthz", summary="Liveness: the process answers; lanes, Kafka and spool figures")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", **service.health()}

    @app.get("/readyz", summary="Readiness: models loaded and room in the spool")
    async def readyz(request: Request) -> Any:
        problems = service.readiness()
        if problems:
            return _error(503, "; ".join(problems), request)
        return {"status": "ready", "kafka": service.forwarder.state()}

    _add_spc_schema(app)
    return Guard(app, keys=parse_keys(settings.serve_api_keys.get_secret_value() if settings.serve_api_keys
                                      else None), max_body=settings.serve_max_request_bytes)


async def _form_frame(request: Request, query: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
    """The image part and fields of a multipart frame request (form fields win over query parameters)."""
    try:
        form = await request.form(max_files=1, max_fields=16)
    except BodyTooLarge:
        raise
    except Exception as e:  # a malformed multipart body is the client's
        raise Refused(400, f"cannot read the multipart body: {type(e).__name__}: {e}") from None
    image = form.get("image")
    if image is None or isinstance(image, str):
        raise Refused(422, "multipart frame without an `image` file part: send the image as field `image`")
    body = await image.read()
    fields = dict(query)
    for name in ("asset_id", "camera", "sku", "part_id", "ts", "machine_state", "width", "height", "channels"):
        value = form.get(name)
        if isinstance(value, str) and value:
            if name in ("width", "height", "channels"):
                if not value.isdigit():
                    raise Refused(422, f"request failed validation: {name}: must be a whole number, got {value!r}")
                fields[name] = int(value)
            else:
                fields[name] = value
    part_type = (image.content_type or "").split(";")[0].strip().lower()
    kind = "application/octet-stream" if part_type == "application/octet-stream" and fields["width"] else "image"
    return body, kind, fields


def _add_spc_schema(app: FastAPI) -> None:
    """Put the ``spc`` record's JSON Schema (the one consumers get) into the OpenAPI components."""
    from linewatch.schemas.messages import SpcRecord

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema = SpcRecord.model_json_schema(ref_template="#/components/schemas/{model}")
            defs = schema.pop("$defs", {})
            doc.setdefault("components", {}).setdefault("schemas", {}).update({**defs, "SpcRecord": schema})
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
