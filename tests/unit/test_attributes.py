"""Span attribute names have one home: `ragline.tracing.attributes`. A name spelled as a string
anywhere else in the package drifts (a reader looks for one spelling, a writer sets another:
the CLI once printed `ragline.cache.hit`, which nothing set)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from ragline.tracing import attributes as attr

PACKAGE = Path(attr.__file__).resolve().parent.parent
HOME = Path(attr.__file__).resolve()
# the first part of every dotted attribute name: ragline, llm, retrieval, input, langfuse, …
NAMESPACES = sorted(
    {
        value.split(".", 1)[0]
        for name, value in vars(attr).items()
        if name.isupper() and isinstance(value, str) and "." in value and not value.startswith(".")
    }
)
# a whole attribute name ("ragline.job.id"), or the start of one built in an f-string
ATTRIBUTE_NAME = re.compile(rf"^({'|'.join(NAMESPACES)})\.([a-z_][a-z0-9_]*(\.[a-z0-9_]+)*\.?)?$")
# literals of that shape that are not span attributes
NOT_ATTRIBUTES = {
    "ragline.toml",  # the config file's name (config.py)
    "ragline.db",  # the SQLite database file's name (config.py)
}


def _logger_names(tree: ast.AST) -> set[int]:
    """ids of the string constants given to `getLogger` (logger names such as ragline.cli)."""
    return {
        id(call.args[0])
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and call.args
        and (getattr(call.func, "attr", None) or getattr(call.func, "id", None)) == "getLogger"
    }


def attribute_literals(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal in `path` shaped like a span attribute name,
    including the literal parts of f-strings."""
    tree = ast.parse(path.read_text(), str(path))
    loggers = _logger_names(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in loggers
            and node.value not in NOT_ATTRIBUTES
            and ATTRIBUTE_NAME.match(node.value)
        ):
            yield node.lineno, node.value


def test_the_scan_sees_literal_and_f_string_attribute_names(tmp_path: Path) -> None:
    """The detector flags a plain literal, a dict key and an f-string prefix, and leaves
    logger names, prose and suffixes such as `.document.content` alone."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import logging\n"
        'log = logging.getLogger("ragline.cli")\n'
        'span.set_attribute("ragline.job.id", 1)\n'
        'attributes = {"llm.model_name": model}\n'
        'key = f"retrieval.documents.{i}.document.id"\n'
        'suffix = f"{prefix}.document.content"\n'
        'message = "set llm.context_window higher"\n'
    )
    assert [line for line, _ in attribute_literals(sample)] == [3, 4, 5]


def test_span_attribute_names_are_spelled_only_in_tracing_attributes() -> None:
    """Every span attribute name in src/ragline comes from a `tracing.attributes` constant;
    add a constant there instead of a string literal."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.resolve() != HOME
        for line, text in attribute_literals(path)
    ]
    assert not found, "attribute names outside tracing/attributes.py:\n" + "\n".join(found)
