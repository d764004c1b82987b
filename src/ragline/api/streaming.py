"""Streamed answers: their bounds (a time limit, the drain period of a shutdown) and their end.

When either bound passes, `DeadlineExceededError` is thrown *into* the service's event generator, so
the request's trace records the error and its root span ends (and is exported) like any other
failure; the route then sends its `error` event and closes the stream cleanly. Closing the
generator instead would mark the trace as cancelled by the client, and a task cancelled by the
server at shutdown would leave the trace open and lost.

When the client goes away, Starlette's StreamingResponse (ASGI spec 2.3, as uvicorn speaks it)
cancels the task that pulls a sync iterator through the threadpool, after the pull in progress
returns, and drops the iterator without closing it: the generator, and the LLM's HTTP stream
inside it, were only closed once the garbage collector got to them, while llama.cpp went on
generating into the socket's buffers. `ClosingStreamingResponse` closes the generator as soon as
the response ends, however it ends: GeneratorExit runs through the route (which settles the
token budget), the service (which marks the trace cancelled) and the LLM client (which closes
the upstream connection, and llama.cpp stops).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import closing
from typing import TypeVar

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ragline.errors import DeadlineExceededError

log = logging.getLogger(__name__)

T = TypeVar("T")


def bounded(
    events: Generator[T, None, None],
    timeout_s: float,
    draining: threading.Event,
    drain_s: float,
) -> Generator[T, None, None]:
    """`events` until they end, `timeout_s` passes, or `drain_s` passes after `draining` is set
    (the server received SIGTERM); the latter two raise DeadlineExceededError (checked between
    events: a token arrives every few tens of milliseconds). Closing this closes `events`."""
    deadline = time.monotonic() + timeout_s
    drain_deadline: float | None = None
    with closing(events):
        for event in events:
            yield event
            now = time.monotonic()
            if draining.is_set() and drain_deadline is None:
                drain_deadline = now + drain_s
            if drain_deadline is not None and now > drain_deadline:
                error = DeadlineExceededError(
                    "the server is shutting down; retry the question", code="shutting_down"
                )
            elif now > deadline:
                error = DeadlineExceededError("the answer exceeded the stream timeout")
            else:
                continue
            events.throw(error)  # the service records it on the trace and raises it back
            raise error  # a generator that swallowed it


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse over a sync generator that is closed, in a worker thread, as soon
    as the response ends: sent whole, or cut by the client (see the module docstring). Then
    `on_close` runs: a generator cut before its first pull never ran its own `finally`."""

    def __init__(
        self,
        content: Generator[str, None, None],
        on_close: Callable[[], None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._generator = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # shielded: a cancelled request must still stop its LLM call. The pull that was in
            # progress has returned (anyio waits for the thread), so the generator is idle.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        try:
            self._generator.close()
        except Exception:  # never a reason to fail a response that has ended
            log.exception("closing a streamed response failed")
        self._on_close()
