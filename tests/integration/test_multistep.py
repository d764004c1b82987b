"""Several sources and multi-step answers with the real model: the nested span structure of each
mode (in-memory exporter), citations naming their collection, the decomposition fallback on
malformed plans, budgets that end a run early with a flag, scoped keys across sources, and eval
runs in decompose mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from sqlalchemy import select

from ragline.api.app import build_app
from ragline.config import Settings
from ragline.evals.datasets import EvalItem, EvalStore
from ragline.evals.runs import EvalRunner
from ragline.factory import Runtime
from ragline.generation.multistep import Source
from ragline.store.keys import KeyStore
from ragline.store.schema import eval_results, eval_runs
from ragline.tracing import attributes as attr
from tests.helpers import ingest, updated
from tests.integration.test_tracing import Traced

DOCS = Path(__file__).parent.parent / "fixtures" / "docs" / "markdown"
SECURITY = DOCS / "markitdown_SECURITY.md"
CLAPNQ = DOCS / "clapnq_README.md"
QUESTION = "How do I report a security vulnerability, and what is CLAP NQ?"


@pytest.fixture
def two_sources(settings: Settings) -> Iterator[Settings]:
    """`security` and `datasets`, one document each; caches off so every call is traced fresh."""
    settings = updated(settings, cache={"enabled": False}, llm={"max_tokens": 48})
    with Runtime(settings) as rt:
        ingest(rt, "security", SECURITY)
        ingest(rt, "datasets", CLAPNQ)
    yield settings


def run(settings: Settings, mode: str, sources: list[Source]) -> tuple[dict[str, Any], Traced]:
    traced = Traced(settings)
    body = traced.runtime.query_service.query(
        QUESTION, sources[0].collection, sources=sources, mode=mode
    )
    return body, traced


def tree(traced: Traced, trace_id: str) -> dict[str, list[str]]:
    """parent span name -> child span names (in start order)."""
    spans: list[ReadableSpan] = sorted(
        (s for s in traced.finished() if format(s.context.trace_id, "032x") == trace_id),
        key=lambda s: s.start_time or 0,
    )
    names = {s.context.span_id: s.name for s in spans}
    children: dict[str, list[str]] = {}
    for span in spans:
        parent = names.get(span.parent.span_id) if span.parent else None
        children.setdefault(parent or "", []).append(span.name)
    return children


def root_attributes(traced: Traced, trace_id: str) -> dict[str, Any]:
    return dict(traced.spans(trace_id)[attr.QUERY].attributes or {})


def test_two_sources_are_retrieved_in_parallel_spans_and_fused(two_sources: Settings) -> None:
    body, traced = run(
        two_sources, "rag", [Source("security"), Source("datasets", weight=2.0, top_k=3)]
    )
    try:
        children = tree(traced, body["trace_id"])
        assert children[""] == [attr.QUERY]
        assert children[attr.QUERY][0] == attr.EMBEDDING  # the question is embedded once
        assert set(children[attr.QUERY][1:3]) == {"retrieve - security", "retrieve - datasets"}
        assert children[attr.QUERY][-2:] == [attr.PROMPT, attr.LLM]
        for source in ("security", "datasets"):
            assert children[f"retrieve - {source}"] == [attr.RETRIEVE]
        assert attr.EMBEDDING not in children.get(attr.RETRIEVE, [])
        assert {c["collection"] for c in body["context"]} == {"security", "datasets"}
        assert all(c["collection"] for c in body["citations"])
        assert body["mode"] == "rag"
        assert root_attributes(traced, body["trace_id"])[attr.COLLECTION] == "security,datasets"
    finally:
        traced.close()


def test_decompose_nests_sub_questions_under_a_plan(two_sources: Settings) -> None:
    body, traced = run(two_sources, "decompose", [Source("security"), Source("datasets")])
    try:
        children = tree(traced, body["trace_id"])
        assert children[attr.QUERY] == [attr.PLAN, attr.PROMPT, attr.LLM]
        plan = children[attr.PLAN]
        assert plan[0] == "plan.llm"
        assert plan[1:] and set(plan[1:]) == {attr.SUB_QUESTION}
        # the question itself, then each distinct sub-question
        planned = traced.spans(body["trace_id"])[attr.PLAN].attributes or {}
        steps = {QUESTION, *planned["ragline.plan.sub_questions"]}
        assert len(plan[1:]) == len(steps) <= two_sources.multistep.max_sub_questions + 1
        # each step retrieves every source, from one embedding
        assert children[attr.SUB_QUESTION][0] == attr.EMBEDDING
        assert body["answer"] and body["context"]
    finally:
        traced.close()


def test_a_malformed_plan_falls_back_to_the_question(two_sources: Settings) -> None:
    """8 tokens and no structured output: the tiny model's plan cannot be complete JSON."""
    settings = updated(two_sources, multistep={"response_format": "none", "plan_max_tokens": 8})
    body, traced = run(settings, "decompose", [Source("security")])
    try:
        plan = traced.spans(body["trace_id"])[attr.PLAN].attributes or {}
        assert plan["ragline.plan.fallback"] is True
        assert plan["ragline.plan.sub_questions"] == (QUESTION,)
        assert plan["ragline.plan.fallback_reason"]
        assert tree(traced, body["trace_id"])[attr.PLAN] == ["plan.llm", attr.SUB_QUESTION]
        assert body["answer"]
    finally:
        traced.close()


