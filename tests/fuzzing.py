"""Hypothesis settings shared by the fuzz tests (tests/unit/test_fuzz_parsers.py and
tests/integration/test_fuzz_api.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings


def fuzz(default_examples: int) -> Callable[[Any], Any]:
    """Reproducible settings: `default_examples` per test, the same ones every run (derandomized,
    no example database). RAGLINE_FUZZ_EXAMPLES=N runs N instead; RAGLINE_FUZZ_RANDOM=1 draws
    new examples each run, to explore beyond the fixed set."""
    return settings(
        max_examples=int(os.environ.get("RAGLINE_FUZZ_EXAMPLES", default_examples)),
        derandomize=not os.environ.get("RAGLINE_FUZZ_RANDOM"),
        database=None,
        deadline=None,  # each test bounds the time of one input itself
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
