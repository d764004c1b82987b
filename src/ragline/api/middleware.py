"""ASGI middleware: admission control, request size limits enforced before a body is read
whole, and JSON bodies checked before any route parses them."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragline import jsonbody, metrics
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
