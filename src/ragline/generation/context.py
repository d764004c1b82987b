"""Context assembly: numbered passages within a token budget, and citation parsing."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragline.domain import Citation, ScoredChunk

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass(frozen=True)
class Context:
    """The passages given to the model, numbered from 1, and their rendered text."""

    blocks: list[Citation]
    text: str
    tokens: int
    dropped: int  # chunks that did not fit in the budget


def passage_header(n: int, chunk: ScoredChunk) -> str:
    metadata = chunk.chunk.metadata
    where = [str(metadata.get("source", ""))]
    if metadata.get("heading"):
        where.append(f"section: {metadata['heading']}")
    if metadata.get("page"):
        where.append(f"page {metadata['page']}")
    return f"[{n}] ({', '.join(w for w in where if w)})"


def build_context(
    chunks: Sequence[ScoredChunk], count_tokens: Callable[[Sequence[str]], list[int]], budget: int
) -> Context:
    """Take chunks in rank order while their passages fit in `budget` tokens.

    A chunk that does not fit is skipped (a smaller one further down may still fit); chunks are
    never cut, so every passage the model sees is whole and citable.
    """
    blocks: list[Citation] = []
    parts: list[str] = []
    used = 0
    dropped = 0
    for chunk in chunks:
        n = len(blocks) + 1
        passage = f"{passage_header(n, chunk)}\n{chunk.chunk.text}"
        (cost,) = count_tokens([passage])
        if used + cost > budget:
            dropped += 1
            continue
        used += cost
        parts.append(passage)
        blocks.append(
            Citation(
                n=n,
                document_id=chunk.chunk.document_id,
                chunk_id=chunk.chunk.id,
                source=chunk.chunk.source,
                score=round(chunk.score, 6),
                text=chunk.chunk.text,
            )
        )
    return Context(blocks, "\n\n".join(parts), used, dropped)


def cited_numbers(answer: str) -> list[int]:
    """Passage numbers cited as [n], [n, m] or [n][m], in order of first appearance."""
    seen: dict[int, None] = {}
    for group in _CITATION.findall(answer):
        for number in group.split(","):
            seen.setdefault(int(number), None)
    return list(seen)


def resolve_citations(answer: str, blocks: Sequence[Citation]) -> tuple[list[Citation], list[int]]:
    """(valid citations in order of appearance, cited numbers that name no passage)."""
    by_number = {b.n: b for b in blocks}
    numbers = cited_numbers(answer)
    return [by_number[n] for n in numbers if n in by_number], [n for n in numbers if n not in by_number]
