"""Traces from the local store, and user feedback on them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ragline.api.deps import Caller, CallerDep, RuntimeDep
from ragline.api.schemas import with_utc
from ragline.errors import NotFoundError
from ragline.factory import Runtime
from ragline.tracing.store import readable, span_tree

router = APIRouter(prefix="/v1", tags=["traces"])
NOT_FOUND = "trace {trace_id} is not in the local trace store (not sampled, or not exported yet)"
TraceId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="32 hex characters")]


class FeedbackRequest(BaseModel):
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    value: float = Field(ge=-1.0, le=1.0, description="1/0 (helpful or not) or -1..1")
    comment: str | None = Field(default=None, max_length=2000)
    name: str = Field(default="user_feedback", min_length=1, max_length=100)


class FeedbackOut(BaseModel):
    id: str
    trace_id: str
    kept: bool


def trace_spans(runtime: Runtime, trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans. Spans reach the local store on a short batch timer, so a trace asked
    for right after its answer (to show it, or to rate it) may not be there yet: flush the
    exporters once and look again before answering 404."""
    try:
        return runtime.traces.spans(trace_id)
    except NotFoundError:
        runtime.tracing.flush(timeout_s=2)
    try:
        return runtime.traces.spans(trace_id)
    except NotFoundError as exc:
        raise NotFoundError(NOT_FOUND.format(trace_id=trace_id)) from exc


def _scope(caller: Caller) -> list[str] | None:
    """The collections whose traces this caller may read; None: all."""
    return caller.key.collections if caller.key is not None else None


def _check_trace(runtime: Runtime, caller: Caller, trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans, when this caller may read it (`readable`). One it may not read is
    answered like one that does not exist (404), so a key cannot learn that another
    collection's trace id is real."""
    rows = trace_spans(runtime, trace_id)
    scope = _scope(caller)
    if scope is None:
        return rows
    roots = [r for r in rows if r["parent_span_id"] is None] or rows
    if not readable(scope, roots[0]["attributes"]):
        raise NotFoundError(NOT_FOUND.format(trace_id=trace_id))
    return rows


@router.get("/traces")
def list_traces(
    caller: CallerDep,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    session_id: Annotated[str | None, Query(max_length=200)] = None,
    errors: bool = False,
) -> list[dict[str, Any]]:
    """Recent traces (roots), newest first; filter by session or to those with errors. A
    scoped key gets the newest `limit` of the traces it may read."""
    summaries = runtime.traces.recent(limit, session_id, errors, _scope(caller))
    result: list[dict[str, Any]] = with_utc([asdict(s) for s in summaries])
    return result


@router.get("/traces/{trace_id}/diagnosis")
def diagnose_trace(trace_id: TraceId, caller: CallerDep, runtime: RuntimeDep) -> dict[str, Any]:
    """What went wrong in this trace: findings with severity, evidence and a fix
    (empty retrieval, truncation, irrelevant or ungrounded answer, slow stage, oversized chunks)."""
    from ragline.ops.doctor import Doctor, as_dict

    rows = _check_trace(runtime, caller, trace_id)
    doctor = Doctor(runtime.store.engine, runtime.settings)
    return {
        "trace_id": trace_id,
        "findings": as_dict(doctor.diagnose(rows)),
    }


@router.get("/traces/{trace_id}")
def get_trace(trace_id: TraceId, caller: CallerDep, runtime: RuntimeDep) -> dict[str, Any]:
    """One trace as a span tree (durations, status, attributes), with its feedback."""
    rows = _check_trace(runtime, caller, trace_id)
    trace: dict[str, Any] = with_utc(
        {
            "trace_id": trace_id,
            "spans": span_tree(rows),
            "feedback": runtime.traces.feedback(trace_id),
        }
    )
    return trace


@router.post("/feedback", status_code=201, response_model=FeedbackOut)
def post_feedback(request: FeedbackRequest, caller: CallerDep, runtime: RuntimeDep) -> FeedbackOut:
    """Record feedback on a trace: stored, sent to Langfuse as a score, and negative feedback
    (value ≤ 0) keeps the trace even if sampling dropped it. One score per trace, name and
    rater: the API key (and within it the X-User-Id the application sends), or without auth
    the X-User-Id or one anonymous slot; the key id is stored with it. An unknown trace (or
    one this key may not read) is a 404."""
    if _scope(caller) is not None:
        _check_trace(runtime, caller, request.trace_id)  # a scoped key: only traces it may read
    result = runtime.feedback.record(
        request.trace_id,
        request.value,
        request.comment,
        request.name,
        key_id=caller.key.id if caller.key else None,
        user_id=caller.user_id,
    )
    return FeedbackOut(id=result.id, trace_id=result.trace_id, kept=result.kept)
