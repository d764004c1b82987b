"""The local trace store: spans in the ragline database (what `ragline traces` and the API read)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from ragline.errors import NotFoundError
from ragline.store.schema import feedback, spans
from ragline.text import valid_texts
from ragline.tracing import attributes as attr


def _time(nanoseconds: int | None) -> datetime:
    return datetime.fromtimestamp((nanoseconds or 0) / 1e9, UTC).replace(tzinfo=None)


def span_row(span: ReadableSpan) -> dict[str, Any]:
    """A span as a `spans` row. Strings are made valid text: a lone surrogate stored in a span
    made every later listing of it a 500 (rows stored before that are repaired on reading)."""
    attributes = valid_texts(dict(span.attributes or {}))
    context = span.get_span_context()
    assert context is not None
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": valid_texts(span.name),
        "kind": attributes.get(attr.SPAN_KIND),
        "start_time": _time(span.start_time),
        "end_time": _time(span.end_time),
        "duration_ms": round(((span.end_time or 0) - (span.start_time or 0)) / 1e6, 3),
        "status": span.status.status_code.name,
        "status_message": valid_texts(span.status.description),
        "session_id": attributes.get(attr.SESSION_ID),
        "user_id": attributes.get(attr.USER_ID),
        "attributes": attributes,
        "events": [
            {
                "name": valid_texts(e.name),
                "time": datetime.fromtimestamp((e.timestamp or 0) / 1e9, UTC).isoformat(),
                "attributes": valid_texts(dict(e.attributes or {})),
            }
            for e in span.events
        ],
    }


class LocalSpanExporter(SpanExporter):
    """Writes spans to the `spans` table (an exporter like any other, behind a BoundedBatch)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def export(self, batch: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [span_row(s) for s in batch]
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(spans), rows)
        except SQLAlchemyError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    name: str
    start_time: datetime
    duration_ms: float
    status: str
    session_id: str | None
    user_id: str | None
    spans: int
    input: str | None
    feedback: float | None


class TraceStore:
    """Reads traces back, and stores feedback."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def recent(
        self, limit: int = 20, session_id: str | None = None, errors_only: bool = False
    ) -> list[TraceSummary]:
        roots = select(spans).where(spans.c.parent_span_id.is_(None))
        if session_id:
            roots = roots.where(spans.c.session_id == session_id)
        if errors_only:
            errored = select(spans.c.trace_id).where(spans.c.status == "ERROR")
            roots = roots.where(spans.c.trace_id.in_(errored))
        roots = roots.order_by(spans.c.start_time.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [valid_texts(dict(r._mapping)) for r in conn.execute(roots)]
            ids = [r["trace_id"] for r in rows]
            counts: dict[str, int] = dict(
                conn.execute(
                    select(spans.c.trace_id, func.count())
                    .where(spans.c.trace_id.in_(ids))
                    .group_by(spans.c.trace_id)
                ).all()
            )
            scores: dict[str, float] = dict(
                conn.execute(
                    select(feedback.c.trace_id, func.min(feedback.c.value))
                    .where(feedback.c.trace_id.in_(ids))
                    .group_by(feedback.c.trace_id)
                ).all()
            )
        return [
            TraceSummary(
                r["trace_id"],
                r["name"],
                r["start_time"],
                r["duration_ms"],
                r["status"],
                r["session_id"],
                r["user_id"],
                counts.get(r["trace_id"], 0),
                (r["attributes"] or {}).get(attr.INPUT_VALUE),
                scores.get(r["trace_id"]),
            )
            for r in rows
        ]

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of a trace, ordered by start time; NotFoundError if there is none."""
        query = select(spans).where(spans.c.trace_id == trace_id).order_by(spans.c.start_time)
        with self.engine.connect() as conn:
            rows = [valid_texts(dict(r._mapping)) for r in conn.execute(query)]
        if not rows:
            raise NotFoundError(
                f"trace {trace_id} is not in the local trace store (not sampled, or not exported yet)"
            )
        return rows

    def add_feedback(
        self, feedback_id: str, trace_id: str, name: str, value: float, comment: str | None
    ) -> None:
        """Record (or replace) one score per (trace, name)."""
        with self.engine.begin() as conn:
            conn.execute(delete(feedback).where(feedback.c.id == feedback_id))
            conn.execute(
                insert(feedback).values(
                    id=feedback_id,
                    trace_id=trace_id,
                    name=name,
                    value=value,
                    comment=comment,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )

    def feedback(self, trace_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                valid_texts(dict(r._mapping))
                for r in conn.execute(select(feedback).where(feedback.c.trace_id == trace_id))
            ]


def span_tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest spans under their parents: [{...root, children: [...]}]."""
    by_id = {r["span_id"]: {**r, "children": []} for r in rows}
    roots: list[dict[str, Any]] = []
    for row in by_id.values():
        parent = by_id.get(row["parent_span_id"]) if row["parent_span_id"] else None
        (parent["children"] if parent else roots).append(row)
    return roots
