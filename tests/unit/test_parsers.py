"""Unit tests of ragline.ingestion.parsers against real documents (see tests/fixtures/docs)."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

from ragline.errors import (
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedFormatError,
)
from ragline.ingestion.parsers import SUPPORTED_EXTENSIONS, ParsedDocument, parse_document

pytestmark = pytest.mark.unit

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
MINIMAL_PDF = DOCS / "pdf" / "001-trivial_minimal-document.pdf"
FOUR_PAGES_PDF = DOCS / "pdf" / "004-pdflatex-4-pages_pdflatex-4-pages.pdf"
PASSWORD_PDF = DOCS / "pdf" / "005-libreoffice-writer-password_libreoffice-writer-password.pdf"
OUTLINE_PDF = DOCS / "pdf" / "006-pdflatex-outline_pdflatex-outline.pdf"
DOCX_FILE = DOCS / "docx" / "test.docx"
BLOG_HTML = DOCS / "html" / "test_blog.html"
SECURITY_MD = DOCS / "markdown" / "markitdown_SECURITY.md"
CLAPNQ_MD = DOCS / "markdown" / "clapnq_README.md"


def parse(path: Path) -> ParsedDocument:
    return parse_document(path.read_bytes(), path.name)


def test_supported_extensions() -> None:
    """The parser accepts exactly the documented extensions."""
    expected = {".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt", ".text"}
    assert expected == SUPPORTED_EXTENSIONS


def test_pdf_one_section_per_page_with_page_numbers() -> None:
    """A 4-page PDF gives 4 sections numbered 1..4, no outline headings, no title."""
    doc = parse(FOUR_PAGES_PDF)
    assert doc.media_type == "application/pdf"
    assert doc.title is None
    assert [s.page for s in doc.sections] == [1, 2, 3, 4]
    assert all(s.heading is None for s in doc.sections)
    assert doc.sections[0].text.startswith("Hello, here is some text without a meaning.")
    assert "Huardest gefburn" in doc.sections[1].text


def test_pdf_whitespace_and_hyphenation_are_normalised() -> None:
    """Line-end hyphenation is joined ("taki-\\nmata" -> "takimata") and no double spaces remain."""
    doc = parse(MINIMAL_PDF)
    (section,) = doc.sections
    assert section.page == 1
    assert "takimata sanctus" in section.text
    assert "taki-" not in section.text
    assert "  " not in section.text


def test_pdf_outline_gives_headings() -> None:
    """Each page's heading is the last outline entry pointing at or before it; page 1 has none."""
    doc = parse(OUTLINE_PDF)
    assert [s.page for s in doc.sections] == [1, 2, 3, 4]
    assert [s.heading for s in doc.sections] == [None, "Foo", "Foo", "Baz"]
    assert doc.sections[0].text.startswith("Contents")
    assert doc.sections[1].text.startswith("1 Foo")


def test_encrypted_pdf_is_refused() -> None:
    """A PDF that needs a password raises EncryptedDocumentError naming the file."""
    with pytest.raises(EncryptedDocumentError, match=r"^005-.*password-protected"):
        parse(PASSWORD_PDF)


def test_pdf_encrypted_with_empty_password_is_parsed() -> None:
    """A PDF encrypted with an empty user password (owner password only) is decrypted and read."""
    import pypdf

    writer = pypdf.PdfWriter(clone_from=io.BytesIO(MINIMAL_PDF.read_bytes()))
    writer.encrypt(user_password="", owner_password="owner-secret")
    buf = io.BytesIO()
    writer.write(buf)
    doc = parse_document(buf.getvalue(), "restricted.pdf")
    assert "Lorem ipsum" in doc.sections[0].text


