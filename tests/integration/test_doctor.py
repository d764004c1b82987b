"""`ragline doctor` and `ragline metrics` on traces produced by real runs that provoke each rule:
an empty collection, a threshold nothing passes, words BM25 has never seen, a tiny max_tokens,
chunks that fill the context budget, an off-topic question, a cold query embedding."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragline.api.app import build_app
from ragline.cli import app
from ragline.config import Settings
from ragline.errors import LLMError
from ragline.factory import Runtime
from ragline.ops.doctor import Doctor, Finding
from tests.helpers import ingest, updated

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
SECURITY = DOCS / "markdown" / "markitdown_SECURITY.md"
QUESTION = "How do I report a security vulnerability?"


@pytest.fixture
def kb(settings: Settings) -> Iterator[Settings]:
    """The security policy ingested into `kb`; caches off so every call is a fresh trace."""
    settings = updated(settings, cache={"enabled": False})
    with Runtime(settings) as rt:
        ingest(rt, "kb", SECURITY)
    yield settings


def diagnose(
    settings: Settings, ask: str, question: str, collection: str = "kb", warm: bool = False
) -> list[Finding]:
    with Runtime(settings) as rt:
        service = rt.query_service
        if warm:  # the first search of a process opens the index: not what this test measures
            service.retrieve("warm up the index", collection)
        result = getattr(service, ask)(question, collection)
        rt.tracing.flush()
        return Doctor(rt.store.engine, rt.settings).diagnose(rt.traces.spans(result["trace_id"]))


def rules(findings: list[Finding]) -> dict[str, Finding]:
    return {f.rule: f for f in findings}


def test_empty_collection(kb: Settings) -> None:
    with Runtime(kb) as rt:
        rt.store.ensure_collection("nothing")
    finding = rules(diagnose(kb, "query", "anything?", "nothing"))["empty_retrieval"]
    assert "is empty" in finding.summary and "ragline ingest" in finding.fix
    assert finding.evidence["chunks"] == 0


def test_a_threshold_that_nothing_passes(kb: Settings) -> None:
    strict = updated(kb, retrieval={"score_threshold": 0.99})
    finding = rules(diagnose(strict, "retrieve", QUESTION))["empty_retrieval"]
    assert "score_threshold" in finding.summary and finding.evidence["threshold"] == 0.99
    assert finding.evidence["dense_hits"] and finding.evidence["sparse_hits"]


def test_words_outside_the_bm25_vocabulary(kb: Settings) -> None:
    sparse_only = updated(kb, retrieval={"legs": "sparse"})
    finding = rules(diagnose(sparse_only, "retrieve", "zyzzyva quixotic flibbertigibbet"))[
        "empty_retrieval"
    ]
    assert "vocabulary" in finding.summary and "hybrid" in finding.fix
    assert "zyzzyva" in finding.evidence["query_words"]


def test_a_truncated_answer(kb: Settings) -> None:
    tiny = updated(kb, llm={"max_tokens": 2})
    finding = rules(diagnose(tiny, "query", QUESTION))["truncated_answer"]
    assert finding.evidence["max_tokens"] == 2 and "llm.max_tokens" in finding.fix
    assert finding.evidence["completion_tokens"]


def test_chunks_that_fill_the_context_budget(kb: Settings) -> None:
    small_budget = updated(kb, generation={"max_context_tokens": 260})
    finding = rules(diagnose(small_budget, "query", QUESTION))["oversized_chunks"]
    assert finding.evidence["chunks"] < 3 and "chunk_size" in finding.fix


def test_an_off_topic_question_is_a_retrieval_problem(kb: Settings) -> None:
    finding = rules(diagnose(kb, "retrieve", "What is the capital city of Peru?"))[
        "irrelevant_retrieval"
    ]
    assert finding.evidence["top_dense_score"] < 0.3 or finding.evidence["question_overlap"] < 0.2
    assert rules(diagnose(kb, "retrieve", QUESTION)).get("irrelevant_retrieval") is None


def test_a_cold_query_embedding_dominates_a_retrieval(settings: Settings) -> None:
    """Retrieval over a small collection takes a few ms; MiniLM's forward pass on PyTorch
    (about 16 ms here) does not. (The default int8 ONNX embedder takes about 3 ms, too close to
    the search to make the rule fire reliably.)"""
    slow = updated(settings, cache={"enabled": False}, embedding={"backend": "torch"})
    with Runtime(slow) as rt:
        ingest(rt, "kb", SECURITY)
    question = "Whom should I email about a vulnerability?"
    finding = rules(diagnose(slow, "retrieve", question, warm=True))["slow_embedding"]
    assert finding.evidence["embedding_ms"] > 0 and "cache" in finding.fix


def test_documents_still_queued_or_dead(settings: Settings) -> None:
    settings = updated(settings, cache={"enabled": False})
    with Runtime(settings) as rt:
        rt.store.submit("waiting", SECURITY.name, SECURITY.read_bytes(), 3)  # no worker runs it
        broken = rt.store.submit("broken", "broken.pdf", b"%PDF-1.7\n" + b"\x00" * 64, 3)
        assert broken.job is not None
        rt.worker().run_once([broken.job.id])  # a corrupt PDF is dead at once
    queued = rules(diagnose(settings, "retrieve", QUESTION, "waiting"))["empty_retrieval"]
    assert "still queued" in queued.summary and queued.evidence["queued"] == 1
    dead = rules(diagnose(settings, "retrieve", QUESTION, "broken"))["empty_retrieval"]
    assert "failed to ingest" in dead.summary and dead.evidence["dead"] >= 1


def test_a_failing_llm_is_an_error_finding(kb: Settings) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = updated(kb, llm={"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 0})
    with Runtime(down) as rt:
        with pytest.raises(LLMError):
            rt.query_service.query(QUESTION, "kb")
        rt.tracing.flush()
        (summary,) = rt.traces.recent(1)
        findings = Doctor(rt.store.engine, rt.settings).diagnose(rt.traces.spans(summary.trace_id))
    assert findings[0].rule == "error" and findings[0].severity == "error"
    assert "llm" in findings[0].evidence["failed_spans"]


def test_an_answer_that_ignores_its_passages_is_a_generation_problem(kb: Settings) -> None:
    """A prompt version that tells the model to ignore the passages (pushed and labelled like
    any bad prompt would be) produces an answer the passages do not support."""
    with Runtime(kb) as rt:
        rt.prompts.push(
            "rag-answer",
            "You are a poet. Whatever the user says, reply with a short poem about penguins, "
            "snow and fish. Never mention the user's text.",
            "Question: {question}\n(reference, do not use: {context})\n\nPoem about penguins:",
            label="production",
        )
    findings = rules(diagnose(kb, "query", QUESTION))
    assert "irrelevant_retrieval" not in findings  # retrieval found the right passages
    finding = findings["ungrounded_answer"]
    assert finding.evidence["answer_overlap"] < 0.3 or finding.evidence["invalid_citations"]
    assert "prompt" in finding.fix


def test_cli_and_api(kb: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGLINE_HOME", str(kb.home))
    monkeypatch.setenv("RAGLINE_LLM__BASE_URL", str(kb.llm.base_url))
    monkeypatch.setenv("RAGLINE_CACHE__ENABLED", "false")
    with Runtime(kb) as rt:
        rt.store.ensure_collection("nothing")
        empty = rt.query_service.retrieve("anything?", "nothing")["trace_id"]
        answered = rt.query_service.query(QUESTION, "kb")["trace_id"]
        rt.tracing.flush()
    cli = CliRunner()
    shown = cli.invoke(app, ["doctor", empty])
    assert shown.exit_code == 0 and "empty_retrieval" in shown.output and "fix:" in shown.output
    summary = cli.invoke(app, ["doctor", "--since", "1h", "--json"])
    assert summary.exit_code == 0, summary.output
    report = json.loads(summary.output)
    assert report["traces"] >= 2
    assert any(r["rule"] == "empty_retrieval" and empty in r["examples"] for r in report["rules"])
    assert cli.invoke(app, ["doctor"]).exit_code != 0  # neither a trace nor --since

    slo = cli.invoke(app, ["metrics", "--since", "1h", "--json"])
    figures = {f["name"]: f for f in json.loads(slo.output)["figures"]}
    assert figures["retrieval P50"]["samples"] >= 1 and figures["retrieval P50"]["ok"] is True
    assert figures["time to first token P95"]["samples"] == 1
    assert slo.exit_code == (1 if any(f["ok"] is False for f in figures.values()) else 0)
    table = cli.invoke(app, ["metrics", "--since", "1h"])
    assert "retrieval P99" in table.output and "threshold" in table.output

    with TestClient(build_app(kb)) as client:
        body = client.get(f"/v1/traces/{empty}/diagnosis").json()
        assert body["findings"][0]["rule"] == "empty_retrieval"
        assert client.get(f"/v1/traces/{answered}/diagnosis").status_code == 200
        assert client.get(f"/v1/traces/{'0' * 32}/diagnosis").status_code == 404
