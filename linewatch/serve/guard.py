"""What every request passes before a route sees it: a request id, auth, the body limit, and one access-log line.

A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which copies every body through
an extra task): it gives each request an id (the client's ``X-Request-ID`` when it sends a sane
one), refuses a missing or wrong API key with 401 before the body is read, refuses a body over
``serve_max_request_bytes`` with 413 (from ``Content-Length`` at once, or as soon as a streamed
body passes the limit), and logs one JSON line per request without any payload:
``{"ts", "method", "path", "status", "latency_ms", "client", "request_id", "bytes_in"}``.

Keys are compared with :func:`hmac.compare_digest` against every configured key (no early exit),
so the time an answer takes says nothing about how much of a key was right.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

access_log = logging.getLogger("linewatch.serve.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths open without a key: probes (a load balancer has none) and the API's own description.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect"})
#: A client's request id is echoed only when it looks like one (no log injection through it).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit; the app answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes (serve_max_request_bytes): send a smaller "
                         "image or fewer records per request")
        self.limit = limit


def parse_keys(raw: str | None) -> list[bytes]:
    """The configured API keys: comma-separated, blanks ignored.

    >>> parse_keys(" k1 , ,k2")
    [b'k1', b'k2']
    """
    return [k.strip().encode() for k in (raw or "").split(",") if k.strip()]


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The key a request presents: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return headers.get(b"x-api-key")


def key_ok(presented: bytes | None, keys: Sequence[bytes]) -> bool:
    """Whether ``presented`` is one of ``keys``, in time independent of where it differs.

    >>> key_ok(b"k2", [b"k1", b"k2"]), key_ok(b"k", [b"k1"]), key_ok(None, [b"k1"])
    (True, False, False)
    """
    if presented is None:
        return False
    matches = [hmac.compare_digest(presented, k) for k in keys]  # all compared: no early exit
    return any(matches)


class Guard:
    """The ASGI middleware described above, around the FastAPI app."""

    def __init__(self, app: ASGIApp, *, keys: Sequence[bytes], max_body: int) -> None:
        self.app = app
        self.keys = list(keys)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        outcome = {"status": 500, "bytes_in": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                outcome["bytes_in"] += len(message.get("body", b""))
                if outcome["bytes_in"] > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        try:
            if self.keys and scope["path"] not in OPEN_PATHS and not key_ok(presented_key(headers), self.keys):
                await _refuse(send_with_id, 401, "missing or wrong API key: send `Authorization: Bearer KEY` or "
                                                 "`X-API-Key: KEY` with a key from serve_api_keys", request_id,
                              [(b"www-authenticate", b"Bearer")])
                return
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await _refuse(send_with_id, 413, str(BodyTooLarge(self.max_body)), request_id)
                return
            await self.app(scope, counted_receive, send_with_id)
        finally:
            client = scope.get("client")
            access_log.info(json.dumps({
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "method": scope.get("method"),
                "path": scope.get("path"), "status": outcome["status"],
                "latency_ms": round((time.perf_counter() - t0) * 1000, 2),
                "client": f"{client[0]}:{client[1]}" if client else None, "request_id": request_id,
                "bytes_in": outcome["bytes_in"],
            }, separators=(",", ":")))


async def _refuse(send: Send, status: int, reason: str, request_id: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": status, "reason": reason, "request_id": request_id}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
