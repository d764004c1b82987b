"""OpenAI-compatible chat completions: existing OpenAI clients and chat UIs work unchanged.

`model` names the collection ("ragline" means the default one). The last user message is the
question; the answer's cited sources are appended to the text, and the full answer object
(citations, retrieval, timings) rides along under the extra key `ragline`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator
from contextlib import closing
from typing import Any

from fastapi import APIRouter

from ragline.api.budget import Spend, reserve
from ragline.api.deps import Caller, CallerDep, RuntimeDep, State
from ragline.api.errors import ApiError
from ragline.api.routes.query import check_limits, stream_error
from ragline.api.schemas import ChatRequest
from ragline.api.state import AppState
from ragline.api.streaming import ClosingStreamingResponse, bounded
from ragline.factory import Runtime

router = APIRouter(prefix="/v1", tags=["openai"])
DEFAULT_MODEL = "ragline"


def collection_of(model: str, runtime: Runtime) -> str:
    return runtime.settings.default_collection if model == DEFAULT_MODEL else model


def sources_footer(answer: dict[str, Any]) -> str:
    if not answer["citations"]:
        return ""
    lines = [f"[{c['n']}] {c['source']}" for c in answer["citations"]]
    return "\n\nSources:\n" + "\n".join(lines)


@router.get("/models")
def list_models(caller: CallerDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Collections as models, for chat UIs that list them."""
    names = [
        c.name
        for c in runtime.store.list_collections()
        if caller.key is None or caller.key.allows(c.name)
    ]
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "ragline"} for name in names
        ],
    }


@router.post("/chat/completions", response_model=None)
def chat_completions(
    request: ChatRequest, caller: CallerDep, state: State
) -> dict[str, Any] | ClosingStreamingResponse:
    runtime = state.runtime
    questions = [m.text() for m in request.messages if m.role == "user" and m.text().strip()]
    if not questions:
        raise ApiError(422, "no user message with text", "invalid_request")
    question = questions[-1]
    collection = collection_of(request.model, runtime)
    check_limits(runtime.settings, question, None)
    caller.check_collection(collection)
    runtime.store.collection_version(collection)  # 404 for an unknown model/collection
    spend = reserve(state, caller, question)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if request.stream:
        chunks = _stream(
            state,
            question,
            collection,
            request.model,
            completion_id,
            caller,
            request.user or caller.user_id,
            spend,
        )
        return ClosingStreamingResponse(chunks, spend.settle)
    user_id = request.user or caller.user_id
    try:
        answer = runtime.query_service.query(
            question, collection, None, caller.session_id, user_id, route="chat"
        )
        spend.observe("done", answer)
    finally:
        spend.settle()
    usage = answer["usage"]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": answer["answer"] + sources_footer(answer),
                },
                "finish_reason": _finish(answer["finish_reason"]),
            }
        ],
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens") or 0,
            "completion_tokens": usage.get("completion_tokens") or 0,
            "total_tokens": usage.get("total_tokens") or 0,
        },
        "ragline": answer,
    }


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _stream(
    state: AppState,
    question: str,
    collection: str,
    model: str,
    completion_id: str,
    caller: Caller,
    user_id: str | None,
    spend: Spend,
) -> Generator[str, None, None]:
    """The answer as chat completion chunks; the budget is settled when it ends, or is cut."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    server = state.runtime.settings.server
    try:
        events = state.runtime.query_service.stream(
            question, collection, None, caller.session_id, user_id, route="chat"
        )
        answer = bounded(events, server.stream_timeout_s, state.draining, server.drain_s)
        with closing(answer):  # closed at once when the client goes away: the LLM call stops
            for name, data in answer:
                spend.observe(name, data)
                if name == "token":
                    yield chunk({"content": data["text"]})
                elif name == "done":
                    footer = sources_footer(data)
                    if footer:
                        yield chunk({"content": footer})
                    yield chunk({}, _finish(data["finish_reason"]), ragline=data)
    except Exception as exc:  # the status line is sent: the error becomes the last chunk
        status, failure = stream_error(exc)
        error = {"message": failure["message"], "type": failure["code"], "code": status}
        yield f"data: {json.dumps({'error': error})}\n\n"
    finally:
        spend.settle()
    yield "data: [DONE]\n\n"
