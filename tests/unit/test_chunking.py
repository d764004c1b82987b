"""Sentence splitting and token-budgeted packing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragline.ingestion.chunking import (
    chunk_text,
    pack_sentences,
    semantic_breaks,
    split_long_sentence,
    split_sentences,
)


def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_sentences_split_on_ends_but_not_on_abbreviations_or_initials() -> None:
    """'et al.', 'Dr.', 'e.g.' and initials do not end sentences; '!' and '?' do."""
    text = "Dr. Smith et al. found it. J. Doe agreed! Did they? Yes, e.g. Tuesday."
    assert split_sentences(text) == [
        "Dr. Smith et al. found it.",
        "J. Doe agreed!",
        "Did they?",
        "Yes, e.g. Tuesday.",
    ]


def test_paragraphs_and_list_items_are_separate_units() -> None:
    """A blank line always separates; list and table lines stand alone."""
    text = "First para.\n\n- item one\n- item two\n| a | b |"
    assert split_sentences(text) == ["First para.", "- item one", "- item two", "| a | b |"]


def test_packing_respects_size_and_carries_overlap() -> None:
    """No chunk exceeds chunk_size; each next chunk starts with the previous one's last sentence."""
    sentences = [f"s{i} a b c" for i in range(10)]  # 4 words each
    chunks = pack_sentences(sentences, words(sentences), chunk_size=12, chunk_overlap=4)
    assert all(size <= 12 for _, size in chunks)
    assert chunks[0][0] == "s0 a b c s1 a b c s2 a b c"
    assert chunks[1][0].startswith("s2 a b c")
    covered = " ".join(text for text, _ in chunks)
    assert all(s in covered for s in sentences)


def test_zero_overlap_shares_nothing() -> None:
    """With chunk_overlap=0 each sentence appears in exactly one chunk."""
    sentences = [f"s{i} x" for i in range(7)]
    chunks = pack_sentences(sentences, words(sentences), chunk_size=4, chunk_overlap=0)
    assert [t for t, _ in chunks] == ["s0 x s1 x", "s2 x s3 x", "s4 x s5 x", "s6 x"]


def test_semantic_break_forces_a_new_chunk_without_overlap() -> None:
    """A break index starts a new chunk even when the budget has room."""
    sentences = ["a b", "c d", "e f"]
    chunks = pack_sentences(sentences, words(sentences), 100, 2, breaks=frozenset({2}))
    assert [t for t, _ in chunks] == ["a b c d", "e f"]


def test_long_sentence_is_cut_at_words_and_nothing_is_lost() -> None:
    """A sentence over the limit becomes pieces within it that keep every word, in order."""
    sentence = " ".join(f"w{i}" for i in range(25))
    pieces = split_long_sentence(sentence, words, limit=10)
    assert all(len(p.split()) <= 10 for p in pieces)
    assert " ".join(pieces) == sentence


def test_chunk_text_never_exceeds_the_limit_with_the_real_tokenizer() -> None:
    """Counted with all-MiniLM's own tokenizer, every chunk fits and the text is fully kept."""
    from ragline.models.embedders import TokenCounter, default_model_dir

    count = TokenCounter(default_model_dir() / "tokenizer.json")
    text = ("Retrieval augmented generation grounds answers in documents. " * 40) + "x" * 3000
    chunks = chunk_text(text, count, chunk_size=64, chunk_overlap=0)
    assert all(count([t])[0] <= 64 for t, _ in chunks)
    assert "".join(t.replace(" ", "") for t, _ in chunks) == text.replace(" ", "")


def test_semantic_breaks_at_the_least_similar_neighbours() -> None:
    """The break falls where adjacent sentence vectors diverge most."""
    topic_a, topic_b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    near_a = np.array([0.95, 0.31]) / np.linalg.norm([0.95, 0.31])
    embeddings = np.vstack([topic_a, near_a, topic_a, topic_b, topic_b])
    assert semantic_breaks(embeddings, percentile=30) == frozenset({3})


def test_a_long_hangul_word_is_cut_into_pieces_that_fit_by_real_count() -> None:
    """One Hangul syllable is up to 3 word pieces after NFD: a cut at `limit` characters is
    not enough, so pieces are counted and halved until each fits."""
    from ragline.models.embedders import TokenCounter, default_model_dir

    count = TokenCounter(default_model_dir() / "tokenizer.json")
    word = "각" * 30  # 90 word pieces, in one pre-token the tokenizer does not split
    assert count([word]) == [90]
    chunks = chunk_text(word, count, chunk_size=64, chunk_overlap=0)
    assert len(chunks) > 1 and "".join(t for t, _ in chunks) == word
    assert all(count([t])[0] == n <= 64 for t, n in chunks)


def test_zero_overlap_does_not_repeat_zero_token_sentences() -> None:
    """A sentence that counts 0 tokens (control or zero-width characters only) is not carried
    into the next chunk when chunk_overlap is 0."""
    sentences = ["a b", "\x1b\x1b", "c d"]
    counts = [2, 0, 2]
    chunks = pack_sentences(sentences, counts, chunk_size=3, chunk_overlap=0)
    assert [t for t, _ in chunks] == ["a b \x1b\x1b", "c d"]
