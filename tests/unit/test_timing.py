"""The one elapsed-milliseconds helper behind every timings_ms and latency_ms field."""

from __future__ import annotations

import time

from ragline.timing import ms_since


def test_ms_since_reports_milliseconds_rounded_to_microseconds() -> None:
    """A perf_counter reading 250 ms ago gives about 250.0, with at most three decimals."""
    elapsed = ms_since(time.perf_counter() - 0.25)
    assert 250.0 <= elapsed < 350.0
    assert elapsed == round(elapsed, 3)
