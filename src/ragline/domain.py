"""Domain records shared by ingestion, retrieval and generation (plain frozen dataclasses)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ragline.errors import InvalidRequestError

COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_COLLECTION_NAME = re.compile(COLLECTION_PATTERN)


def check_collection_name(name: str) -> str:
    """`name` when it can name a collection. It starts with a letter or a digit, so nothing
    whose name starts with `_` or `.` (the index's own collections and files) is ever a
    collection, and it holds no path separator."""
    if not _COLLECTION_NAME.fullmatch(name):  # `$` alone would let a final newline in
        raise InvalidRequestError(
            f"invalid collection name {name!r}: 1 to 128 letters, digits, '_', '.' or '-', "
            "starting with a letter or a digit"
        )
    return name


@dataclass(frozen=True)
class Document:
    """One source file in a collection; `content_hash` identifies its current version."""

    id: str
    collection: str
    source: str
    content_hash: str
    media_type: str | None
    size_bytes: int
    status: str  # queued | processing | ready | failed
    error: str | None
    chunk_count: int
    title: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Job:
    """An ingestion job for one version (content hash) of a document."""

    id: str
    document_id: str
    collection: str
    content_hash: str
    status: str  # queued | running | done | dead
    attempts: int
    max_attempts: int
    error: str | None
    run_after: datetime
    locked_until: datetime | None
    locked_by: str | None  # the worker holding the lease while running
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, the unit that is embedded, indexed, retrieved and cited."""

    id: str
    point_id: int
    document_id: str
    collection: str
    position: int
    text: str
    token_count: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", ""))


@dataclass(frozen=True)
class LegHit:
    """One hit of one retrieval leg (dense or BM25): the index point, its score and rank (1-based)."""

    point_id: int
    score: float
    rank: int


@dataclass(frozen=True)
class ScoredChunk:
    """A chunk after fusion, with what each leg said about it."""

    chunk: Chunk
    score: float  # RRF score
    dense_rank: int | None = None
    dense_score: float | None = None
    sparse_rank: int | None = None
    sparse_score: float | None = None
    similarity: float | None = None  # cosine(question, chunk), when computed


@dataclass(frozen=True)
class RetrievalResult:
    """Everything retrieval saw: each leg's ranked hits, the fused candidates and the final chunks."""

    question: str
    collection: str
    dense: list[LegHit]
    sparse: list[LegHit]
    # fused, resolved against the store, before threshold/MMR/top-n; without threshold or MMR
    # only as many as top-n needs (HybridRetriever.all_candidates resolves the rest)
    candidates: list[ScoredChunk]
    chunks: list[ScoredChunk]  # what goes to the prompt, best first
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Citation:
    """A numbered context block that the answer cites."""

    n: int
    document_id: str
    chunk_id: str
    source: str
    score: float
    text: str
    collection: str = ""  # the source collection (several may feed one answer)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    estimated: bool = (
        False  # the server did not report usage (llama.cpp streams); counted by ragline
    )

    def or_estimate(self, count_prompt: Callable[[], int]) -> Usage:
        """This usage when the server reported prompt tokens; otherwise (llama.cpp reports none
        while streaming) the same completion count with ragline's own prompt count, a total of
        the two and `estimated` set. `count_prompt` runs only when the count is missing."""
        if self.prompt_tokens is not None:
            return self
        prompt_tokens = count_prompt()
        completion_tokens = self.completion_tokens
        total = prompt_tokens + (completion_tokens or 0)
        return Usage(prompt_tokens, completion_tokens, total, estimated=True)


@dataclass(frozen=True)
class Answer:
    """A generated answer with its citations and everything needed to explain it."""

    text: str
    citations: list[Citation]
    context: list[Citation]  # every block given to the model, cited or not
    invalid_citations: list[int]
    citation_method: str  # "model": the answer's own [n] markers; "overlap": lexical attribution
    finish_reason: str | None
    usage: Usage
    model: str
    prompt_name: str
    prompt_version: int
    context_tokens: int
    retrieval: RetrievalResult
    timings_ms: dict[str, float] = field(default_factory=dict)
    step_tokens: int = 0  # multi-step modes: tokens of the plan / summary calls before the answer
