"""The local trace store: spans in the ragline database (what `ragline traces` and the API read)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from sqlalchemy import Connection, Engine, Row, Select, delete, func, insert, select
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
        self,
        limit: int = 20,
        session_id: str | None = None,
        errors_only: bool = False,
        collections: list[str] | None = None,
    ) -> list[TraceSummary]:
        """The newest `limit` traces (roots); with `collections`, the newest `limit` of those
        a key scoped to them may read (`readable`), so a scoped key gets its own traces
        however many others' are newer."""
        roots = select(spans).where(spans.c.parent_span_id.is_(None))
        if session_id:
            roots = roots.where(spans.c.session_id == session_id)
        if errors_only:
            errored = select(spans.c.trace_id).where(spans.c.status == "ERROR")
            roots = roots.where(spans.c.trace_id.in_(errored))
        if collections is not None:
            if not collections:
                return []
            # in SQL: one of the key's collections, or a multi-source label checked below
            label = spans.c.attributes[attr.COLLECTION].as_string()
            roots = roots.where(label.in_(collections) | label.contains(","))
        roots = roots.order_by(spans.c.start_time.desc(), spans.c.trace_id)
        with self.engine.connect() as conn:
            rows = [
                valid_texts(dict(r._mapping))
                for r in self._visible_roots(conn, roots, limit, collections)
            ]
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

    @staticmethod
    def _visible_roots(
        conn: Connection, roots: Select[Any], limit: int, collections: list[str] | None
    ) -> list[Row[Any]]:
        """The first `limit` roots the collections allow, a page at a time: the SQL filter
        leaves only multi-source traces to refuse here, so the first page nearly always does."""
        if collections is None:
            return list(conn.execute(roots.limit(limit)))
        page = max(limit * 2, 100)
        found: list[Row[Any]] = []
        offset = 0
        while len(found) < limit:
            rows = list(conn.execute(roots.limit(page).offset(offset)))
            found.extend(r for r in rows if readable(collections, r.attributes))
            if len(rows) < page:
                break
            offset += page
        return found[:limit]

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

    def exists(self, trace_id: str) -> bool:
        """Whether the local store holds any span of this trace."""
        query = select(spans.c.trace_id).where(spans.c.trace_id == trace_id).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def add_feedback(
        self,
        feedback_id: str,
        trace_id: str,
        name: str,
        value: float,
        comment: str | None,
        rater: str = "",
        key_id: str | None = None,
    ) -> None:
        """Record (or replace) one score per (trace, name, rater); `feedback_id` is derived
        from those three (`feedback.feedback_id`)."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(feedback).where(
                    (feedback.c.id == feedback_id)
                    | (
                        (feedback.c.trace_id == trace_id)
                        & (feedback.c.name == name)
                        & (feedback.c.rater == rater)
                    )
                )
            )
            conn.execute(
                insert(feedback).values(
                    id=feedback_id,
                    trace_id=trace_id,
                    name=name,
                    value=value,
                    comment=comment,
                    rater=rater,
                    key_id=key_id,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )

    def feedback(self, trace_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                valid_texts(dict(r._mapping))
                for r in conn.execute(select(feedback).where(feedback.c.trace_id == trace_id))
            ]


def readable(collections: list[str] | None, root_attributes: dict[str, Any] | None) -> bool:
    """Whether a key scoped to `collections` (None: all) may read a trace, from its root's
    attributes: it needs every collection the trace used (a multi-source trace names them
    all, comma-separated); a trace that names none is for all-collection keys only."""
    if collections is None:
        return True
    label = (root_attributes or {}).get(attr.COLLECTION)
    used = [c for c in str(label).split(",") if c] if label is not None else []
    return bool(used) and all(c in collections for c in used)


def span_tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest spans under their parents: [{...root, children: [...]}]."""
    by_id = {r["span_id"]: {**r, "children": []} for r in rows}
    roots: list[dict[str, Any]] = []
    for row in by_id.values():
        parent = by_id.get(row["parent_span_id"]) if row["parent_span_id"] else None
        (parent["children"] if parent else roots).append(row)
    return roots
