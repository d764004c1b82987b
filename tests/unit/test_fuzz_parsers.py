"""Property tests (hypothesis) of the parsers and the chunker on hostile input.

Every supported extension, given arbitrary bytes, mutated real fixtures or markup-like text in
odd encodings, either parses or raises a `DocumentError`, never another exception, and within a
time bound. Chunking arbitrary Unicode keeps every chunk within its token budget (counted by
the real tokenizer), counts it exactly and loses no text.

Runs are reproducible: examples are derandomized and no example database is kept. Set
`RAGLINE_FUZZ_EXAMPLES=2000` to run that many examples per test instead of the small CI
defaults (docs/reliability.md, "Fuzzing").
"""

from __future__ import annotations

import io
import time
import warnings
import zipfile
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragline.errors import DocumentError
from ragline.ingestion.chunking import chunk_text, split_sentences
from ragline.ingestion.parsers import SUPPORTED_EXTENSIONS, ParsedDocument, parse_document
from ragline.models.embedders import TokenCounter, default_model_dir
from tests.fuzzing import fuzz

pytestmark = pytest.mark.timeout(180)  # a hang fails the test instead of stalling CI

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
FIXTURES = sorted(p for p in DOCS.rglob("*") if p.suffix in SUPPORTED_EXTENSIONS)
DOCX = DOCS / "docx" / "test.docx"
# Per input. The inputs here parse in under 0.5 s on an idle machine: the bound catches hangs
# and superlinear blow-ups, with room for a 2-core machine loaded by other tests.
TIME_LIMIT_S = 10.0


@cache
def count_tokens() -> TokenCounter:
    """all-MiniLM's own tokenizer: the chunker's budget is counted with it in production."""
    return TokenCounter(default_model_dir() / "tokenizer.json")


def parse_within_bounds(data: bytes, filename: str) -> ParsedDocument | None:
    """Parse as production does; None for a DocumentError, which is an allowed outcome.

    Library warnings (pypdf's, bs4's) are ignored as they are in production: pytest's
    filterwarnings=error would turn them into exceptions that parse_document maps to
    CorruptDocumentError, hiding the code path production takes."""
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed: ParsedDocument | None = parse_document(data, filename)
    except DocumentError:
        parsed = None
    elapsed = time.monotonic() - started
    assert elapsed < TIME_LIMIT_S, f"{filename}: {len(data)} bytes took {elapsed:.1f} s"
    if parsed is not None:
        assert parsed.sections and all(s.text.strip() for s in parsed.sections)
        assert parsed.title is None or parsed.title.strip()
    return parsed


def assert_chunks_fit(text: str, chunk_size: int = 64, chunk_overlap: int = 8) -> None:
    """Every chunk is non-empty, within chunk_size real tokens, and counted exactly."""
    chunks = chunk_text(text, count_tokens(), chunk_size, chunk_overlap)
    real = count_tokens()([chunk for chunk, _ in chunks])
    for (chunk, counted), actual in zip(chunks, real, strict=True):
        assert chunk.strip()
        assert counted == actual <= chunk_size, (chunk[:80], counted, actual)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` after a few byte-level edits: overwrite, delete, repeat, truncate, insert."""
    edited = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        if not edited:
            break
        at = draw(st.integers(0, len(edited) - 1))
        span = draw(st.integers(1, 64))
        edit = draw(st.sampled_from(["overwrite", "delete", "repeat", "truncate", "insert"]))
        if edit == "overwrite":
            edited[at] = draw(st.integers(0, 255))
        elif edit == "delete":
            del edited[at : at + span]
        elif edit == "repeat":
            edited[at:at] = edited[at : at + span] * draw(st.integers(1, 50))
        elif edit == "truncate":
            del edited[at:]
        else:
            edited[at:at] = draw(st.binary(min_size=1, max_size=span))
    return bytes(edited)


MAGIC = [b"", b"%PDF-1.7\n", b"PK\x03\x04", b"<html><title>", b"\xef\xbb\xbf", b"\xff\xfe", b"# "]


@pytest.mark.parametrize("extension", sorted(SUPPORTED_EXTENSIONS))
@fuzz(25)
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=4096))
def test_arbitrary_bytes_parse_or_raise_a_document_error(
    extension: str, prefix: bytes, body: bytes
) -> None:
    """Garbage (behind each format's magic bytes too) never escapes as another exception."""
    parse_within_bounds(prefix + body, f"upload{extension}")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
@fuzz(15)
@given(data=st.data())
def test_mutated_real_documents_parse_or_fail_cleanly_and_chunk(
    path: Path, data: st.DataObject
) -> None:
    """A damaged real PDF, DOCX, HTML or Markdown file parses or raises a DocumentError, and
    whatever it yields chunks within the budget."""
    parsed = parse_within_bounds(data.draw(mutated(path.read_bytes())), path.name)
    for section in parsed.sections if parsed else []:
        assert_chunks_fit(section.text)


@cache
def docx_parts() -> dict[str, bytes]:
    with zipfile.ZipFile(DOCX) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def docx_with(part: str, content: bytes) -> bytes:
    """The fixture DOCX re-zipped with one part replaced: a valid zip with damaged XML."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, original in docx_parts().items():
            archive.writestr(name, content if name == part else original)
    return buffer.getvalue()


@fuzz(40)
@given(data=st.data())
def test_docx_with_damaged_xml_inside_a_valid_zip_fails_cleanly(data: st.DataObject) -> None:
    """Byte edits inside the deflated zip mostly fail its CRC; this reaches python-docx's XML
    handling (document, styles, relationships, content types) with a damaged part."""
    part = data.draw(st.sampled_from(sorted(docx_parts())))
    parse_within_bounds(docx_with(part, data.draw(mutated(docx_parts()[part]))), "report.docx")


MARKUP = st.sampled_from(
    [
        *("# ", "## T", "###### x #", "####### seven", "#\t#", "```", "~~~~", "---", "...", "> "),
        *("- item", "1. item", "| a | b |", "\n", "\r\n", "\r", "\t", " " * 300, "." * 200),
        *("<title>", "</title>", "<title lang=en>", "<p>", "</p>", "<h1>", "<script>", "<br>"),
        *("<table><tr><td>", "&amp;", "&#0;", "&#x110000;", "<!--", "<![CDATA[", "<body>"),
        *("<?xml version='1.0'?>", "<meta charset='utf-16'>", "\u202e", "\ufeff", "\x85"),
        *("\u2028", "é", "각", "中文", "🙂", "\u0301", "\u200b"),
    ]
)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252", "shift_jis", "koi8-r"]


