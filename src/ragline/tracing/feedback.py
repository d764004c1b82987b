"""User feedback: stored locally, sent to Langfuse as a score, and negative feedback keeps the
trace (even one that sampling dropped, within `tracing.feedback_window_s`)."""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from ragline.config import LangfuseSettings
from ragline.errors import NotFoundError
from ragline.tracing.setup import Tracing, langfuse_client
from ragline.tracing.store import TraceStore

log = logging.getLogger(__name__)
TRACE_ID = re.compile(r"[0-9a-f]{32}")
FEEDBACK_NAMESPACE = uuid.UUID("6f1c7e0a-9a55-4a47-9d1e-2b8c3f0e5a11")


def feedback_id(trace_id: str, name: str, rater: str = "") -> str:
    """One score per (trace, name, rater): the same rater giving feedback again updates it
    (Langfuse upserts on id), another rater's score is a score of its own. The anonymous slot
    (rater '') keeps the id scores had before raters existed."""
    identity = f"{trace_id}:{name}:{rater}" if rater else f"{trace_id}:{name}"
    return str(uuid.uuid5(FEEDBACK_NAMESPACE, identity))


def rater_of(key_id: str | None, user_id: str | None) -> str:
    """Whose score it is: the API key, and within it the end user the application names
    (X-User-Id), so one application key serving many users keeps a score per user. Without
    auth: the user id, or the one anonymous slot ''."""
    parts = ([f"key:{key_id}"] if key_id else []) + ([f"user:{user_id}"] if user_id else [])
    return ":".join(parts)[:250]


def is_negative(value: float) -> bool:
    """0 on a 1/0 scale and anything below 0 on a -1..1 scale."""
    return value <= 0


@dataclass(frozen=True)
class FeedbackResult:
    id: str
    trace_id: str
    kept: bool  # a sampled-out trace was exported because of this feedback


class LangfuseScores:
    """POST {host}/api/public/scores with Basic auth; a background thread, never the request."""

    def __init__(
        self, settings: LangfuseSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._client = langfuse_client(settings, 5.0, transport)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragline-langfuse")
        self.sent = 0
        self.failed = 0

    def send(
        self, score_id: str, trace_id: str, name: str, value: float, comment: str | None
    ) -> Future[None]:
        body = {
            "id": score_id,
            "traceId": trace_id,
            "name": name,
            "value": value,
            "dataType": "NUMERIC",
        }
        if comment:
            body["comment"] = comment
        return self._pool.submit(self._post, body)

    def _post(self, body: dict[str, object]) -> None:
        try:
            self._client.post("/api/public/scores", json=body).raise_for_status()
            self.sent += 1
        except httpx.HTTPError as exc:
            self.failed += 1
            log.warning("langfuse score failed trace=%s error=%s", body["traceId"], exc)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()


class FeedbackService:
    def __init__(
        self, traces: TraceStore, tracing: Tracing, langfuse: LangfuseScores | None
    ) -> None:
        self.traces = traces
        self.tracing = tracing
        self.langfuse = langfuse

    def record(
        self,
        trace_id: str,
        value: float,
        comment: str | None = None,
        name: str = "user_feedback",
        key_id: str | None = None,
        user_id: str | None = None,
    ) -> FeedbackResult:
        """Store the score of this rater (key and user, see `rater_of`); NotFoundError when no
        such trace exists. A trace exists when the local store has it or the tail sampler
        holds it or saw it within `tracing.feedback_window_s` (not exported yet, or sampled
        out): negative feedback on a dropped trace still keeps it."""
        if TRACE_ID.fullmatch(trace_id) is None:  # the CLI passes what it was given
            raise NotFoundError(f"{trace_id!r} is not a trace id (32 hex characters)")
        kept = self.tracing.keep(trace_id) if is_negative(value) else False
        if not kept and not self.traces.exists(trace_id) and not self.tracing.seen(trace_id):
            raise NotFoundError(f"trace {trace_id} does not exist (or is no longer held)")
        rater = rater_of(key_id, user_id)
        score_id = feedback_id(trace_id, name, rater)
        self.traces.add_feedback(score_id, trace_id, name, value, comment, rater, key_id)
        if self.langfuse is not None:
            self.langfuse.send(score_id, trace_id, name, value, comment)
        return FeedbackResult(score_id, trace_id, kept)
