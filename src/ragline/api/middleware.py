"""ASGI middleware: admission control, request size limits enforced before a body is read
whole, and request ids with the access log."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragline import logs, metrics
from ragline.api.errors import error_response

UPLOAD_PATH = re.compile(r"^/v1/collections/[^/]+/documents/?$")


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for bodies over the limit: the upload route gets `upload_limit`, the rest
    `json_limit`. Checks Content-Length up front and counts streamed (chunked) bodies."""

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # only the upload route gets the upload limit, whatever content type a request claims
        is_upload = scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"]) is not None
        limit = self.upload_limit if is_upload else self.json_limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(scope, receive, send, limit)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _reject(scope, receive, send, limit)


async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(413, "too_large", f"request body exceeds {limit} bytes")
    await response(scope, receive, send)


class Admission:
    """At most `limit` API requests (`/v1/…`) in flight in this process; past it, an immediate
    503 `overloaded` with `Retry-After: 1`, so a load balancer or client retries elsewhere.

    Without it, overload queues: at 200 clients on 0.4 of a core, bench/soak.py saw P50 of 5 s
    and P99 of 15–35 s, every request late instead of some refused. A request counts until its
    response ends, streams included. Probes, metrics and the UI are never refused.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0  # the event loop's thread only: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.limit or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            metrics.SHED.inc()
            response = error_response(
                503,
                "overloaded",
                f"{self.limit} requests are in flight on this replica; retry in a second",
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


access_log = logging.getLogger("ragline.access")
# a caller's request id is kept when it is 1–128 visible ASCII characters (no spaces, no control
# characters that could forge a log line); anything else is replaced by a new one
REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: DEBUG


def request_id_of(scope: Scope) -> str:
    """The caller's `X-Request-ID` when it is short and printable, else a new random id."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            sent = value.decode("latin-1")
            return sent if REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestLog:
    """Each HTTP request gets a request id, returned as `X-Request-ID` and carried by every
    log record of the request (`ragline.logs`), and one access log line (`ragline.access`)
    once its response ends, streams included: method, path (never the query string), status,
    duration, bytes, client, and the request's ids, key id and collection. Probes and
    `/metrics` are logged at DEBUG, everything else at INFO.

    Outermost, so refused requests (503 overloaded, 413) are logged too. A request that
    raises gets its line with status 500, and its context stays set for the app's error
    handler, which logs the traceback after this middleware (the request's task ends there).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = logs.RequestContext(request_id_of(scope))
        token = logs.begin_request(context)
        started = time.perf_counter()
        status, sent = 500, 0

        async def logged_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", context.request_id)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            _log_access(scope, status, sent, time.perf_counter() - started)
        logs.end_request(token)


def _log_access(scope: Scope, status: int, sent: int, duration_s: float) -> None:
    method, path = scope["method"], scope["path"]
    client = scope.get("client")
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(duration_s * 1000, 1),
        "bytes": sent,
        "client": client[0] if client else None,
        **logs.context_fields(),
    }
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    access_log.log(level, "%s %s %d", method, path, status, extra={logs.FIELDS: fields})
