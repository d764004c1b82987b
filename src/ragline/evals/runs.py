"""Eval runs: a dataset executed against the current configuration, item by item, each item
its own trace (`eval.item`); per-item outputs, retrieved ids, latency, tokens and scores stored."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import set_span_in_context
from sqlalchemy import Engine, insert, select, update

from ragline.config import rag_config, rag_config_hash
from ragline.domain import Answer, RetrievalResult, ScoredChunk
from ragline.errors import NotFoundError, RaglineError
from ragline.evals.datasets import EvalItem, EvalStore, document_key
from ragline.evals.judge import JUDGE_PROMPT_VERSION, Judge
from ragline.evals.langfuse import LangfuseEvalMirror
from ragline.evals.metrics import (
    citation_validity,
    exact_match,
    gold_in_answer,
    ir_scores,
    is_refusal,
    token_f1,
)
from ragline.generation.multistep import Source
from ragline.store.repository import utcnow
from ragline.store.schema import eval_results, eval_runs
from ragline.timing import ms_since
from ragline.tracing import attributes as attr
from ragline.tracing.setup import errors_recorded, kind, trace_id_of

MODES = ("retrieval", "answer", "decompose", "summarize")  # the last two: multi-step answers


@dataclass(frozen=True)
class RunInfo:
    id: str
    name: str
    dataset: str
    collection: str
    mode: str
    config_hash: str
    summary: dict[str, Any]
    created_at: Any


class EvalRunner:
    """Runs datasets through one runtime's retriever and answerer (caches bypassed)."""

    def __init__(
        self, runtime: Any, judge: Judge | None = None, mirror: LangfuseEvalMirror | None = None
    ) -> None:
        self.runtime = runtime
        self.judge = judge
        self.mirror = mirror

    def run(
        self,
        dataset: str,
        collection: str,
        name: str,
        mode: str = "answer",
        limit: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        concurrency: int = 1,
    ) -> RunInfo:
        """Every item through the pipeline, `concurrency` at a time; results are stored as they
        complete, so an interrupted run keeps what it did."""
        if mode not in MODES:
            raise RaglineError(f"mode must be one of {MODES}")
        if concurrency < 1:
            raise RaglineError("concurrency must be at least 1")
        items = EvalStore(self.engine).items(dataset, limit)
        self.runtime.store.collection_version(collection)  # fail early on an unknown collection
        self.runtime.sync_index()
        settings = self.runtime.settings
        run_id = uuid.uuid4().hex
        config_hash = rag_config_hash(settings)
        with self.engine.begin() as conn:
            conn.execute(
                insert(eval_runs).values(
                    id=run_id,
                    name=name,
                    dataset=dataset,
                    collection=collection,
                    mode=mode,
                    config=rag_config(settings),
                    config_hash=config_hash,
                    summary={},
                    created_at=utcnow(),
                )
            )
        if self.mirror is not None:
            self.mirror.dataset(dataset, items)
        rows = []
        with ThreadPoolExecutor(concurrency, thread_name_prefix="ragline-eval") as pool:
            results = pool.map(lambda item: self._evaluate(item, collection, mode, name), items)
            for number, (item, result) in enumerate(zip(items, results, strict=True), start=1):
                row = {"run_id": run_id, "item_id": item.id, **result}
                row["details"]["config_hash"] = config_hash
                with self.engine.begin() as conn:
                    conn.execute(insert(eval_results).values(**row))
                rows.append(row)
                if self.mirror is not None:
                    self.mirror.result(
                        dataset, name, item, row["trace_id"], row["scores"], config_hash
                    )
                if progress:
                    progress(number, len(items))
        summary = summarize(rows)
        with self.engine.begin() as conn:
            conn.execute(update(eval_runs).where(eval_runs.c.id == run_id).values(summary=summary))
        return self.get(name)

    @property
    def engine(self) -> Engine:
        engine: Engine = self.runtime.store.engine
        return engine

    def _evaluate(
        self, item: EvalItem, collection: str, mode: str, run_name: str
    ) -> dict[str, Any]:
        tracer = self.runtime.tracing.tracer
        started = time.perf_counter()
        root = tracer.start_span(
            "eval.item",  # always kept by sampling: runs link to their traces
            attributes={
                **kind(attr.KIND_CHAIN, "chain"),
                attr.LANGFUSE_TRACE_NAME: "eval.item",
                attr.TAGS: ["eval", f"eval:{run_name}"],
                attr.COLLECTION: collection,
                attr.EVAL_RUN: run_name,
                attr.EVAL_ITEM: item.id,
                attr.FORCE_KEEP: True,
            },
        )
        details: dict[str, Any] = {}
        result: dict[str, Any] = {
            "answer": None,
            "retrieved": [],
            "scores": {},
            "prompt_tokens": None,
            "completion_tokens": None,
            "error": None,
            "trace_id": trace_id_of(root),
            "details": details,
        }
        try:
            with errors_recorded(root):
                parent = set_span_in_context(root)
                answer: Answer | None = None
                if mode in ("decompose", "summarize"):
                    answer = next(
                        e
                        for e in self.runtime.multistep.run(
                            item.question, [Source(collection)], mode, None, root
                        )
                        if isinstance(e, Answer)
                    )
                    retrieval = answer.retrieval
                else:
                    retrieval = self.runtime.retriever.retrieve(
                        item.question, collection, parent=parent
                    )
                # what the prompt gets (after threshold/MMR), then the other fused candidates
                candidates = self.runtime.retriever.all_candidates(retrieval)
                ordered = [*retrieval.chunks, *candidates]
                ranked = list(dict.fromkeys(document_key(c.chunk.source) for c in ordered))
                result["retrieved"] = ranked[:100]
                details.update(_retrieval_details(retrieval, candidates))
                scores = ir_scores(ranked, item.relevant) if item.relevant else {}
                if mode == "answer":
                    answer = next(
                        e
                        for e in self.runtime.answerer.generate(item.question, retrieval, parent)
                        if isinstance(e, Answer)
                    )
                if answer is not None:
                    result.update(
                        answer=answer.text,
                        prompt_tokens=answer.usage.prompt_tokens,
                        completion_tokens=answer.usage.completion_tokens,
                    )
                    details.update(_answer_details(answer))
                    scores.update(self._answer_scores(item, answer, details))
                result["scores"] = scores
        except RaglineError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            root.end()
        result["latency_ms"] = ms_since(started)
        return result

    def _answer_scores(
        self, item: EvalItem, answer: Answer, details: dict[str, Any]
    ) -> dict[str, float]:
        scores: dict[str, float] = {}
        if item.expected_answers:
            scores["exact_match"] = exact_match(answer.text, item.expected_answers)
            scores["token_f1"] = token_f1(answer.text, item.expected_answers)
            scores["answer_contains_gold"] = gold_in_answer(answer.text, item.expected_answers)
        if item.metadata.get("unanswerable"):
            scores["refusal"] = float(is_refusal(answer.text, answer.finish_reason))
        validity = citation_validity(
            len(answer.citations) if answer.citation_method == "model" else 0,
            len(answer.invalid_citations),
        )
        if validity is not None:
            scores["citation_validity"] = validity
        scores["cited"] = float(bool(answer.citations))
        if self.judge is not None and answer.finish_reason != "no_context":
            verdict = self.judge.grade(
                item.question, [c.text for c in answer.context], answer.text, item.expected_answers
            )
            scores.update(verdict.scores)
            scores["judge_parse_failure"] = float(verdict.error is not None)
            details["judge"] = {
                "model": self.judge.model,
                "prompt_version": JUDGE_PROMPT_VERSION,
                "reasons": verdict.reasons,
                **({"error": verdict.error, "raw": verdict.raw[:2000]} if verdict.error else {}),
            }
        return scores

    def get(self, name: str) -> RunInfo:
        with self.engine.connect() as conn:
            row = conn.execute(select(eval_runs).where(eval_runs.c.name == name)).first()
        if row is None:
            raise run_not_found(name)
        return RunInfo(
            row.id,
            row.name,
            row.dataset,
            row.collection,
            row.mode,
            row.config_hash,
            dict(row.summary),
            row.created_at,
        )

    def runs(self) -> list[RunInfo]:
        with self.engine.connect() as conn:
            names = [
                r.name
                for r in conn.execute(select(eval_runs.c.name).order_by(eval_runs.c.created_at))
            ]
        return [self.get(n) for n in names]

    def scores(self, name: str) -> dict[str, dict[str, float]]:
        """metric -> {item id: value}, plus latency_ms and total_tokens per item."""
        run = self.get(name)
        by_metric: dict[str, dict[str, float]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(select(eval_results).where(eval_results.c.run_id == run.id)):
                for metric, value in (row.scores or {}).items():
                    by_metric.setdefault(metric, {})[row.item_id] = float(value)
                by_metric.setdefault("latency_ms", {})[row.item_id] = float(row.latency_ms)
                if row.prompt_tokens is not None:
                    by_metric.setdefault("total_tokens", {})[row.item_id] = float(
                        total_tokens(row.prompt_tokens, row.completion_tokens, row.details)
                    )
        return by_metric


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every metric over the items that have it; latency P50; errors."""
    metrics: dict[str, list[float]] = {}
    for row in rows:
        for metric, value in row["scores"].items():
            metrics.setdefault(metric, []).append(float(value))
    latencies = [row["latency_ms"] for row in rows]
    return {
        "items": len(rows),
        "errors": sum(1 for row in rows if row["error"]),
        "metrics": {
            metric: round(statistics.fmean(values), 4) for metric, values in sorted(metrics.items())
        },
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "tokens": sum(
            total_tokens(row["prompt_tokens"], row["completion_tokens"], row["details"])
            for row in rows
        ),
    }


def total_tokens(prompt: int | None, completion: int | None, details: dict[str, Any] | None) -> int:
    """Every LLM call of an item: the answer's, plus a multi-step mode's plan and summaries."""
    return (prompt or 0) + (completion or 0) + int((details or {}).get("step_tokens", 0))


def _retrieval_details(retrieval: RetrievalResult, candidates: list[ScoredChunk]) -> dict[str, Any]:
    """Each leg's ranking (document ids), the chunks given to the prompt, and the timings."""
    dense = sorted((c for c in candidates if c.dense_rank), key=lambda c: c.dense_rank or 0)
    sparse = sorted((c for c in candidates if c.sparse_rank), key=lambda c: c.sparse_rank or 0)
    return {
        "retrieved_dense": list(dict.fromkeys(document_key(c.chunk.source) for c in dense))[:50],
        "retrieved_sparse": list(dict.fromkeys(document_key(c.chunk.source) for c in sparse))[:50],
        "chunks": [c.chunk.id for c in retrieval.chunks],
        "retrieval_ms": retrieval.timings_ms.get("total"),
    }


def _answer_details(answer: Answer) -> dict[str, Any]:
    return {
        "citations": [c.chunk_id for c in answer.citations],
        "invalid_citations": answer.invalid_citations,
        "citation_method": answer.citation_method,
        "ttft_ms": answer.timings_ms.get("time_to_first_token"),
        "finish_reason": answer.finish_reason,
        "model": answer.model,
        "prompt": {"name": answer.prompt_name, "version": answer.prompt_version},
        "context_tokens": answer.context_tokens,
        "step_tokens": answer.step_tokens,
    }


def run_not_found(name: str) -> NotFoundError:
    """The error for a run that does not exist, or that the caller may not see (the API
    answers both alike)."""
    return NotFoundError(f"no eval run named {name!r} (see `ragline eval runs`)")
