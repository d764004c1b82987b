"""Elapsed time as the timings in answers, spans and eval results report it."""

from __future__ import annotations

import time


def ms_since(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading), rounded to 3 decimals
    (microseconds): the unit and precision of every `timings_ms` and `latency_ms` field."""
    return round((time.perf_counter() - started) * 1000, 3)
