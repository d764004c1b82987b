"""Traces of real queries and ingestion jobs: tree, kinds, attributes, sampling, masking,
feedback, and a dead exporter that must not slow anything down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from ragline.cli import app
from ragline.config import Settings
from ragline.factory import Runtime
from ragline.generation.prompts import get_prompt
from ragline.tracing import attributes as attr
from ragline.tracing.setup import Tracing
from ragline.tracing.store import LocalSpanExporter
from tests.helpers import ingest

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
SECURITY = DOCS / "markdown" / "markitdown_SECURITY.md"
QUESTION = "How do I report a security vulnerability?"


def mask_digits(text: str) -> str:
    """A PII mask used by the masking test (referenced as tests.integration.test_tracing:mask_digits)."""
    return "".join("#" if c.isdigit() else c for c in text)


class Traced:
    """A runtime whose tracing also feeds an in-memory exporter the test can read."""

    def __init__(self, settings: Settings) -> None:
        self.memory = InMemorySpanExporter()
        self.runtime = Runtime(settings)
        local = LocalSpanExporter(self.runtime.store.engine)
        self.runtime.__dict__["tracing"] = Tracing(
            settings, local_exporter=local, extra=[SimpleSpanProcessor(self.memory)]
        )

    def ingest(self, collection: str, *paths: Path) -> None:
        ingest(self.runtime, collection, *paths)

    def finished(self) -> list[ReadableSpan]:
        """Every exported span so far (traces are assembled and sampled on a background
        thread: flush first)."""
        self.runtime.tracing.flush()
        return list(self.memory.get_finished_spans())

    def spans(self, trace_id: str) -> dict[str, ReadableSpan]:
        return {
            s.name: s for s in self.finished() if format(s.context.trace_id, "032x") == trace_id
        }

    def close(self) -> None:
        self.runtime.close()


def configured(settings: Settings, **tracing: object) -> Settings:
    return settings.model_copy(update={"tracing": settings.tracing.model_copy(update=tracing)})


@pytest.fixture
def traced(settings: Settings) -> Iterator[Traced]:
    t = Traced(configured(settings, environment="test", release="r1"))
    yield t
    t.close()


def test_a_query_is_one_tree_of_kinded_spans_with_the_langfuse_keys(traced: Traced) -> None:
    """rag.query → embedding, retrieve (→ dense, sparse), prompt, llm; kinds, links, TTFT."""
    traced.ingest("kb", SECURITY)
    answer = traced.runtime.query_service.query(QUESTION, "kb", session_id="sess-1", user_id="u-1")
    spans = traced.spans(answer["trace_id"])
    assert set(spans) == {
        attr.QUERY,
        attr.EMBEDDING,
        attr.RETRIEVE,
        attr.RETRIEVE_DENSE,
        attr.RETRIEVE_SPARSE,
        attr.PROMPT,
        attr.LLM,
    }
    root = spans[attr.QUERY]
    assert root.parent is None
    assert all(s.status.is_ok for s in spans.values()), "a normal answer has no error span"
    for name in (attr.EMBEDDING, attr.RETRIEVE, attr.PROMPT, attr.LLM):
        assert spans[name].parent.span_id == root.context.span_id, name
    for leg in (attr.RETRIEVE_DENSE, attr.RETRIEVE_SPARSE):
        assert spans[leg].parent.span_id == spans[attr.RETRIEVE].context.span_id
    kinds = {name: spans[name].attributes.get(attr.SPAN_KIND) for name in spans}
    assert kinds[attr.QUERY] == "CHAIN" and kinds[attr.EMBEDDING] == "EMBEDDING"
    assert kinds[attr.RETRIEVE] == "RETRIEVER" and kinds[attr.LLM] == "LLM"
    for span in spans.values():  # trace-level keys on every span (Langfuse v4)
        assert (
            span.attributes[attr.SESSION_ID] == "sess-1" and span.attributes[attr.USER_ID] == "u-1"
        )
        assert span.attributes[attr.LANGFUSE_TRACE_NAME] == attr.QUERY
        assert span.attributes[attr.LANGFUSE_ENVIRONMENT] == "test"
    assert root.attributes[attr.INPUT_VALUE] == QUESTION
    assert root.attributes[attr.OUTPUT_VALUE] == answer["answer"]
    assert len(root.attributes[attr.RAG_CONFIG_HASH]) == 12
    retrieve = spans[attr.RETRIEVE].attributes
    assert (
        retrieve[f"{attr.RETRIEVAL_DOCUMENTS}.0.document.id"]
        == answer["retrieval"]["fused"][0]["chunk_id"]
    )
    assert retrieve[f"{attr.RETRIEVAL_DOCUMENTS}.0.document.content"]
    assert retrieve[attr.OUTPUT_VALUE].startswith("[{")
    assert spans[attr.RETRIEVE_DENSE].attributes[attr.HITS] > 0
    llm = spans[attr.LLM].attributes
    assert llm[attr.LLM_MODEL_NAME] and llm[attr.LLM_TOKEN_COUNT_COMPLETION] > 0
    assert llm[attr.LANGFUSE_PROMPT_NAME] == "rag-answer"
    assert llm[attr.LANGFUSE_PROMPT_VERSION] == get_prompt("rag-answer").version  # seeded
    assert "T" in llm[attr.LANGFUSE_COMPLETION_START] and llm[attr.TIME_TO_FIRST_TOKEN_MS] > 0
    assert llm[f"{attr.LLM_INPUT_MESSAGES}.0.message.role"] == "system"
    assert spans[attr.PROMPT].attributes[attr.CONTEXT_UTILISATION] > 0


def test_the_traces_command_shows_the_answer_and_retrieval_cache_hits(
    traced: Traced, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ragline traces <id>` prints the cache-hit attributes the query root really carries (it
    once looked for `ragline.cache.hit`, which nothing sets, and printed no cache hit at all)."""
    traced.ingest("kb", SECURITY)
    service = traced.runtime.query_service
    service.retrieve(QUESTION, "kb")  # fills the retrieval cache
    first = service.query(QUESTION, "kb")
    repeated = service.query(QUESTION, "kb")
    assert first["cache"] == {"answer": False, "retrieval": True}
    assert repeated["cache"]["answer"] is True
    traced.runtime.tracing.flush()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    monkeypatch.setenv("RAGLINE_LLM__BASE_URL", str(settings.llm.base_url))

    def root_line(trace_id: str) -> str:
        shown = CliRunner().invoke(app, ["traces", trace_id])
        assert shown.exit_code == 0, shown.output
        return next(line for line in shown.stdout.splitlines() if line.startswith(attr.QUERY))

    first_root = root_line(first["trace_id"])
    assert "answer_hit=False" in first_root and "retrieval_hit=True" in first_root
    assert "answer_hit=True" in root_line(repeated["trace_id"])


