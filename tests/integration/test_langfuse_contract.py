"""The Langfuse ingestion contract (docs: ../shared/reference/langfuse.md), checked on the wire:
a loopback capture server stands in for Langfuse, which cannot run here. It records what
ragline sends; the test decodes the OTLP protobuf and checks path, headers, auth, keys, types."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.generation.prompts import get_prompt
from ragline.tracing import attributes as attr
from tests.helpers import ingest

SECURITY = (
    Path(__file__).parent.parent / "fixtures" / "docs" / "markdown" / "markitdown_SECURITY.md"
)
PUBLIC, SECRET = "pk-lf-test", "sk-lf-test"


class Capture(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:
        self.requests.append({"path": self.path, "headers": dict(self.headers), "body": b""})
        if not self.path.startswith("/api/public/v2/prompts/rag-answer?label=production"):
            self.send_response(404)
            self.end_headers()
            return
        prompt = {
            "name": "rag-answer",
            "version": 7,
            "type": "chat",
            "labels": ["production"],
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "{{context}}\n\nQ: {{ question }}"},
            ],
        }
        body = json.dumps(prompt).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def langfuse() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    captured: list[dict[str, Any]] = []
    handler = type("Handler", (Capture,), {"requests": captured})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", captured
    server.shutdown()


def attributes_of(span: Any) -> dict[str, Any]:
    values = {}
    for kv in span.attributes:
        field = kv.value.WhichOneof("value")
        values[kv.key] = getattr(kv.value, field)
    return values


def resolved_type(attributes: dict[str, Any]) -> str:
    """Langfuse's observation type resolution (table D): langfuse.observation.type, then
    openinference.span.kind, then a model key → GENERATION, else SPAN."""
    explicit = attributes.get(attr.LANGFUSE_OBSERVATION_TYPE)
    if explicit in (
        "span",
        "generation",
        "event",
        "embedding",
        "agent",
        "tool",
        "chain",
        "retriever",
    ):
        return str(explicit).upper()
    mapping = {
        "CHAIN": "CHAIN",
        "RETRIEVER": "RETRIEVER",
        "LLM": "GENERATION",
        "EMBEDDING": "EMBEDDING",
    }
    if attributes.get(attr.SPAN_KIND) in mapping:
        return mapping[attributes[attr.SPAN_KIND]]
    return "GENERATION" if attr.LLM_MODEL_NAME in attributes else "SPAN"


def test_spans_and_scores_reach_langfuse_as_its_contract_requires(
    settings: Settings, langfuse: tuple[str, list[dict[str, Any]]]
) -> None:
    host, captured = langfuse
    configured = settings.model_copy(
        update={
            "langfuse": settings.langfuse.model_copy(
                update={"host": host, "public_key": PUBLIC, "secret_key": SECRET}
            ),
            "tracing": settings.tracing.model_copy(
                update={"environment": "staging", "release": "1.2.3"}
            ),
        }
    )
    with Runtime(configured) as rt:
        ingest(rt, "kb", SECURITY)
        answer = rt.query_service.query(
            "How do I report a security vulnerability?", "kb", session_id="s-9", user_id="u-9"
        )
        rt.feedback.record(answer["trace_id"], 1, "helpful")
        rt.tracing.flush()
    expected_auth = "Basic " + base64.b64encode(f"{PUBLIC}:{SECRET}".encode()).decode()

    exports = [r for r in captured if r["path"] == "/api/public/otel/v1/traces"]
    assert exports, f"no OTLP export; saw {[r['path'] for r in captured]}"
    for request in exports:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["authorization"] == expected_auth
        assert headers["x-langfuse-ingestion-version"] == "4"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["content-encoding"] == "gzip"
    spans = {}
    for request in exports:
        message = ExportTraceServiceRequest()
        message.ParseFromString(gzip.decompress(request["body"]))
        for resource_spans in message.resource_spans:
            resource = attributes_of(resource_spans.resource)
            assert resource["service.name"] == "ragline"
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    assert len(span.trace_id) == 16 and len(span.span_id) == 8  # 32 / 16 hex chars
                    if span.trace_id.hex() == answer["trace_id"]:
                        spans[span.name] = attributes_of(span)
    types = {name: resolved_type(values) for name, values in spans.items()}
    assert types[attr.QUERY] == "CHAIN" and types[attr.LLM] == "GENERATION"
    assert types[attr.RETRIEVE] == "RETRIEVER" and types[attr.EMBEDDING] == "EMBEDDING"
    for values in spans.values():  # trace-level keys copied to every span
        assert values[attr.SESSION_ID] == "s-9" and values[attr.USER_ID] == "u-9"
        assert values[attr.LANGFUSE_TRACE_NAME] == attr.QUERY
        assert (
            values[attr.LANGFUSE_ENVIRONMENT] == "staging"
            and values[attr.LANGFUSE_RELEASE] == "1.2.3"
        )
    llm = spans[attr.LLM]
    assert (
        isinstance(llm[attr.LANGFUSE_COMPLETION_START], str)
        and "T" in llm[attr.LANGFUSE_COMPLETION_START]
    )
    assert llm[attr.LANGFUSE_PROMPT_NAME] == "rag-answer"
    assert llm[attr.LANGFUSE_PROMPT_VERSION] == get_prompt("rag-answer").version
    assert isinstance(llm[attr.LLM_TOKEN_COUNT_COMPLETION], int)
    assert (
        json.loads(llm[attr.LLM_INVOCATION_PARAMETERS])["max_tokens"] == configured.llm.max_tokens
    )
    assert spans[attr.EMBEDDING][attr.LANGFUSE_MODEL_NAME]
    assert json.loads(spans[attr.RETRIEVE][attr.OUTPUT_VALUE])[0]["content"]

    (score,) = [r for r in captured if r["path"] == "/api/public/scores"]
    assert {k.lower(): v for k, v in score["headers"].items()}["authorization"] == expected_auth
    body = json.loads(score["body"])
    assert (
        body["traceId"] == answer["trace_id"]
        and body["value"] == 1
        and body["dataType"] == "NUMERIC"
    )
    assert (
        body["name"] == "user_feedback" and body["comment"] == "helpful" and len(body["id"]) == 36
    )


def test_eval_runs_are_mirrored_to_langfuse_datasets(
    settings: Settings, langfuse: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """An eval run with Langfuse configured creates the dataset and its items, links each
    item's (always kept, exported) trace to the run, and scores the trace with each metric."""
    from ragline.evals.datasets import EvalItem, EvalStore
    from ragline.evals.langfuse import LangfuseEvalMirror
    from ragline.evals.runs import EvalRunner

    host, captured = langfuse
    configured = settings.model_copy(
        update={
            "langfuse": settings.langfuse.model_copy(
                update={"host": host, "public_key": PUBLIC, "secret_key": SECRET}
            ),
            "tracing": settings.tracing.model_copy(update={"sample_rate": 0.0}),
        }
    )
    with Runtime(configured) as rt:
        ingest(rt, "kb", SECURITY)
        items = [
            EvalItem(
                "q1", "How do I report a security vulnerability?", [], {"markitdown_SECURITY": 1}
            ),
            EvalItem("q2", "What is the bug bounty?", [], {"markitdown_SECURITY": 1}),
        ]
        EvalStore(rt.store.engine).save("sec", items)
        mirror = LangfuseEvalMirror(configured.langfuse)
        EvalRunner(rt, mirror=mirror).run("sec", "kb", "baseline", mode="retrieval")
        mirror.close()
        rt.tracing.flush()
    bodies: dict[str, list[dict[str, Any]]] = {}
    for request in captured:
        if request["path"] != "/api/public/otel/v1/traces":
            bodies.setdefault(request["path"], []).append(json.loads(request["body"]))
    assert bodies["/api/public/v2/datasets"] == [{"name": "sec"}]
    assert sorted(i["id"] for i in bodies["/api/public/dataset-items"]) == ["sec:q1", "sec:q2"]
    run_items = bodies["/api/public/dataset-run-items"]
    assert {r["runName"] for r in run_items} == {"baseline"} and len(run_items) == 2
    traced = set()
    for request in captured:  # sample rate 0, yet the eval traces were exported
        if request["path"] == "/api/public/otel/v1/traces":
            message = ExportTraceServiceRequest()
            message.ParseFromString(gzip.decompress(request["body"]))
            traced |= {
                s.trace_id.hex()
                for rs in message.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            }
    assert {r["traceId"] for r in run_items} <= traced
    scores = {(s["traceId"], s["name"]) for s in bodies["/api/public/scores"]}
    assert {(r["traceId"], "eval.ndcg@10") for r in run_items} <= scores