def test_truncated_pdf_is_corrupt() -> None:
    """The first half of a real PDF raises CorruptDocumentError, not a pypdf exception."""
    data = FOUR_PAGES_PDF.read_bytes()
    with pytest.raises(CorruptDocumentError, match=r"^half\.pdf: ") as info:
        parse_document(data[: len(data) // 2], "half.pdf")
    assert info.value.__cause__ is not None


def test_garbage_named_pdf_is_corrupt() -> None:
    """Bytes without a %PDF header named .pdf raise CorruptDocumentError saying it is not a PDF."""
    with pytest.raises(CorruptDocumentError, match="not a PDF"):
        parse_document(b"MZ\x90\x00" + bytes(range(256)) * 8, "report.pdf")


def test_docx_headings_tables_and_title() -> None:
    """DOCX: Title/Heading N paragraphs open sections with a heading path; tables join cells."""
    doc = parse(DOCX_FILE)
    assert doc.media_type == (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    )
    assert doc.title == ("AutoGen: Enabling Next-Gen LLM Applications via Multi-Agent Conversation")
    headings = [s.heading for s in doc.sections]
    assert headings == [
        doc.title,
        "Abstract",
        "Introduction",
        "Introduction > d666f1f7-46cb-42bd-9a39-9a39cf2a509f",
    ]
    assert doc.sections[1].text.startswith("AutoGen is an open-source framework")
    last = doc.sections[-1].text
    assert "1 | 2 | 3 | 4 | 5 | 6" in last
    assert "13 | 14 | 49e168b7-d2ae-407f-a055-2167576f39a1 | 15 | 16 | 17" in last
    assert all(s.page is None for s in doc.sections)


def test_docx_that_is_not_a_zip_is_corrupt() -> None:
    """A .docx whose bytes are not a zip archive raises CorruptDocumentError."""
    with pytest.raises(CorruptDocumentError, match=r"^notes\.docx: .*not a \.docx"):
        parse_document(b"just some text, not a zip", "notes.docx")


def test_zip_without_word_document_is_corrupt() -> None:
    """A zip that is not a Word document raises CorruptDocumentError (library error mapped)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("hello.txt", "hello")
    with pytest.raises(CorruptDocumentError, match=r"^fake\.docx: "):
        parse_document(buf.getvalue(), "fake.docx")


def _zip_of_zeros(megabytes: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            chunk = bytes(1024 * 1024)
            for _ in range(megabytes):
                member.write(chunk)
    return buf.getvalue()


def test_docx_zip_bomb_over_size_limit_is_refused() -> None:
    """A .docx expanding to 300 MB is refused before python-docx opens it, quickly."""
    data = _zip_of_zeros(300)
    start = time.perf_counter()
    with pytest.raises(CorruptDocumentError, match="zip bomb"):
        parse_document(data, "bomb.docx")
    assert time.perf_counter() - start < 0.5


def test_docx_zip_bomb_over_ratio_limit_is_refused() -> None:
    """A small .docx with a compression ratio far above 200:1 is refused."""
    data = _zip_of_zeros(10)
    assert len(data) * 200 < 10 * 1024 * 1024
    with pytest.raises(CorruptDocumentError, match="zip bomb"):
        parse_document(data, "small-bomb.docx")


def test_html_main_content_split_by_headings() -> None:
    """HTML: trafilatura's markdown is split on its headings; the title comes from metadata."""
    doc = parse(BLOG_HTML)
    assert doc.media_type == "text/html"
    assert doc.title is not None
    assert doc.title.startswith("Does Model and Inference Parameter Matter in LLM Applications?")
    assert [s.heading for s in doc.sections] == [
        None,
        "Experiment Setup",
        "Experiment Results",
        "Analysis and Discussion",
        "For Further Reading",
    ]
    assert doc.sections[0].text.startswith("**TL;DR:**")
    assert "temperature" in doc.sections[1].text


def test_html_without_text_is_empty() -> None:
    """An HTML page with no text raises EmptyDocumentError."""
    with pytest.raises(EmptyDocumentError, match="no extractable text"):
        parse_document(b"<html><head></head><body><div></div></body></html>", "blank.html")


def test_markdown_heading_paths_and_title() -> None:
    """Markdown: ATX headings build a heading path by level; title is the first # heading."""
    doc = parse(CLAPNQ_MD)
    assert doc.media_type == "text/markdown"
    title = ":clap: CLAP NQ: Cohesive Long-form Answers from Passages in Natural Questions"
    assert doc.title == title
    headings = [s.heading for s in doc.sections]
    assert headings[:3] == [title, "Description", "Paper"]
    assert "Data > Data Stats" in headings
    assert "Data > Data Format > Answerable Example" in headings
    assert "Data > Data Format > Unanswerable Example" in headings
    answerable = headings.index("Data > Data Format > Answerable Example")
    assert doc.sections[answerable].text.startswith("```\n{")  # markdown is kept as is


def test_markdown_without_level_one_heading() -> None:
    """A Markdown file with only ## headings has no title; text before them has heading None."""
    doc = parse(SECURITY_MD)
    assert doc.title is None
    assert [s.heading for s in doc.sections] == [
        None,
        "Security",
        "Reporting Security Issues",
        "Preferred Languages",
        "Policy",
    ]
    assert doc.sections[3].text == "We prefer all communications to be in English."


def test_markdown_heading_inside_fenced_code_is_not_a_heading() -> None:
    """`#` lines inside ``` or ~~~ fences stay in the body; front matter is dropped."""
    text = (
        b"---\ntitle: ignored\n---\n"
        b"# Guide\n\nIntro.\n\n## Install\n\n"
        b"```bash\n# not a heading\npip install x\n```\n\n"
        b"~~~~\n## also not\n~~~\n# still code\n~~~~\n\n"
        b"### From source ###\n\nClone it.\n"
    )
    doc = parse_document(text, "guide.md")
    assert doc.title == "Guide"
    assert [s.heading for s in doc.sections] == [
        "Guide",
        "Guide > Install",
        "Guide > Install > From source",
    ]
    install = doc.sections[1].text
    assert "# not a heading" in install
    assert "## also not" in install
    assert "# still code" in install
    assert all("ignored" not in s.text for s in doc.sections)


def test_text_latin1_is_decoded() -> None:
    """A Latin-1 .txt file (not valid UTF-8) decodes to the right characters."""
    text = "Le café était très animé. Les élèves préféraient la crème brûlée, dit le garçon."
    doc = parse_document(text.encode("latin-1"), "notes.txt")
    assert doc.media_type == "text/plain"
    assert len(doc.sections) == 1
    assert doc.sections[0].text == text
    assert doc.sections[0].heading is None


def test_text_utf8_bom_is_stripped() -> None:
    """A UTF-8 BOM is removed from the text."""
    doc = parse_document("\ufeffhello wörld\n".encode(), "a.text")
    assert doc.sections[0].text == "hello wörld"


@pytest.mark.parametrize("name", ["data.txt", "data.md", "page.html"])
def test_binary_with_nul_named_as_text_is_corrupt(name: str) -> None:
    """Text formats whose bytes contain NUL raise CorruptDocumentError ("binary content")."""
    with pytest.raises(CorruptDocumentError, match="binary content"):
        parse_document(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), name)


@pytest.mark.parametrize("name", ["empty.txt", "empty.pdf", "empty.docx", "empty.md"])
def test_empty_file_is_empty_document(name: str) -> None:
    """A zero-byte (or whitespace-only) file raises EmptyDocumentError for every format."""
    with pytest.raises(EmptyDocumentError, match=rf"^{name}: "):
        parse_document(b"", name)
    with pytest.raises(EmptyDocumentError):
        parse_document(b"  \n\t ", name)


def test_unsupported_extension() -> None:
    """An unknown extension raises UnsupportedFormatError listing the supported ones."""
    with pytest.raises(UnsupportedFormatError, match=r"^setup\.exe: .*\.docx.*\.pdf"):
        parse_document(b"MZ\x90\x00", "setup.exe")
    with pytest.raises(UnsupportedFormatError):
        parse_document(b"hello", "README")
