"""ASGI middleware: admission control, request size limits enforced before a body is read
whole, JSON bodies checked before any route parses them, security headers on every
response, and request ids with the access log."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragline import jsonbody, logs, metrics
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


class JsonBodyGuard:
    """Reads a `/v1` JSON body whole (BodyLimit, outside, bounds its size) and refuses with 422
    what the routes' parser (`json.loads`) would let through or crash on: lone surrogates and
    invalid UTF-8 (text no response or store can hold), and nesting past `max_depth`
    (RecursionError). The body is then replayed to the app unchanged.

    Reading the body here also makes a streamed (chunked) body over the limit a 413: FastAPI
    turns any failure while it reads a body into a 400."""

    def __init__(self, app: ASGIApp, max_depth: int = jsonbody.MAX_DEPTH) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _has_json_body(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                jsonbody.loads(body, self.max_depth)
            except jsonbody.InvalidJSONError as exc:
                response = error_response(422, "invalid_request", f"request body: {exc}")
                await response(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # later reads wait for the disconnect, as streaming responses do
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _has_json_body(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
        return False
    if not scope["path"].startswith("/v1/"):
        return False
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    return jsonbody.is_json(content_type)


# The UI (and every API response): scripts and styles from this origin only, fetch to it only,
# no inline code, no framing. The UI keeps its API key in sessionStorage: an injected script
# would read it, so none may run.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# /docs and /redoc load Swagger UI and ReDoc from jsDelivr (fonts from Google for ReDoc);
# Swagger UI's inline start-up script is allowed by its hash, computed per response; their
# styles are injected at run time, so inline styles are allowed there (not scripts).
DOCS_CSP = (
    "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net{hashes}; "
    "style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def script_hashes(html: bytes) -> str:
    """` 'sha256-…'` for each inline <script> of a page (CSP hash sources)."""
    return "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in INLINE_SCRIPT.findall(html)
    )


class SecurityHeaders:
    """`X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy` and a
    `Content-Security-Policy` on every response this app sends; the API docs pages get a
    policy of their own (`DOCS_CSP`), their body read whole to hash its inline script."""

    def __init__(self, app: ASGIApp, docs_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.docs_paths:
            await self._docs(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _secured(message.get("headers", []), CSP.encode())
            await send(message)

        await self.app(scope, receive, with_headers)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        body = b""

        async def buffered(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body", False):
                return
            assert start is not None
            policy = DOCS_CSP.format(hashes=script_hashes(body))
            start["headers"] = _secured(start.get("headers", []), policy.encode())
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, buffered)


def _secured(headers: list[tuple[bytes, bytes]], policy: bytes) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    added = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
    if b"content-security-policy" not in present:
        added.append((b"content-security-policy", policy))
    return [*headers, *added]


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
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):  # on every request: build nothing nobody reads
        return
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
    access_log.log(level, "%s %s %d", method, path, status, extra={logs.FIELDS: fields})