def test_an_ingestion_job_is_a_trace_and_a_bad_file_is_an_error_span(
    traced: Traced, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really")
    traced.ingest("kb", SECURITY, broken)
    finished = traced.finished()
    ingests = [s for s in finished if s.name == attr.INGEST]
    assert len(ingests) == 2
    good = next(s for s in ingests if s.status.is_ok)
    children = {s.name for s in finished if s.parent and s.parent.span_id == good.context.span_id}
    assert children == {attr.PARSE, attr.CHUNK, attr.EMBED, attr.STORE}
    bad = next(s for s in ingests if not s.status.is_ok)
    assert "broken.pdf" in (bad.status.description or "")
    assert any(e.name == "exception" for e in bad.events)


def test_sampling_drops_ordinary_traces_but_keeps_errors_empty_truncated_and_disliked(
    settings: Settings,
) -> None:
    """sample_rate 0: a normal answer is dropped; empty retrieval, truncation and negative
    feedback are kept (exported to the local store too)."""
    sampled = configured(settings, sample_rate=0.0)
    sampled = sampled.model_copy(
        update={
            "llm": sampled.llm.model_copy(update={"max_tokens": 1}),
            "cache": sampled.cache.model_copy(update={"enabled": False}),
        }
    )
    traced = Traced(sampled)
    try:
        traced.ingest("kb", SECURITY)
        truncated = traced.runtime.query_service.query(QUESTION, "kb")
        assert truncated["finish_reason"] == "length"
        assert traced.spans(truncated["trace_id"])  # kept: truncated
        traced.runtime.store.ensure_collection("empty")
        empty_trace = traced.runtime.query_service.query("anything at all?", "empty")["trace_id"]
        assert traced.spans(empty_trace)  # kept: empty retrieval
        ordinary = traced.runtime.query_service.retrieve(QUESTION, "kb")["trace_id"]
        assert traced.spans(ordinary) == {}  # dropped by the ratio
        assert traced.runtime.feedback.record(ordinary, 0, "wrong").kept
        assert traced.spans(ordinary)  # kept after negative feedback
        traced.runtime.tracing.flush()
        assert traced.runtime.traces.spans(ordinary)
    finally:
        traced.close()


def test_content_capture_off_and_masking(settings: Settings) -> None:
    """Without content capture no question, chunk or answer text is recorded; a mask rewrites it."""
    off = Traced(configured(settings, capture_content=False))
    try:
        off.ingest("kb", SECURITY)
        spans = off.spans(
            off.runtime.query_service.retrieve("report 123 vulnerabilities", "kb")["trace_id"]
        )
        for span in spans.values():
            recorded = " ".join(str(v) for v in span.attributes.values())
            assert "report 123" not in recorded and "vulnerabilit" not in recorded.lower()
    finally:
        off.close()
    masked = Traced(configured(settings, mask="tests.integration.test_tracing:mask_digits"))
    try:
        masked.ingest("kb", SECURITY)
        spans = masked.spans(
            masked.runtime.query_service.retrieve("report 123 vulnerabilities", "kb")["trace_id"]
        )
        assert (
            spans[attr.RETRIEVE_ROOT].attributes[attr.INPUT_VALUE] == "report ### vulnerabilities"
        )
    finally:
        masked.close()


def test_capture_off_keeps_headings_out_of_the_retrieval_spans(
    settings: Settings, tmp_path: Path
) -> None:
    """A heading is content: with capture off, chunk metadata on spans keeps only the file name
    and page, never the section heading the chunk sits under (audit finding 6)."""
    record = tmp_path / "record.md"
    record.write_text(
        "# Patient Jane Roe HIV diagnosis\n\nThe clinic recorded the result on a Tuesday.\n"
    )
    off = Traced(configured(settings, capture_content=False))
    try:
        off.ingest("kb", record)
        trace_id = off.runtime.query_service.retrieve("when was the result recorded", "kb")[
            "trace_id"
        ]
        spans = off.spans(trace_id)
        recorded = " ".join(str(v) for s in spans.values() for v in s.attributes.values())
        assert "Jane Roe" not in recorded
        assert "record.md" in recorded  # the file name still identifies the chunk
        stored = " ".join(str(r["attributes"]) for r in off.runtime.traces.spans(trace_id))
        assert "Jane Roe" not in stored
    finally:
        off.close()


def test_a_dead_otlp_endpoint_never_slows_a_request(settings: Settings) -> None:
    """Export failures are counted in the background; the request path does not wait."""
    dead = Traced(
        configured(settings, otlp_endpoint="http://127.0.0.1:9/v1/traces", export_timeout_s=2.0)
    )
    try:
        dead.ingest("kb", SECURITY)
        started = time.perf_counter()
        for _ in range(5):
            dead.runtime.query_service.retrieve(QUESTION, "kb")
        per_request_ms = (time.perf_counter() - started) * 1000 / 5
        assert per_request_ms < 500  # an export attempt alone takes up to 2 s
        dead.runtime.tracing.flush(timeout_s=30)
        exporters = dead.runtime.tracing.health()["exporters"]
        assert exporters["otlp"]["failed"] > 0 and exporters["otlp"]["exported"] == 0
        assert exporters["local"]["exported"] > 0
    finally:
        dead.close()
