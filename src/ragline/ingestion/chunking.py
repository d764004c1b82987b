"""Sentence-aware chunking with a token budget.

Sizes are counted in tokens of the embedding model's tokenizer, so a chunk never exceeds what
the embedder reads (all-MiniLM-L6-v2: 256 word pieces including [CLS] and [SEP]). Text is split
into paragraphs, then sentences; sentences are packed greedily up to `chunk_size`; the next chunk
starts with the last sentences of the previous one that fit in `chunk_overlap`. A sentence longer
than `chunk_size` is cut at word boundaries into pieces that fit: nothing is ever truncated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CountTokens = Callable[[Sequence[str]], list[int]]

_ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "etc",
        "vs",
        "al",
        "fig",
        "figs",
        "eq",
        "eqs",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "no",
        "nos",
        "approx",
        "st",
        "jr",
        "sr",
        "inc",
        "ltd",
        "co",
        "cf",
        "resp",
        "vol",
        "pp",
        "ca",
        "ref",
        "refs",
        "sec",
        "dept",
        "est",
    ]
)
# The lookbehind starts a match only at the first mark of a run: without it every position of a
# long run ("....." leaders, "!!!!") rescans the rest of the run, quadratic in its length.
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]+[\"')\]]*\s+")
_STRUCTURAL_LINE = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|\||#{1,6}\s|>)")


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has ids: its text, token count and where it came from."""

    text: str
    token_count: int
    heading: str | None = None
    page: int | None = None


def split_sentences(text: str) -> list[str]:
    """Split text into sentences: paragraphs first, list/table lines alone, then sentence ends.

    A period ends a sentence unless it follows a known abbreviation ("e.g.", "et al.") or a
    single capital letter (an initial), or the next word starts in lower case.
    """
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        for block in _structural_blocks(paragraph):
            sentences.extend(_split_block(block))
    return [s for s in sentences if s]


def _structural_blocks(paragraph: str) -> list[str]:
    lines = paragraph.split("\n")
    if not any(_STRUCTURAL_LINE.match(line) for line in lines):
        return [" ".join(line.strip() for line in lines)]
    return [line.strip() for line in lines if line.strip()]


def _split_block(block: str) -> list[str]:
    block = re.sub(r"\s+", " ", block).strip()
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(block):
        end = match.end()
        if end < len(block) and _is_boundary(block, match.start(), end):
            pieces.append(block[start:end].strip())
            start = end
    pieces.append(block[start:].strip())
    return pieces


def _is_boundary(block: str, period: int, next_start: int) -> bool:
    following = block[next_start]
    if following.islower():
        return False
    word = block[block.rfind(" ", 0, period) + 1 : period].lstrip("(\"'[")  # no prefix copy
    if block[period] == "." and (word.lower().rstrip(".") in _ABBREVIATIONS):
        return False
    return not (block[period] == "." and len(word) == 1 and word.isupper())


def pack_sentences(
    sentences: Sequence[str],
    counts: Sequence[int],
    chunk_size: int,
    chunk_overlap: int,
    breaks: frozenset[int] = frozenset(),
) -> list[tuple[str, int]]:
    """Greedily pack sentences (each ≤ chunk_size tokens) into chunks of ≤ chunk_size tokens.

    `breaks` holds sentence indices that must start a new chunk (semantic boundaries); no
    overlap is carried across such a boundary. Returns (text, summed token count) pairs.
    """
    chunks: list[tuple[str, int]] = []
    current: list[int] = []
    size = 0
    for index, count in enumerate(counts):
        forced = index in breaks and bool(current)
        if current and (size + count > chunk_size or forced):
            chunks.append(_join(sentences, counts, current))
            current = (
                [] if forced else _overlap_tail(current, counts, chunk_overlap, chunk_size - count)
            )
            size = sum(counts[i] for i in current)
        current.append(index)
        size += count
    if current:
        chunks.append(_join(sentences, counts, current))
    return chunks


