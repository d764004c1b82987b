"""Feedback and the trace listing on the store (SQLite and PostgreSQL): a score per rater with
its key id (here and in Langfuse), no feedback on traces that do not exist (but on ones the
tail sampler still holds), and a scoped listing that fills its limit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from ragline.config import Settings
from ragline.errors import NotFoundError
from ragline.evals.datasets import read_negative_feedback
from ragline.store import create_store_engine, migrate
from ragline.store.schema import spans
from ragline.tracing import attributes as attr
from ragline.tracing.feedback import FeedbackService, LangfuseScores
from ragline.tracing.setup import Tracing
from ragline.tracing.store import LocalSpanExporter, TraceStore
from tests.integration.test_langfuse_contract import langfuse  # noqa: F401 (a fixture)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_store_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def tracing(engine: Engine, tmp_path: Path, sample_rate: float) -> Tracing:
    settings = Settings(home=tmp_path, tracing={"sample_rate": sample_rate})
    return Tracing(settings, local_exporter=LocalSpanExporter(engine))


def one_trace(tracing: Tracing, collection: str = "kb") -> str:
    """A finished trace with a question; its id."""
    attributes = {attr.COLLECTION: collection, attr.INPUT_VALUE: "why?"}
    with tracing.tracer.start_as_current_span(attr.QUERY, attributes=attributes) as root:
        return format(root.get_span_context().trace_id, "032x")


def root_row(trace_id: str, collection: str | None, start: datetime) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": trace_id[:16],
        "parent_span_id": None,
        "name": attr.QUERY,
        "start_time": start,
        "end_time": start,
        "duration_ms": 1.0,
        "status": "OK",
        "attributes": {attr.COLLECTION: collection} if collection else {},
        "events": [],
    }


def test_two_keys_rating_one_trace_keep_a_score_each_with_their_key_id(
    engine: Engine,
    tmp_path: Path,
    langfuse: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    """The second key's score no longer replaces the first's: one row per key (and per end
    user within a key), each naming its key; a key rating again updates its own row; the
    Langfuse score ids follow (two keys, two scores); the listing shows the lowest score; a
    trace rated down twice is one regression item."""
    url, captured = langfuse
    traced = tracing(engine, tmp_path, 1.0)
    settings = Settings(home=tmp_path, langfuse={"host": url, "public_key": "p", "secret_key": "s"})
    scores = LangfuseScores(settings.langfuse)
    traces = TraceStore(engine)
    service = FeedbackService(traces, traced, scores)
    try:
        trace_id = one_trace(traced)
        first = service.record(trace_id, 1, "good", key_id="k1")
        second = service.record(trace_id, 0, "bad", key_id="k2")
        again = service.record(trace_id, 0.5, "fine", key_id="k1")
        per_user = service.record(trace_id, -1, None, key_id="k1", user_id="u7")
        assert again.id == first.id and len({first.id, second.id, per_user.id}) == 3
        rows = {
            (r["key_id"], r["rater"]): (r["value"], r["comment"]) for r in traces.feedback(trace_id)
        }
        assert rows == {
            ("k1", "key:k1"): (0.5, "fine"),
            ("k2", "key:k2"): (0.0, "bad"),
            ("k1", "key:k1:user:u7"): (-1.0, None),
        }
        traced.flush()
        (summary,) = traces.recent(5)
        assert summary.trace_id == trace_id and summary.feedback == -1.0
        assert [item.id for item in read_negative_feedback(engine)] == [trace_id]
    finally:
        scores.close()
        traced.shutdown()
    sent = [json.loads(r["body"]) for r in captured if r["path"] == "/api/public/scores"]
    assert [(b["id"], b["value"]) for b in sent] == [
        (first.id, 1),
        (second.id, 0),
        (first.id, 0.5),
        (per_user.id, -1),
    ]


def test_feedback_needs_a_trace_that_exists_or_that_the_sampler_still_holds(
    engine: Engine, tmp_path: Path
) -> None:
    """An id nobody has seen is refused (NotFoundError, a 404) and nothing is stored; a trace
    that sampling dropped can still be rated, and negative feedback keeps it; a kept trace can
    be rated before its exporter has written it."""
    traced = tracing(engine, tmp_path, 0.0)  # every ordinary trace is sampled out
    traces = TraceStore(engine)
    service = FeedbackService(traces, traced, None)
    try:
        made_up = uuid.uuid4().hex
        with pytest.raises(NotFoundError):
            service.record(made_up, 1, key_id="k1")
        with pytest.raises(NotFoundError):
            service.record(made_up, 0, key_id="k1")
        assert traces.feedback(made_up) == []
        with pytest.raises(NotFoundError):
            service.record("not-hex", 0)  # `ragline feedback` passes any text
        dropped = one_trace(traced)
        assert not service.record(dropped, 1, key_id="k1").kept  # held: rated, still dropped
        assert not traces.exists(dropped)
        assert service.record(dropped, 0, key_id="k2").kept
        traced.flush()
        assert traces.exists(dropped)
        assert {r["key_id"] for r in traces.feedback(dropped)} == {"k1", "k2"}
    finally:
        traced.shutdown()
    kept_tracing = tracing(engine, tmp_path, 1.0)
    service = FeedbackService(traces, kept_tracing, None)
    try:
        fresh = one_trace(kept_tracing)
        service.record(fresh, 1, key_id="k1")  # found, written or not
    finally:
        kept_tracing.shutdown()


def test_a_scoped_listing_fills_its_limit_with_traces_the_key_may_read(engine: Engine) -> None:
    """Before, the limit was applied first and the scope after: 300 newer traces of b left a
    key scoped to a with nothing. A multi-source trace needs every collection it used; one
    with no collection is for all-collection keys only."""
    now = datetime(2025, 1, 1)
    rows = [root_row(uuid.uuid4().hex, "a", now + timedelta(seconds=i)) for i in range(3)]
    rows += [root_row(uuid.uuid4().hex, "b", now + timedelta(seconds=10 + i)) for i in range(300)]
    both = root_row(uuid.uuid4().hex, "a,b", now + timedelta(seconds=400))
    unlabelled = root_row(uuid.uuid4().hex, None, now + timedelta(seconds=401))
    with engine.begin() as conn:
        conn.execute(insert(spans), [*rows, both, unlabelled])
    traces = TraceStore(engine)
    a_ids = [r["trace_id"] for r in reversed(rows[:3])]
    assert [t.trace_id for t in traces.recent(2, collections=["a"])] == a_ids[:2]
    assert [t.trace_id for t in traces.recent(20, collections=["a"])] == a_ids
    assert [t.trace_id for t in traces.recent(1, collections=["a", "b"])] == [both["trace_id"]]
    assert [t.trace_id for t in traces.recent(1)] == [unlabelled["trace_id"]]
    assert traces.recent(20, collections=[]) == []
    assert len(traces.recent(500, collections=["b"])) == 300
