"""Context budget, citation parsing and attribution."""

from __future__ import annotations

from collections.abc import Sequence

from ragline.domain import Chunk, Citation, ScoredChunk
from ragline.generation.context import (
    attribute_by_overlap,
    build_context,
    cited_numbers,
    resolve_citations,
)


def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def scored(text: str, n: int) -> ScoredChunk:
    chunk = Chunk(f"c{n}", n, f"d{n}", "col", 0, text, len(text.split()), {"source": f"f{n}.md"})
    return ScoredChunk(chunk, score=1.0 / n)


def test_budget_skips_chunks_that_do_not_fit_and_numbers_the_rest() -> None:
    """Passages are whole; one that overflows is skipped, a later smaller one still fits. The
    passage tags and markers count against the budget (8 + 7 words here)."""
    chunks = [scored("one two three", 1), scored(" ".join(["w"] * 50), 2), scored("four five", 3)]
    context = build_context(chunks, words, budget=15)
    assert [b.chunk_id for b in context.blocks] == ["c1", "c3"]
    assert [b.n for b in context.blocks] == [1, 2]
    assert context.dropped == 1
    assert context.tokens == 15
    assert context.text.startswith('<passage id="1" source="f1.md">\n[1] one two three\n</passage>')
    assert '<passage id="2" source="f3.md">' in context.text  # renumbered after the skip


def test_citation_forms_are_all_parsed_in_order() -> None:
    """[2], [1, 3] and [4][2] are citations; numbers come out once, in order of appearance."""
    assert cited_numbers("A [2]. B [1, 3]. C [4][2].") == [2, 1, 3, 4]


def test_citations_naming_no_passage_are_reported_invalid() -> None:
    blocks = [Citation(1, "d", "c", "s", 0.1, "t"), Citation(2, "d", "c2", "s", 0.1, "t")]
    valid, invalid = resolve_citations("x [2] y [7]", blocks)
    assert [c.n for c in valid] == [2]
    assert invalid == [7]


def test_overlap_attribution_finds_the_passage_an_uncited_sentence_comes_from() -> None:
    """A sentence built from one passage's words is attributed to that passage only."""
    blocks = [
        Citation(
            1, "d1", "c1", "a.md", 0.1, "Report security vulnerabilities through the MSRC portal."
        ),
        Citation(2, "d2", "c2", "b.md", 0.1, "The dataset contains long answers from Wikipedia."),
    ]
    attributed = attribute_by_overlap(
        "You report security vulnerabilities through the MSRC portal.", blocks
    )
    assert [c.n for c in attributed] == [1]
    assert attribute_by_overlap("Completely unrelated words about cooking pasta.", blocks) == []


def test_overlap_attribution_ignores_function_words_shared_with_a_passage() -> None:
    """Words such as "they", "also", "their", "about" are stop words for attribution as they are
    for the doctor's overlap rules (one list, ragline/words.py): a sentence that shares only them
    and one real word with a passage is not attributed to it."""
    passage = "They also gave their own account, about the same as before."
    blocks = [Citation(1, "d1", "c1", "a.md", 0.1, passage)]
    sentence = "They also gave their own figures for Berlin, about the same."
    assert attribute_by_overlap(sentence, blocks) == []
