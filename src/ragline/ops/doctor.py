"""Diagnosis of a stored trace (`ragline doctor`, `GET /v1/traces/{id}/diagnosis`).

Rules read the spans a trace left in the local store (and, for an empty retrieval, the state of
the collection), and each finding carries its severity, the evidence (numbers from the spans)
and a concrete fix. The rules and their thresholds are documented in docs/operations.md.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from ragline.config import Settings
from ragline.store.schema import chunks, documents, jobs, spans
from ragline.tracing import attributes as attr
from ragline.words import content_words

LOW_DENSE_SCORE = 0.3  # MiniLM cosine below which a top hit is rarely on topic
LOW_OVERLAP = 0.2  # share of the question's content words found in the retrieved chunks
UNGROUNDED = 0.3  # share of the answer's content words found in its context
EMBEDDING_SHARE = 0.4
SLOW_RETRIEVE_MS = 500.0
CHUNK_SHARE_OF_BUDGET = 0.4


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # info | warning | error
    summary: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)


def overlap(of: str, within: str) -> float | None:
    """Share of `of`'s content words that appear in `within` (None when `of` has none)."""
    mine = content_words(of)
    return len(mine & content_words(within)) / len(mine) if mine else None


class Doctor:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def diagnose(self, trace_spans: list[dict[str, Any]]) -> list[Finding]:
        """Every rule over one trace's spans (as `TraceStore.spans` returns them)."""
        by_name: dict[str, dict[str, Any]] = {}
        for span in trace_spans:
            by_name.setdefault(span["name"], span)
        root = next((s for s in trace_spans if s["parent_span_id"] is None), trace_spans[0])
        findings: list[Finding] = []
        rules = (
            self._empty,
            self._truncated,
            self._irrelevant,
            self._slow,
            self._oversized,
            self._injection,
        )
        for rule in rules:
            findings.extend(rule(root, by_name, trace_spans))
        errors = [s for s in trace_spans if s["status"] == "ERROR"]
        if errors:
            first = errors[-1]
            findings.insert(
                0,
                Finding(
                    "error",
                    "error",
                    f"span {first['name']} failed: {first['status_message']}",
                    "see the span's exception event (`ragline traces ID`); an LLM error means "
                    "the server at llm.base_url failed or timed out, a BackendError the store "
                    "or index",
                    {"failed_spans": [s["name"] for s in errors]},
                ),
            )
        return findings

    def summary(self, since: datetime, limit: int = 2000) -> dict[str, Any]:
        """Findings over the recent traces: how often each rule fired, with example traces."""
        query = (
            select(spans.c.trace_id)
            .where(spans.c.parent_span_id.is_(None), spans.c.start_time >= since)
            .order_by(spans.c.start_time.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            trace_ids = [r.trace_id for r in conn.execute(query)]
            rows = (
                [
                    dict(r._mapping)
                    for r in conn.execute(
                        select(spans)
                        .where(spans.c.trace_id.in_(trace_ids))
                        .order_by(spans.c.start_time)
                    )
                ]
                if trace_ids
                else []
            )
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["trace_id"], []).append(row)
        counts: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        fixes: dict[str, tuple[str, str]] = {}
        for trace_id, trace_spans in grouped.items():
            for finding in self.diagnose(trace_spans):
                counts[finding.rule] += 1
                examples.setdefault(finding.rule, [])
                if len(examples[finding.rule]) < 3:
                    examples[finding.rule].append(trace_id)
                fixes.setdefault(finding.rule, (finding.severity, finding.fix))
        return {
            "since": since.isoformat(),
            "traces": len(grouped),
            "rules": [
                {
                    "rule": rule,
                    "traces": count,
                    "share": round(count / len(grouped), 4),
                    "severity": fixes[rule][0],
                    "fix": fixes[rule][1],
                    "examples": examples[rule],
                }
                for rule, count in counts.most_common()
            ],
        }

    # rules -----------------------------------------------------------------------------------

    def _empty(
        self, root: dict[str, Any], by_name: dict[str, dict[str, Any]], _: list[dict[str, Any]]
    ) -> list[Finding]:
        retrieve = by_name.get(attr.RETRIEVE)
        a = (retrieve or {}).get("attributes") or {}
        if not (
            a.get(attr.EMPTY_RETRIEVAL) or (root["attributes"] or {}).get(attr.EMPTY_RETRIEVAL)
        ):
            return []
        collection = (root["attributes"] or {}).get(attr.COLLECTION)
        state = self._collection_state(collection)
        dense = ((by_name.get(attr.RETRIEVE_DENSE) or {}).get("attributes") or {}).get(attr.HITS)
        sparse = ((by_name.get(attr.RETRIEVE_SPARSE) or {}).get("attributes") or {}).get(attr.HITS)
        evidence = {"collection": collection, **state, "dense_hits": dense, "sparse_hits": sparse}
        embedding = by_name.get(attr.EMBEDDING)
        if embedding and embedding["status"] == "ERROR":
            return [
                Finding(
                    "empty_retrieval",
                    "error",
                    "the query embedding failed",
                    "check the embedding model (embedding.provider / base_url); "
                    "`ragline doctor` on an ingestion trace shows the same error",
                    {**evidence, "error": embedding["status_message"]},
                )
            ]
        if state["chunks"] == 0:
            if state["queued"] or state["running"]:
                return [
                    Finding(
                        "empty_retrieval",
                        "warning",
                        f"collection {collection!r} has no chunks yet: "
                        f"{state['queued'] + state['running']} document(s) still queued",
                        "wait for ingestion (`ragline documents -c NAME`), or run more "
                        "workers (`ragline worker`)",
                        evidence,
                    )
                ]
            if state["dead"]:
                return [
                    Finding(
                        "empty_retrieval",
                        "error",
                        f"collection {collection!r} is empty: its {state['dead']} "
                        "document(s) failed to ingest",
                        "see the job errors (`ragline documents -c NAME`); fix the files "
                        "or `ragline jobs retry JOB`",
                        evidence,
                    )
                ]
            return [
                Finding(
                    "empty_retrieval",
                    "warning",
                    f"collection {collection!r} is empty",
                    "ingest documents into it (`ragline ingest PATH -c NAME`), or query "
                    "the collection that holds them",
                    evidence,
                )
            ]
        threshold = a.get(attr.THRESHOLD)
        if threshold is not None and (dense or sparse):
            return [
                Finding(
                    "empty_retrieval",
                    "warning",
                    f"both legs found candidates but none passed score_threshold {threshold}",
                    "lower retrieval.score_threshold (cosine to the question; 0.2-0.3 "
                    "suits MiniLM), or unset it",
                    {**evidence, "threshold": threshold},
                )
            ]
        if not sparse:  # the dense leg always has neighbours, so it was off (legs=sparse)
            question = (root["attributes"] or {}).get(attr.INPUT_VALUE) or ""
            return [
                Finding(
                    "empty_retrieval",
                    "warning",
                    "no query word is in the collection's BM25 vocabulary, and the "
                    "dense leg returned nothing",
                    "use retrieval.legs=hybrid (the dense leg matches meaning, not "
                    "words), or rephrase with the documents' vocabulary",
                    {**evidence, "query_words": sorted(content_words(question))[:20]},
                )
            ]
        return [
            Finding(
                "empty_retrieval",
                "warning",
                "retrieval returned no chunk",
                "check the collection and the retrieval settings",
                evidence,
            )
        ]

    def _truncated(
        self, root: dict[str, Any], by_name: dict[str, dict[str, Any]], _: list[dict[str, Any]]
    ) -> list[Finding]:
        llm = by_name.get(attr.LLM)
        a = (llm or {}).get("attributes") or {}
        if a.get(attr.FINISH_REASON) != "length":
            return []
        prompt = (by_name.get(attr.PROMPT) or {}).get("attributes") or {}
        try:
            max_tokens = json.loads(a.get(attr.LLM_INVOCATION_PARAMETERS) or "{}").get("max_tokens")
        except ValueError:
            max_tokens = None
        utilisation = prompt.get(attr.CONTEXT_UTILISATION)
        evidence = {
            "finish_reason": "length",
            "completion_tokens": a.get(attr.LLM_TOKEN_COUNT_COMPLETION),
            "max_tokens": max_tokens,
            "context_utilisation": utilisation,
            "chunks": prompt.get(attr.CONTEXT_CHUNKS),
            "context_tokens": prompt.get(attr.CONTEXT_TOKENS),
        }
        if isinstance(utilisation, int | float) and utilisation > 0.8:
            fix = (
                "the prompt fills the context window: lower generation.max_context_tokens or "
                "retrieval.top_n, or use a model with a larger llm.context_window"
            )
        else:
            fix = (
                f"raise llm.max_tokens (now {max_tokens}); the context leaves room for it "
                "(generation.max_context_tokens + llm.max_tokens ≤ llm.context_window)"
            )
        return [
            Finding(
                "truncated_answer",
                "warning",
                f"the answer was cut at max_tokens={max_tokens}",
                fix,
                evidence,
            )
        ]

    def _irrelevant(
        self, root: dict[str, Any], by_name: dict[str, dict[str, Any]], _: list[dict[str, Any]]
    ) -> list[Finding]:
        retrieve = (by_name.get(attr.RETRIEVE) or {}).get("attributes") or {}
        if retrieve.get(attr.EMPTY_RETRIEVAL) or not retrieve:
            return []
        question = (root["attributes"] or {}).get(attr.INPUT_VALUE) or ""
        contents = " ".join(
            str(v)
            for k, v in retrieve.items()
            if k.startswith(attr.RETRIEVAL_DOCUMENTS) and k.endswith(attr.CONTENT_SUFFIX)
        )
        dense = (by_name.get(attr.RETRIEVE_DENSE) or {}).get("attributes") or {}
        try:
            dense_hits = json.loads(dense.get(attr.LEG_HITS) or "[]")
        except ValueError:
            dense_hits = []
        top_dense = float(dense_hits[0][1]) if dense_hits else None
        question_overlap = overlap(question, contents) if question and contents else None
        evidence = {"top_dense_score": top_dense, "question_overlap": question_overlap}
        low_score = top_dense is not None and top_dense < LOW_DENSE_SCORE
        low_overlap = question_overlap is not None and question_overlap < LOW_OVERLAP
        if low_score or low_overlap:
            return [
                Finding(
                    "irrelevant_retrieval",
                    "warning",
                    "the retrieved chunks look unrelated to the question (a retrieval problem)",
                    "check that the right collection holds the answer; prefer retrieval.legs=hybrid "
                    "(BM25 catches exact terms, dense catches paraphrase); smaller "
                    "chunking.chunk_size makes chunks more focused",
                    {
                        **evidence,
                        "thresholds": {
                            "top_dense_score": LOW_DENSE_SCORE,
                            "question_overlap": LOW_OVERLAP,
                        },
                    },
                )
            ]
        answer = (root["attributes"] or {}).get(attr.OUTPUT_VALUE) or ""
        if not answer or not contents or root["name"] != attr.QUERY:
            return []
        grounded = overlap(answer, contents)
        citations = (root["attributes"] or {}).get(attr.CITATIONS)
        invalid = (root["attributes"] or {}).get(attr.INVALID_CITATIONS) or 0
        if (grounded is not None and grounded < UNGROUNDED) or invalid:
            return [
                Finding(
                    "ungrounded_answer",
                    "warning",
                    "retrieval found relevant chunks but the answer is not grounded in them "
                    "(a generation problem)",
                    "lower llm.temperature; use a stronger model; tighten the prompt (new version, "
                    "`ragline prompts`) to answer only from the passages",
                    {
                        **evidence,
                        "answer_overlap": grounded,
                        "citations": citations,
                        "invalid_citations": invalid,
                        "threshold": UNGROUNDED,
                    },
                )
            ]
        return []

    def _slow(
        self, root: dict[str, Any], by_name: dict[str, dict[str, Any]], spans_: list[dict[str, Any]]
    ) -> list[Finding]:
        total = float(root["duration_ms"] or 0)
        if total <= 0:
            return []
        children = [s for s in spans_ if s["parent_span_id"] == root["span_id"]]
        if not children:
            return []
        dominant = max(children, key=lambda s: s["duration_ms"] or 0)
        share = float(dominant["duration_ms"] or 0) / total
        evidence = {
            "total_ms": total,
            "dominant_span": dominant["name"],
            "dominant_ms": dominant["duration_ms"],
            "share": round(share, 3),
        }
        findings = []
        embedding = by_name.get(attr.EMBEDDING)
        if embedding and float(embedding["duration_ms"] or 0) / total > EMBEDDING_SHARE:
            findings.append(
                Finding(
                    "slow_embedding",
                    "info",
                    f"embedding the query took {embedding['duration_ms']:.0f} ms, "
                    f"{float(embedding['duration_ms']) / total:.0%} of the request",
                    "turn the embedding cache on (cache.enabled, Redis for several replicas) and "
                    "prefer the local embedder over a remote one",
                    {**evidence, "embedding_ms": embedding["duration_ms"]},
                )
            )
        retrieve = by_name.get(attr.RETRIEVE)
        if retrieve and float(retrieve["duration_ms"] or 0) > SLOW_RETRIEVE_MS:
            findings.append(
                Finding(
                    "slow_retrieval",
                    "warning",
                    f"retrieval took {retrieve['duration_ms']:.0f} ms (> {SLOW_RETRIEVE_MS:.0f} ms)",
                    "lower retrieval.dense_top_k / sparse_top_k, turn MMR off, or move the index to "
                    "a Qdrant server (index.url) sized for the corpus",
                    {**evidence, "retrieve_ms": retrieve["duration_ms"]},
                )
            )
        return findings

    def _oversized(
        self, root: dict[str, Any], by_name: dict[str, dict[str, Any]], _: list[dict[str, Any]]
    ) -> list[Finding]:
        prompt = (by_name.get(attr.PROMPT) or {}).get("attributes") or {}
        tokens, count = prompt.get(attr.CONTEXT_TOKENS), prompt.get(attr.CONTEXT_CHUNKS)
        budget = self.settings.generation.max_context_tokens
        if not isinstance(tokens, int) or not isinstance(count, int) or count == 0:
            return []
        per_chunk = tokens / count
        if per_chunk <= CHUNK_SHARE_OF_BUDGET * budget and count >= min(
            3, self.settings.retrieval.top_n
        ):
            return []
        return [
            Finding(
                "oversized_chunks",
                "info",
                f"{count} chunk(s) of about {per_chunk:.0f} tokens fill the {budget}-token context "
                "budget, so few passages reach the model",
                "lower chunking.chunk_size (and chunk_overlap) and reindex, so 3-5 focused chunks fit",
                {
                    "context_tokens": tokens,
                    "chunks": count,
                    "tokens_per_chunk": round(per_chunk, 1),
                    "budget": budget,
                },
            )
        ]

    def _injection(
        self, root: dict[str, Any], by_name: dict[str, dict[str, Any]], spans_: list[dict[str, Any]]
    ) -> list[Finding]:
        """LLM spans whose passages the injection detector flagged (generation/injection.py)."""
        flagged = [s for s in spans_ if (s["attributes"] or {}).get(attr.INJECTION_SUSPECTED)]
        if not flagged:
            return []
        chunk_ids = sorted(
            {c for s in flagged for c in s["attributes"].get(attr.INJECTION_CHUNK_IDS) or []}
        )
        rule_names = sorted(
            {r for s in flagged for r in s["attributes"].get(attr.INJECTION_RULES) or []}
        )
        matches = [s["attributes"].get(attr.INJECTION_MATCHES) for s in flagged]
        evidence = {
            "spans": [s["name"] for s in flagged],
            "chunk_ids": chunk_ids,
            "documents": self._documents_of(chunk_ids),
            "detector_rules": rule_names,
            "matches": [json.loads(m) for m in matches if m],  # with content capture only
        }
        return [
            Finding(
                "prompt_injection_suspected",
                "warning",
                f"{len(chunk_ids)} passage(s) given to the model read like instructions to it "
                f"({', '.join(rule_names)}): a document may carry an injected prompt",
                "read the flagged documents (evidence: documents); if one carries planted "
                "instructions, remove it (`ragline delete DOCUMENT_ID`) and find how it got "
                "in. The passages were delimited as data and still used; a document that only "
                "discusses prompt injection is a false positive",
                evidence,
            )
        ]

    def _documents_of(self, chunk_ids: list[str]) -> list[dict[str, str]]:
        """(document id, source) of chunks, for a finding's evidence; [] once deleted."""
        if not chunk_ids:
            return []
        query = (
            select(documents.c.id, documents.c.source)
            .join(chunks, chunks.c.document_id == documents.c.id)
            .where(chunks.c.id.in_(chunk_ids))
            .distinct()
        )
        with self.engine.connect() as conn:
            return [{"id": row.id, "source": row.source} for row in conn.execute(query)]

    def _collection_state(self, collection: str | None) -> dict[str, int]:
        with self.engine.connect() as conn:
            chunk_count = int(
                conn.scalar(select(func.count()).where(chunks.c.collection == collection)) or 0
            )
            states: dict[str, int] = dict(
                conn.execute(
                    select(jobs.c.status, func.count())
                    .where(jobs.c.collection == collection)
                    .group_by(jobs.c.status)
                ).all()
            )
        return {
            "chunks": chunk_count,
            "queued": int(states.get("queued", 0)),
            "running": int(states.get("running", 0)),
            "dead": int(states.get("dead", 0)),
        }


def as_dict(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]
