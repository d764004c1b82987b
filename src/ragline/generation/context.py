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
                collection=chunk.chunk.collection,
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
    return [by_number[n] for n in numbers if n in by_number], [
        n for n in numbers if n not in by_number
    ]


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "which",
        "with",
        "what",
        "who",
        "how",
        "when",
        "where",
        "why",
        "not",
        "no",
        "can",
        "do",
        "does",
        "did",
        "will",
        "would",
        "should",
        "could",
    ]
)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def attribute_by_overlap(
    answer: str, blocks: Sequence[Citation], min_overlap: float = 0.5
) -> list[Citation]:
    """Passages that support the answer, for models that do not cite: for each answer sentence,
    the passage sharing the largest share of its content words, if that share ≥ `min_overlap`.

    This is lexical attribution (a sentence is attributed where its words come from), reported
    with method "overlap" so it is never mistaken for the model's own citations.
    """
    from ragline.ingestion.chunking import split_sentences

    passages = [(b, _content_words(b.text)) for b in blocks]
    chosen: dict[int, Citation] = {}
    for sentence in split_sentences(answer):
        words = _content_words(sentence)
        if len(words) < 3 or not passages:
            continue
        block, shared = max(((b, len(words & w)) for b, w in passages), key=lambda item: item[1])
        if shared / len(words) >= min_overlap:
            chosen.setdefault(block.n, block)
    return list(chosen.values())
