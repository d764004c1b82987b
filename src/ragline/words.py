"""Content words of a text: the one stop-word list and tokeniser behind every word-overlap rule.

Two places compare texts by the words they share: citation attribution for models that do not
cite (generation/context.py, `attribute_by_overlap`) and the doctor's overlap rules (ops/doctor.py:
query/chunk overlap, grounding). Both must count the same words, so both use `content_words`.

A content word is a run of three or more letters or digits, lowercased, that is not a stop word.
Words of one or two characters ("a", "of", "is") never count, so the list names only longer
function words: a shared "their" or "about" is no evidence that one text comes from the other.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]{3,}")

STOP_WORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "was",
        "were",
        "with",
        "that",
        "this",
        "from",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "how",
        "why",
        "does",
        "did",
        "has",
        "have",
        "had",
        "not",
        "but",
        "you",
        "your",
        "they",
        "them",
        "their",
        "its",
        "into",
        "than",
        "then",
        "there",
        "these",
        "those",
        "can",
        "could",
        "would",
        "should",
        "will",
        "about",
        "also",
        "been",
        "being",
        "any",
        "all",
        "each",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "very",
        "just",
        "over",
        "under",
        "again",
        "further",
        "once",
    ]
)


def content_words(text: str) -> set[str]:
    """The distinct content words of `text` (lowercased, three or more characters, no stop word)."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}