def test_summarize_summarises_each_source_then_answers(two_sources: Settings) -> None:
    body, traced = run(two_sources, "summarize", [Source("security"), Source("datasets")])
    try:
        children = tree(traced, body["trace_id"])
        steps = children[attr.QUERY]
        summaries = [s for s in steps if s.startswith("summarize - ")]
        assert set(summaries) == {"summarize - security", "summarize - datasets"}
        assert steps.index(attr.PROMPT) > max(steps.index(s) for s in summaries)
        assert all(c["source"].startswith("summary of ") for c in body["context"])
    finally:
        traced.close()


def test_budgets_end_early_with_a_flag_and_still_answer(two_sources: Settings) -> None:
    tokens = updated(two_sources, multistep={"max_total_tokens": 1})
    body, traced = run(tokens, "summarize", [Source("security"), Source("datasets")])
    try:
        root = root_attributes(traced, body["trace_id"])
        assert root["ragline.budget.exceeded"] == "tokens"
        assert len(root["ragline.budget.skipped"]) == 1  # the second summary never ran
        assert body["answer"] is not None and body["finish_reason"]
    finally:
        traced.close()
    late = updated(two_sources, multistep={"timeout_s": 1e-9})  # spent before the first step
    body, traced = run(late, "decompose", [Source("security")])
    try:
        root = root_attributes(traced, body["trace_id"])
        assert root["ragline.budget.exceeded"] == "time"
        plan = traced.spans(body["trace_id"])[attr.PLAN].attributes or {}
        assert plan["ragline.plan.fallback_reason"] == "budget spent before planning"
        assert "plan.llm" not in tree(traced, body["trace_id"])[attr.PLAN]
        assert body["finish_reason"]
    finally:
        traced.close()


def test_a_scoped_key_may_only_use_its_sources(two_sources: Settings) -> None:
    settings = updated(two_sources, server={"auth": True})
    with Runtime(settings) as rt:
        _, secret = KeyStore(rt.store.engine).create("security-only", ["security"])
        _, unscoped = KeyStore(rt.store.engine).create("all")
    headers = {"Authorization": f"Bearer {secret}"}
    both = {"question": QUESTION, "collections": [{"name": "security"}, {"name": "datasets"}]}
    with TestClient(build_app(settings)) as client:
        refused = client.post("/v1/query", json=both, headers=headers)
        assert refused.status_code == 403, refused.text
        streamed = client.post("/v1/query", json={**both, "stream": True}, headers=headers)
        assert streamed.status_code == 403
        allowed = client.post(
            "/v1/query",
            json={"question": QUESTION, "collections": [{"name": "security", "top_k": 2}]},
            headers=headers,
        )
        assert allowed.status_code == 200, allowed.text
        assert {c["collection"] for c in allowed.json()["context"]} == {"security"}
        unknown = client.post(
            "/v1/query",
            json={"question": QUESTION, "collections": [{"name": "security"}, {"name": "nope"}]},
            headers={"Authorization": f"Bearer {unscoped}"},
        )
        assert unknown.status_code == 404


def test_eval_runs_in_decompose_mode_compare_with_plain_rag(two_sources: Settings) -> None:
    with Runtime(two_sources) as rt:
        EvalStore(rt.store.engine).save("mixed", [EvalItem("q1", QUESTION, [], {SECURITY.stem: 1})])
        runner = EvalRunner(rt)
        plain = runner.run("mixed", "security", "plain", "answer")
        stepped = runner.run("mixed", "security", "stepped", "decompose")
        assert plain.summary["errors"] == 0 and stepped.summary["errors"] == 0
        scores = runner.scores("stepped")
        assert scores["hit@5"]["q1"] == 1.0 and stepped.mode == "decompose"
        with rt.store.engine.connect() as conn:
            (details,) = conn.execute(
                select(eval_results.c.details)
                .join(eval_runs, eval_runs.c.id == eval_results.c.run_id)
                .where(eval_runs.c.name == "stepped")
            ).scalars()
        assert details["step_tokens"] > 0  # the plan's tokens count in the run's cost
        assert scores["total_tokens"]["q1"] > details["step_tokens"]
