"""Turn uploaded bytes (PDF, DOCX, HTML, Markdown, plain text) into titled, sectioned text.

The format is chosen by the file extension and checked against the content. Every failure is a
`DocumentError` subclass whose message names the file and says what the user can do; library
exceptions never leave this module. pypdf, python-docx and trafilatura are imported lazily so
importing this module stays cheap.
"""

from __future__ import annotations

import bisect
import html
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ragline.errors import (
    CorruptDocumentError,
    DocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedFormatError,
)


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (or one PDF page)."""

    text: str
    heading: str | None
    page: int | None = None


@dataclass(frozen=True)
class ParsedDocument:
    """The sections of one document, its title if known, and its media type."""

    sections: list[Section]
    title: str | None
    media_type: str


_PDF = "application/pdf"
_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_HTML = "text/html"
_MARKDOWN = "text/markdown"
_TEXT = "text/plain"

_MEDIA_TYPES = {
    ".pdf": _PDF,
    ".docx": _DOCX,
    ".html": _HTML,
    ".htm": _HTML,
    ".md": _MARKDOWN,
    ".markdown": _MARKDOWN,
    ".txt": _TEXT,
    ".text": _TEXT,
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_MEDIA_TYPES)

_MAX_DOCX_UNCOMPRESSED = 200 * 1024 * 1024
_MAX_DOCX_RATIO = 200

# Only the opening of an ATX heading is a regex: one that also took the closing #s, with a lazy
# title before optional trailing blanks, backtracked quadratically on long lines of spaces.
_ATX_OPEN = re.compile(r"^ {0,3}(#{1,6})(?=[ \t]|$)")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_DOCX_HEADING = re.compile(r"^Heading (\d)$")
# Bounded and searched once each: `<title[^>]*>(.*?)</title>` rescanned the rest of the file
# from every unclosed <title>, quadratic in its size.
_HTML_TITLE_OPEN = re.compile(rb"<title(?:\s[^>]{0,256})?>", re.IGNORECASE)
_HTML_TITLE_CLOSE = re.compile(rb"</title\s*>", re.IGNORECASE)


def check_format(data: bytes, filename: str) -> str:
    """The media type of `data`, after the checks that need no parsing: a supported
    extension, not empty, and content that matches the extension (a PDF header, a zip
    container for DOCX, no NUL bytes in text). The API runs it on upload, so such files get a
    4xx at once instead of a dead job; `parse_document` runs it again."""
    name = PurePath(filename).name or filename
    ext = PurePath(name).suffix.lower()
    media_type = _MEDIA_TYPES.get(ext)
    if media_type is None:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise UnsupportedFormatError(
            f"{name}: unsupported file type {ext or '(no extension)'!r}; "
            f"convert it to one of: {supported}"
        )
    if not data.strip():
        raise EmptyDocumentError(f"{name}: the file is empty")
    if media_type in (_HTML, _MARKDOWN, _TEXT) and b"\x00" in data:
        raise CorruptDocumentError(
            f"{name}: binary content in a {ext} file; upload a text file or the original document"
        )
    if media_type == _PDF and b"%PDF" not in data[:1024]:
        raise CorruptDocumentError(f"{name}: the content is not a PDF (no %PDF header)")
    if media_type == _DOCX and not data.startswith(b"PK"):
        raise CorruptDocumentError(_not_a_docx(name))
    return media_type


def parse_document(data: bytes, filename: str) -> ParsedDocument:
    """Parse `data` according to the extension of `filename` into a `ParsedDocument`.

    Raises `UnsupportedFormatError`, `EncryptedDocumentError`, `CorruptDocumentError` or
    `EmptyDocumentError` (all from `ragline.errors`); no other exception escapes.
    """
    name = PurePath(filename).name or filename
    ext = PurePath(name).suffix.lower()
    media_type = check_format(data, name)
    parser = _PARSERS[media_type]
    try:
        title, sections = parser(data, name)
    except DocumentError:
        raise
    except Exception as exc:
        raise CorruptDocumentError(
            f"{name}: the file is damaged or not a valid {ext} file ({type(exc).__name__}); "
            "export or save it again and re-upload it"
        ) from exc
    kept = [s for s in sections if s.text.strip()]
    if not kept:
        raise EmptyDocumentError(
            f"{name}: no extractable text; scanned PDFs need OCR, which ragline does not do"
        )
    return ParsedDocument(sections=kept, title=title or None, media_type=media_type)


def _parse_pdf(data: bytes, name: str) -> tuple[str | None, list[Section]]:
    if b"%PDF" not in data[:1024]:
        raise CorruptDocumentError(f"{name}: the content is not a PDF (no %PDF header)")
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("") != pypdf.PasswordType.NOT_DECRYPTED
        except Exception:
            opened = False
        if not opened:
            raise EncryptedDocumentError(
                f"{name}: the PDF is password-protected; remove the password and upload it again"
            )
    headings = _pdf_page_headings(reader, len(reader.pages))
    sections = [
        Section(text=_normalise(page.extract_text()), heading=headings[i], page=i + 1)
        for i, page in enumerate(reader.pages)
    ]
    meta = reader.metadata
    title = str(meta.title or "").strip() if meta is not None else ""
    return title or None, sections


def _pdf_page_headings(reader: Any, n_pages: int) -> list[str | None]:
    """Per page, the outline path of the last outline entry pointing at or before it."""
    entries: list[tuple[int, str]] = []

    def walk(items: Iterable[Any], parents: tuple[str, ...]) -> None:
        last: tuple[str, ...] = parents
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            title = str(item.title or "").strip()
            last = (*parents, title) if title else parents
            page = reader.get_destination_page_number(item)
            if page is not None and page >= 0 and last:
                entries.append((page, " > ".join(last)))

    try:
        walk(reader.outline, ())
    except Exception:  # a broken outline only costs us the headings
        return [None] * n_pages
    entries.sort(key=lambda e: e[0])  # stable: document order within a page
    starts = [page for page, _ in entries]
    found = [bisect.bisect_right(starts, page) for page in range(n_pages)]
    return [entries[k - 1][1] if k else None for k in found]


def _normalise(text: str) -> str:
    """Collapse runs of spaces, keep paragraph breaks, join words hyphenated at line ends."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[^\S\n]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"(?<=[^\W\d_])-\n(?=[^\W\d_])", _unhyphenate, text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _unhyphenate(match: re.Match[str]) -> str:
    rest = match.string[match.end() :]
    return "" if rest[:1].islower() else match.group(0)