def _overlap_tail(indices: list[int], counts: Sequence[int], overlap: int, room: int) -> list[int]:
    """The last sentences of a chunk that fit in min(overlap, room) tokens, to start the next.

    Nothing with no budget: zero-token sentences (control or zero-width characters only) would
    otherwise fit in 0 tokens and repeat in the next chunk even with chunk_overlap=0."""
    budget = min(overlap, room)
    tail: list[int] = []
    if budget <= 0:
        return tail
    size = 0
    for index in reversed(indices):
        if size + counts[index] > budget:
            break
        tail.insert(0, index)
        size += counts[index]
    return tail


def _join(sentences: Sequence[str], counts: Sequence[int], indices: list[int]) -> tuple[str, int]:
    return " ".join(sentences[i] for i in indices), sum(counts[i] for i in indices)


def split_long_sentence(sentence: str, count_tokens: CountTokens, limit: int) -> list[str]:
    """Cut a sentence longer than `limit` tokens at word boundaries into pieces of ≤ limit tokens.

    A single word longer than the limit (a URL, a base64 blob) is cut into character runs that
    fit (`_split_word`).
    """
    words = sentence.split()
    word_counts = count_tokens(words)
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for word, count in zip(words, word_counts, strict=True):
        if count > limit:
            pieces.extend(_flush(current))
            current, size = [], 0
            pieces.extend(_split_word(word, count_tokens, limit))
            continue
        if size + count > limit:
            pieces.extend(_flush(current))
            current, size = [], 0
        current.append(word)
        size += count
    pieces.extend(_flush(current))
    return pieces


def _flush(words: list[str]) -> list[str]:
    return [" ".join(words)] if words else []


def _split_word(word: str, count_tokens: CountTokens, limit: int) -> list[str]:
    """Cut a word into character runs of at most `limit` tokens each, counted, not assumed.

    Runs of `limit` characters usually fit, but not always: after the tokenizer's NFD
    normalisation one Hangul syllable is up to three word pieces. A run that counts more is
    halved until it fits; a single character is never cut (chunk_size ≥ 16 holds any one).
    """
    step = max(1, limit)
    runs = [word[i : i + step] for i in range(0, len(word), step)]
    pieces: list[str] = []
    for run, count in zip(runs, count_tokens(runs), strict=True):
        if count <= limit or len(run) == 1:
            pieces.append(run)
        else:
            half = len(run) // 2
            pieces.extend(_split_word(run[:half], count_tokens, limit))
            pieces.extend(_split_word(run[half:], count_tokens, limit))
    return pieces


def semantic_breaks(embeddings: np.ndarray, percentile: float) -> frozenset[int]:
    """Sentence indices where a new chunk should start: adjacent-sentence cosine similarity
    below the given percentile of the document's similarities (Kamradt's semantic chunking).

    `embeddings` are L2-normalised, one row per sentence.
    """
    if len(embeddings) < 3:
        return frozenset()
    similarities = np.sum(embeddings[:-1] * embeddings[1:], axis=1)
    cutoff = float(np.percentile(similarities, percentile))
    return frozenset(int(i) + 1 for i in np.flatnonzero(similarities < cutoff))


def chunk_text(
    text: str,
    count_tokens: CountTokens,
    chunk_size: int,
    chunk_overlap: int,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    semantic_percentile: float = 20.0,
) -> list[tuple[str, int]]:
    """Chunk one section of text. With `embed`, also split at semantic boundaries.

    Each sentence is counted once; only the pieces of a sentence over the limit are counted
    again (the tokenizer dominates the cost of chunking)."""
    sentences: list[str] = []
    counts: list[int] = []
    for sentence, count in zip(raw := split_sentences(text), count_tokens(raw), strict=True):
        if count > chunk_size:
            pieces = split_long_sentence(sentence, count_tokens, chunk_size)
            sentences.extend(pieces)
            counts.extend(count_tokens(pieces))
        else:
            sentences.append(sentence)
            counts.append(count)
    if not sentences:
        return []
    breaks = semantic_breaks(embed(sentences), semantic_percentile) if embed else frozenset()
    return pack_sentences(sentences, counts, chunk_size, chunk_overlap, breaks)