def test_production_prompt_from_langfuse_with_local_fallback(
    settings: Settings, langfuse: tuple[str, list[dict[str, Any]]]
) -> None:
    """prompt_source=langfuse: the production chat prompt is fetched (placeholders converted);
    with Langfuse unreachable, the local registry answers instead."""
    host, captured = langfuse
    remote = settings.model_copy(
        update={
            "langfuse": settings.langfuse.model_copy(
                update={"host": host, "public_key": PUBLIC, "secret_key": SECRET}
            ),
            "generation": settings.generation.model_copy(update={"prompt_source": "langfuse"}),
        }
    )
    with Runtime(remote) as rt:
        template = rt.prompt_resolver()
    assert (template.version, template.system) == (7, "Be brief.")
    assert template.user == "{context}\n\nQ: {question}"
    assert captured[-1]["headers"]["Authorization"].startswith("Basic ")
    down = remote.model_copy(
        update={"langfuse": remote.langfuse.model_copy(update={"host": "http://127.0.0.1:9"})}
    )
    with Runtime(down) as rt:
        fallback = rt.prompt_resolver()
        seeded = get_prompt("rag-answer")  # the newest built-in, seeded under its own number
        assert (fallback.name, fallback.version) == ("rag-answer", seeded.version)
        assert rt.prompt_resolver.remote_failures == 1