@pytest.mark.parametrize("extension", [".md", ".html", ".txt"])
@fuzz(40)
@given(
    pieces=st.lists(st.one_of(MARKUP, st.text(max_size=20)), max_size=40),
    encoding=st.sampled_from(ENCODINGS),
)
def test_markup_like_text_in_any_encoding_parses_or_fails_cleanly(
    extension: str, pieces: list[str], encoding: str
) -> None:
    """Headings, fences, front matter, tags and entities in any order and encoding."""
    data = "".join(pieces).encode(encoding, errors="replace")
    parsed = parse_within_bounds(data, f"notes{extension}")
    for section in parsed.sections if parsed else []:
        assert_chunks_fit(section.text)


# Inputs on which the parser or the sentence splitter was superlinear (regex backtracking,
# a prefix copy per sentence end), with what they took then on an idle machine; each must now
# parse and split within TIME_LIMIT_S. All are far below the 50 MB upload limit.
PATHOLOGICAL_FILES = {
    "heading-then-200k-spaces.md": b"# a" + b" " * 200_000 + b"b\n",  # 45 min (ATX regex)
    "30k-unclosed-titles.html": b"<p>x</p>" + b"<title>" * 30_000,  # 90 s (title regex)
    "60k-title-openings.html": b"<p>x</p>" + b"<title " * 60_000,  # 45 s (title regex)
    "200k-dots.txt": b"." * 200_000,  # 25 min (sentence-end regex)
    "one-paragraph-of-250k-sentences.txt": b"Ab. " * 250_000,  # 17 s (copy per sentence)
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL_FILES))
def test_pathological_inputs_parse_and_split_in_bounded_time(name: str) -> None:
    """Regression: these took from 17 s to most of an hour before the fixes."""
    started = time.monotonic()
    parsed = parse_within_bounds(PATHOLOGICAL_FILES[name], name)
    for section in parsed.sections if parsed else []:
        split_sentences(section.text)
    assert time.monotonic() - started < TIME_LIMIT_S


ODD_CHARACTERS = st.sampled_from(
    [
        *"\u0301\u0327\u0489",  # combining marks (stripped by the tokenizer's normaliser)
        *"\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u202e",  # zero-width, bidi controls
        *"\x00\x1b\x1c\x7f\x85\u2028\u2029\u00a0\u3000\t\r\n ",  # controls, odd whitespace
        *".!?\"')]-#|>",  # sentence ends, closers, list and table markers
        *"각한ㄱ中あ",  # Hangul (one syllable = up to 3 word pieces), CJK, kana
        *"אبـ\u0e01\u0e34",  # Hebrew, Arabic (RTL), Thai with a combining vowel
        *("🙂", "\U0001f3fd", "ﷺ", "İ", "ß", "ﬃ", "𝔘", "a", "Z", "1"),
    ]
)
UNICODE_TEXT = st.lists(
    st.one_of(
        st.text(st.one_of(ODD_CHARACTERS, st.characters(codec="utf-8")), max_size=40),
        # a huge single "word": one to three characters repeated
        st.tuples(st.text(ODD_CHARACTERS, min_size=1, max_size=3), st.integers(1, 600)).map(
            lambda repeated: repeated[0] * repeated[1]
        ),
    ),
    max_size=12,
).map("".join)


@fuzz(150)
@given(text=UNICODE_TEXT, chunk_size=st.integers(16, 96), data=st.data())
def test_chunks_of_any_unicode_fit_count_exactly_and_lose_nothing(
    text: str, chunk_size: int, data: st.DataObject
) -> None:
    """Every chunk fits chunk_size real tokens and its count is exact; with no overlap the
    chunks hold exactly the text's non-whitespace characters, in order, once."""
    chunk_overlap = data.draw(st.integers(0, chunk_size - 1), label="chunk_overlap")
    started = time.monotonic()
    assert_chunks_fit(text, chunk_size, chunk_overlap)
    assert time.monotonic() - started < TIME_LIMIT_S
    if chunk_overlap == 0:
        chunks = chunk_text(text, count_tokens(), chunk_size, 0)
        assert "".join("".join(c.split()) for c, _ in chunks) == "".join(text.split())
