"""Wire format: domain records <-> JSON-able dicts (CLI `--json`, HTTP bodies, cache entries)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ragline.domain import Answer, Chunk, LegHit, RetrievalResult, ScoredChunk

LEG_HITS_SHOWN = 20


def scored_chunk_to_dict(scored: ScoredChunk) -> dict[str, Any]:
    chunk = scored.chunk
    return {
        "chunk_id": chunk.id,
        "document_id": chunk.document_id,
        "source": chunk.source,
        "score": scored.score,
        "dense_rank": scored.dense_rank,
        "dense_score": scored.dense_score,
        "sparse_rank": scored.sparse_rank,
        "sparse_score": scored.sparse_score,
        "similarity": scored.similarity,
        "text": chunk.text,
        "metadata": chunk.metadata,
        "point_id": chunk.point_id,
        "position": chunk.position,
        "token_count": chunk.token_count,
    }


def scored_chunk_from_dict(data: dict[str, Any], collection: str) -> ScoredChunk:
    chunk = Chunk(
        id=data["chunk_id"],
        point_id=data["point_id"],
        document_id=data["document_id"],
        collection=collection,
        position=data["position"],
        text=data["text"],
        token_count=data["token_count"],
        metadata=data["metadata"],
    )
    keys = ("score", "dense_rank", "dense_score", "sparse_rank", "sparse_score", "similarity")
    return ScoredChunk(chunk=chunk, **{key: data[key] for key in keys})


def _hit(hit: LegHit) -> dict[str, Any]:
    return {"point_id": hit.point_id, "score": hit.score, "rank": hit.rank}


def retrieval_to_dict(result: RetrievalResult, legs_shown: int = LEG_HITS_SHOWN) -> dict[str, Any]:
    """Each leg's top hits, and the fused chunks that go to the prompt (with their text)."""
    return {
        "question": result.question,
        "collection": result.collection,
        "dense": [_hit(h) for h in result.dense[:legs_shown]],
        "sparse": [_hit(h) for h in result.sparse[:legs_shown]],
        "fused": [scored_chunk_to_dict(c) for c in result.chunks],
        "candidates": len(result.candidates),
        "timings_ms": result.timings_ms,
    }


def retrieval_from_dict(data: dict[str, Any]) -> RetrievalResult:
    """Rebuild a (cached) retrieval; `candidates` keeps only the fused chunks."""
    chunks = [scored_chunk_from_dict(c, data["collection"]) for c in data["fused"]]
    return RetrievalResult(
        question=data["question"],
        collection=data["collection"],
        dense=[LegHit(**h) for h in data["dense"]],
        sparse=[LegHit(**h) for h in data["sparse"]],
        candidates=chunks,
        chunks=chunks,
        timings_ms=data["timings_ms"],
    )


def answer_to_dict(answer: Answer) -> dict[str, Any]:
    """The answer object of `ragline ask --json`, `POST /v1/query` and the SSE `done` event."""
    return {
        "answer": answer.text,
        "citations": [asdict(c) for c in answer.citations],
        "citation_method": answer.citation_method,
        "context": [asdict(c) for c in answer.context],
        "invalid_citations": answer.invalid_citations,
        "finish_reason": answer.finish_reason,
        "usage": asdict(answer.usage),
        "model": answer.model,
        "prompt": {"name": answer.prompt_name, "version": answer.prompt_version},
        "context_tokens": answer.context_tokens,
        "retrieval": retrieval_to_dict(answer.retrieval),
        "timings_ms": answer.timings_ms,
        "step_tokens": answer.step_tokens,
    }
