"""Durations as people type them on the command line: `90s`, `30m`, `1h`, `7d`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from ragline.errors import InvalidRequestError
from ragline.store.repository import utcnow

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.lower())
    if match is None:
        raise InvalidRequestError(
            f"{text!r} is not a duration: use a number and s, m, h, d or w, like 30m or 24h"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def ago(text: str) -> datetime:
    """The (naive UTC, like the store's timestamps) moment `text` before now."""
    return utcnow() - parse_duration(text)
