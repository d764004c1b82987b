"""Questions: answers (JSON or Server-Sent Events) and retrieval only."""

from __future__ import annotations

import json
import logging
from collections.abc import Generator
from contextlib import closing
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from ragline.api.budget import Spend, reserve
from ragline.api.deps import Caller, CallerDep, RuntimeDep, State
from ragline.api.errors import STORE_ERRORS, STORE_UNAVAILABLE, ApiError, status_of
from ragline.api.schemas import QueryRequest, RetrieveRequest
from ragline.api.state import AppState
from ragline.api.streaming import ClosingStreamingResponse, bounded
from ragline.config import Settings
from ragline.errors import RaglineError, one_line

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["query"])


def check_limits(settings: Settings, question: str, top_k: int | None) -> None:
    server = settings.server
    if len(question) > server.max_question_chars:
        raise ApiError(
            422,
            f"question is {len(question)} characters; the limit is {server.max_question_chars}",
            "invalid_request",
        )
    if top_k is not None and top_k > server.max_top_k:
        raise ApiError(422, f"top_k must be at most {server.max_top_k}", "invalid_request")


def with_caller(
    body: dict[str, Any], caller: Caller, session_id: str | None, user_id: str | None
) -> dict[str, Any]:
    body["session_id"] = session_id or caller.session_id
    body["user_id"] = user_id or caller.user_id
    return body


class FastJSON(Response):
    """JSON via orjson, without FastAPI's generic encoder pass (answers carry whole chunks)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@router.post("/query", response_model=None)
def query(request: QueryRequest, caller: CallerDep, state: State) -> Response:
    """Answer a question with citations. With `stream: true`, Server-Sent Events:
    `retrieval` (the numbered passages, first), `token` (text deltas), `done` (the answer
    object with finish_reason, usage and timings), or `error`.
    """
    runtime = state.runtime
    check_limits(runtime.settings, request.question, request.top_k)
    sources = request.sources()
    for source in sources:  # a scoped key must be allowed every source
        caller.check_collection(source.collection)
    service = runtime.query_service
    if not request.stream:
        session_id, user_id = (
            request.session_id or caller.session_id,
            request.user_id or caller.user_id,
        )
        spend = reserve(state, caller, request.question, request.mode, sources)
        try:
            body = service.query(
                request.question,
                request.collection,
                request.top_k,
                session_id,
                user_id,
                sources=sources,
                mode=request.mode,
            )
            spend.observe("done", body)
        finally:
            spend.settle()
        return FastJSON(with_caller(body, caller, request.session_id, request.user_id))
    for source in sources:  # 404 before the stream starts
        runtime.store.collection_version(source.collection)
    spend = reserve(state, caller, request.question, request.mode, sources)
    events = _sse(state, request, caller, spend)
    return ClosingStreamingResponse(events, spend.settle, headers={"Cache-Control": "no-cache"})


def _sse(
    state: AppState, request: QueryRequest, caller: Caller, spend: Spend
) -> Generator[str, None, None]:
    """The answer's events as SSE; the budget is settled when it ends, or is cut."""
    runtime, settings = state.runtime, state.runtime.settings.server
    try:
        session_id, user_id = (
            request.session_id or caller.session_id,
            request.user_id or caller.user_id,
        )
        events = runtime.query_service.stream(
            request.question,
            request.collection,
            request.top_k,
            session_id,
            user_id,
            sources=request.sources(),
            mode=request.mode,
        )
        answer = bounded(events, settings.stream_timeout_s, state.draining, settings.drain_s)
        with closing(answer):  # closed at once when the client goes away: the LLM call stops
            for name, data in answer:
                spend.observe(name, data)
                if name == "done":
                    data = with_caller(data, caller, request.session_id, request.user_id)
                yield sse_event(name, data)
    except Exception as exc:  # the status line is sent: the error becomes the last event
        yield sse_event("error", stream_error(exc)[1])
    finally:
        spend.settle()


def stream_error(exc: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status it would have had, `error` body) for a stream that failed after its 200
    status line was sent."""
    if isinstance(exc, RaglineError):
        status, code = status_of(exc)
        error = {"code": code, "message": str(exc)}
        if exc.trace_id:
            error["trace_id"] = exc.trace_id
        return status, error
    if isinstance(exc, STORE_ERRORS):
        log.warning("stream failed: store unavailable error=%s", one_line(exc))
        return 503, {"code": "store_unavailable", "message": STORE_UNAVAILABLE}
    log.error("stream failed", exc_info=exc)
    return 500, {"code": "internal_error", "message": "internal error; the server log has details"}


def sse_event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.post("/retrieve", response_model=None)
def retrieve(request: RetrieveRequest, caller: CallerDep, runtime: RuntimeDep) -> Response:
    """Retrieval only (for other RAG front ends): each leg's hits and the fused chunks."""
    check_limits(runtime.settings, request.question, request.top_k)
    caller.check_collection(request.collection)
    body = runtime.query_service.retrieve(
        request.question, request.collection, request.top_k, caller.session_id, caller.user_id
    )
    return FastJSON(body)