def _not_a_docx(name: str) -> str:
    return (
        f"{name}: the content is not a .docx (zip) file; if it is password-protected remove "
        "the password, if it is an old .doc save it as .docx, then upload it again"
    )


def _parse_docx(data: bytes, name: str) -> tuple[str | None, list[Section]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise CorruptDocumentError(_not_a_docx(name)) from exc
    with archive:
        total = sum(info.file_size for info in archive.infolist())
    if total > _MAX_DOCX_UNCOMPRESSED or total > _MAX_DOCX_RATIO * len(data):
        raise CorruptDocumentError(
            f"{name}: the .docx would expand to {total / 2**20:.0f} MB "
            f"(limit {_MAX_DOCX_UNCOMPRESSED // 2**20} MB, ratio {_MAX_DOCX_RATIO}:1); "
            "it looks like a zip bomb and was refused"
        )
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    title = (document.core_properties.title or "").strip() or None
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        sections.append(Section(text="\n\n".join(body).strip(), heading=_path(stack)))
        body.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            body.append(_docx_table(block))
            continue
        style = block.style.name if block.style is not None else ""
        heading = _DOCX_HEADING.match(style)
        level = 1 if style == "Title" else int(heading.group(1)) if heading else None
        text = _normalise(block.text)
        if level is None or not text:
            if text:
                body.append(text)
            continue
        flush()
        _push(stack, level, text)
        if style == "Title" and title is None:
            title = text
    flush()
    return title, sections


def _docx_table(table: Any) -> str:
    rows = []
    for row in table.rows:
        cells: list[Any] = []
        for cell in row.cells:  # merged cells repeat; keep each once
            if not cells or cell._tc is not cells[-1]._tc:
                cells.append(cell)
        rows.append(" | ".join(_normalise(c.text).replace("\n", " ") for c in cells))
    return "\n".join(r for r in rows if r.strip(" |"))


def _parse_html(data: bytes, name: str) -> tuple[str | None, list[Section]]:
    import trafilatura

    markdown = trafilatura.extract(
        data,
        output_format="markdown",
        include_tables=True,
        include_links=False,
        include_comments=False,
    )
    title: str | None = None
    try:  # the title is optional: a metadata failure must not fail the document
        tree = trafilatura.load_html(data)
        title = trafilatura.extract_metadata(tree).title if tree is not None else None
    except Exception:
        title = None
    if not title and (raw := _html_title(data)):
        title = html.unescape(_decode_text(raw, name)).strip() or None
    if markdown and markdown.strip():
        return title, _split_markdown(markdown)
    return title, [Section(text=_normalise(trafilatura.html2txt(data)), heading=None)]


def _html_title(data: bytes) -> bytes | None:
    """The bytes between the first <title> and the </title> after it, in linear time."""
    opening = _HTML_TITLE_OPEN.search(data)
    closing = _HTML_TITLE_CLOSE.search(data, opening.end()) if opening else None
    return data[opening.end() : closing.start()] if opening and closing else None


def _parse_markdown(data: bytes, name: str) -> tuple[str | None, list[Section]]:
    lines = _strip_front_matter(_decode_text(data, name).splitlines())
    title = next((h[1] for _, h in _classify(lines) if h is not None and h[0] == 1), None)
    return title, _split_markdown("\n".join(lines))


def _parse_text(data: bytes, name: str) -> tuple[str | None, list[Section]]:
    return None, [Section(text=_decode_text(data, name).strip(), heading=None)]


def _split_markdown(text: str) -> list[Section]:
    """Split Markdown on ATX headings outside fenced code; drop a leading YAML front matter."""
    lines = _strip_front_matter(text.splitlines())
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    for line, heading in _classify(lines):
        if heading is None:
            body.append(line)
            continue
        sections.append(Section(text="\n".join(body).strip(), heading=_path(stack)))
        body = []
        _push(stack, *heading)
    sections.append(Section(text="\n".join(body).strip(), heading=_path(stack)))
    return sections


def _classify(lines: list[str]) -> Iterator[tuple[str, tuple[int, str] | None]]:
    """Yield each line with its (level, title) if it is an ATX heading outside a code fence."""
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if fence is not None:
            marker = match.group(1) if match else ""
            closes = marker[:1] == fence[0] and len(marker) >= len(fence)
            if closes and not line.strip(" \t" + fence[0]):
                fence = None
            yield line, None
        elif match:
            fence = match.group(1)
            yield line, None
        else:
            yield line, _atx_heading(line)


def _atx_heading(line: str) -> tuple[int, str] | None:
    """(level, title) of an ATX heading line (CommonMark: `## Title ##`), else None."""
    opening = _ATX_OPEN.match(line)
    if opening is None:
        return None
    title = line[opening.end() :].strip(" \t")
    unclosed = title.rstrip("#")
    if not unclosed or unclosed[-1] in " \t":  # a closing run of #s follows a blank, or is all
        title = unclosed
    return len(opening.group(1)), title.strip()


def _strip_front_matter(lines: list[str]) -> list[str]:
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() in ("---", "..."):
                return lines[i + 1 :]
    return lines


def _decode_text(data: bytes, name: str) -> str:
    """UTF-8 (BOM stripped), else charset_normalizer's guess, preferring cp1252 when plausible."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise CorruptDocumentError(
            f"{name}: not text in a known encoding; save it as UTF-8 and upload it again"
        )
    if any("cp1252" in m.could_be_from_charset for m in matches):
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    return str(best)


def _push(stack: list[tuple[int, str]], level: int, title: str) -> None:
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, title))


def _path(stack: list[tuple[int, str]]) -> str | None:
    return " > ".join(t for _, t in stack if t) or None


_PARSERS: dict[str, Callable[[bytes, str], tuple[str | None, list[Section]]]] = {
    _PDF: _parse_pdf,
    _DOCX: _parse_docx,
    _HTML: _parse_html,
    _MARKDOWN: _parse_markdown,
    _TEXT: _parse_text,
}
