"""In-process fixed windows: what the gateway's rate limits and token budgets count on."""

from __future__ import annotations

import time

import pytest

from ragline.api.limits import MemoryWindows, RateLimiter, parse_limit


def test_a_window_refuses_past_its_limit_and_says_when_to_retry() -> None:
    limiter = RateLimiter()
    decisions = [limiter.hit("3/minute", "key:a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 55 <= decisions[-1].retry_after_s <= 60 and decisions[-1].limit == 3
    assert limiter.hit("3/minute", "key:b").allowed  # keys are counted apart


def test_a_check_counts_nothing_and_a_charge_past_the_budget_still_counts() -> None:
    """Token budgets check before the answer and charge after it: a charge larger than what
    is left must still spend the window, or the budget would never run out."""
    limiter = RateLimiter()
    for _ in range(5):
        assert limiter.hit("100/minute", "tokens:a", check_only=True).allowed
    charged = limiter.hit("100/minute", "tokens:a", cost=250)
    assert not charged.allowed and charged.remaining == 0
    assert not limiter.hit("100/minute", "tokens:a", check_only=True).allowed


def test_a_window_ends_after_its_period_and_ended_windows_are_swept() -> None:
    windows = MemoryWindows()
    item = parse_limit("1/second")
    assert windows.hit(item, "a", 1, False).allowed
    assert not windows.hit(item, "a", 1, False).allowed
    time.sleep(1.05)
    assert windows.hit(item, "a", 1, False).allowed  # a new window
    time.sleep(1.05)
    windows._next_sweep = 0.0  # the next hit sweeps
    windows.hit(item, "b", 1, False)
    assert len(windows._windows) == 1


def test_an_invalid_limit_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. '60/minute'"):
        RateLimiter().hit("sixty a minute", "key:a")
