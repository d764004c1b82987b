"""Context assembly: numbered passages within a token budget, and citation parsing.

Retrieved text is untrusted (OWASP LLM01, indirect prompt injection): a document can say
"ignore previous instructions". Each passage is therefore given to the model as data inside
explicit delimiters,

    <passage id="1" source="report.pdf" section="Results" page="3">
    [1] …chunk text…
    </passage>

and the text inside is escaped so that no document can produce the delimiters itself: it cannot
close its passage, open a fake one, or smuggle chat-template tokens (`<|im_start|>`) in, and a
line that imitates the prompt's own structure ("Question: …", "System: …") is quoted with a
leading "> ". The system prompt (generation/prompts.py) tells the model what the tags mean.
The passage number in `id`, repeated as `[n]` before the text, is the citation the model writes.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragline.domain import Citation, ScoredChunk
from ragline.words import content_words

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# "<" and its look-alikes (fullwidth, small form) before one of our tag names, or before the
# "|" of a chat-template token (<|im_start|>, <|eot_id|>, …)
_LESS_THAN = "<\uff1c\ufe64"
_TAG_LOOKALIKE = re.compile(rf"[{_LESS_THAN}](?=\s*/?\s*passages?\b|\|)", re.IGNORECASE)
_LLAMA_TOKENS = re.compile(r"</?s>")  # BOS/EOS of Llama-family tokenizers
# a line that starts like the prompt's own labels or a chat role ("Question:", "Answer (…):")
_STRUCTURE_LINE = re.compile(
    r"^(?=[ \t]*(?:questions?|answers?|context|passages?|system|user|assistant|human|instructions?)"
    r"\b[^:\n]{0,40}:)",
    re.IGNORECASE | re.MULTILINE,
)
_MAX_ATTRIBUTE = 200


@dataclass(frozen=True)
class Context:
    """The passages given to the model, numbered from 1, and their rendered text."""

    blocks: list[Citation]
    text: str
    tokens: int
    dropped: int  # chunks that did not fit in the budget


def escape_passage_text(text: str) -> str:
    """Chunk text made safe to put between passage tags: our tag names and chat-template tokens
    lose their "<" (as `&lt;`), and lines imitating prompt labels are quoted with "> ".
    Everything else is left as written, so the model reads the document as it is."""
    text = _TAG_LOOKALIKE.sub("&lt;", text)
    text = _LLAMA_TOKENS.sub(lambda m: m.group(0).replace("<", "&lt;"), text)
    return _STRUCTURE_LINE.sub("> ", text)


def attribute_value(value: object) -> str:
    """A file name, heading or page as a quoted tag attribute: one line, at most 200
    characters, with `"`, `<`, `>` and `&` escaped so it cannot end the tag."""
    flat = " ".join(str(value).split())[:_MAX_ATTRIBUTE]
    return html.escape(flat, quote=True)


def passage_header(n: int, chunk: ScoredChunk) -> str:
    """The opening tag: the passage number the model cites, then where the text comes from."""
    metadata = chunk.chunk.metadata
    fields = {
        "id": n,
        "source": metadata.get("source", ""),
        "section": metadata.get("heading"),
        "page": metadata.get("page"),
    }
    rendered = " ".join(f'{k}="{attribute_value(v)}"' for k, v in fields.items() if v)
    return f"<passage {rendered}>"


def render_passage(n: int, chunk: ScoredChunk) -> str:
    """One passage as the model sees it: tags around the escaped chunk text, which starts with
    its citation marker `[n]`. Small models cite by copying it: without the marker SmolLM2
    cited in 1 answer of a 12-answer trial, with it in 4 (bench/injection.py: 34 of 80
    answers cite, against 30 with the old `[n] (source)` header line)."""
    text = escape_passage_text(chunk.chunk.text)
    return f"{passage_header(n, chunk)}\n[{n}] {text}\n</passage>"


def render_passages(chunks: Sequence[ScoredChunk]) -> str:
    """Passages numbered from 1, separated by blank lines (no budget: the caller's chunks)."""
    return "\n\n".join(render_passage(n, c) for n, c in enumerate(chunks, start=1))


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
        passage = render_passage(n, chunk)
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


def attribute_by_overlap(
    answer: str, blocks: Sequence[Citation], min_overlap: float = 0.5
) -> list[Citation]:
    """Passages that support the answer, for models that do not cite: for each answer sentence,
    the passage sharing the largest share of its content words, if that share ≥ `min_overlap`.

    This is lexical attribution (a sentence is attributed where its words come from), reported
    with method "overlap" so it is never mistaken for the model's own citations.
    """
    from ragline.ingestion.chunking import split_sentences

    passages = [(b, content_words(b.text)) for b in blocks]
    chosen: dict[int, Citation] = {}
    for sentence in split_sentences(answer):
        words = content_words(sentence)
        if len(words) < 3 or not passages:
            continue
        block, shared = max(((b, len(words & w)) for b, w in passages), key=lambda item: item[1])
        if shared / len(words) >= min_overlap:
            chosen.setdefault(block.n, block)
    return list(chosen.values())
