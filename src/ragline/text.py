"""Text that can always be written back out: no lone surrogates.

A lone surrogate (`"\\ud800"` in JSON, or an undecodable byte of a command-line argument, which
Python keeps as `\\udcXX`) is a valid Python `str` that no UTF-8 encoder accepts: a cache key, a
response body or a stored span holding one fails wherever it is next encoded. The API refuses
such input (`jsonbody`); what arrives by other ways is repaired here, with U+FFFD in place of
each surrogate, once, where it enters.
"""

from __future__ import annotations

import re
from typing import Any

LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, a valid pair is one astral character


def valid_text(value: str) -> str:
    """`value` with each lone surrogate replaced by U+FFFD."""
    return LONE_SURROGATE.sub("\ufffd", value)


def valid_texts(value: Any) -> Any:
    """Every string in `value` (dicts, lists, tuples as lists) made valid text."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_texts(k): valid_texts(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [valid_texts(item) for item in value]
    return value
