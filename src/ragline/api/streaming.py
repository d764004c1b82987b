"""Bounds on a streamed answer: its own time limit, and the drain period of a shutdown.

When either passes, `DeadlineExceededError` is thrown *into* the service's event generator, so
the request's trace records the error and its root span ends (and is exported) like any other
failure; the route then sends its `error` event and closes the stream cleanly. Closing the
generator instead would mark the trace as cancelled by the client, and a task cancelled by the
server at shutdown would leave the trace open and lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from typing import TypeVar

from ragline.errors import DeadlineExceededError

T = TypeVar("T")


def bounded(
    events: Generator[T, None, None],
    timeout_s: float,
    draining: threading.Event,
    drain_s: float,
) -> Iterator[T]:
    """`events` until they end, `timeout_s` passes, or `drain_s` passes after `draining` is set
    (the server received SIGTERM); the latter two raise DeadlineExceededError (checked between
    events: a token arrives every few tens of milliseconds)."""
    deadline = time.monotonic() + timeout_s
    drain_deadline: float | None = None
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
