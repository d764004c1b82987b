"""JSON from outside the process, read strictly: valid UTF-8 text only, and bounded nesting.

Python's `json` module accepts `"\\ud800"` (a lone surrogate, which no UTF-8 encoder can write
back) and recurses once per nesting level, so `[` × 20,000 raises RecursionError wherever it is
read. orjson refuses lone surrogates and invalid UTF-8 while it parses; the nesting depth is then
measured without recursion. Every JSON body the API reads, and every JSON answer the LLM server
sends, goes through `loads`.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 32  # the API's deepest schema (chat content parts) is 5 levels


class InvalidJSONError(ValueError):
    """Not JSON, not UTF-8 text, or nested deeper than allowed (a ValueError, as `json.loads`
    raises: callers that read a model's or a server's output already handle it)."""


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data`; InvalidJSONError on anything that is not strict JSON text (at the API, a 422)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc):  # orjson stops at 1,024 levels
            raise InvalidJSONError(f"JSON nested deeper than {max_depth} levels") from exc
        raise InvalidJSONError(f"invalid JSON: {exc}") from exc
    if depth(value, max_depth) > max_depth:
        raise InvalidJSONError(f"JSON nested deeper than {max_depth} levels")
    return value


def depth(value: Any, limit: int) -> int:
    """Nesting depth of arrays and objects (a scalar is 0, `[]` is 1), counted with an explicit
    stack; stops as soon as it passes `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def is_json(content_type: str) -> bool:
    """Content types FastAPI reads as JSON: none at all, `application/json`, `…+json`."""
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")
