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


def test_a_reservation_that_does_not_fit_counts_nothing_and_says_when_to_retry() -> None:
    """Token budgets reserve the worst case: one that fits is held, one that does not is refused
    without spending anything, so a later, smaller reservation can still fit."""
    limiter = RateLimiter()
    held, reservation = limiter.reserve("100/minute", "tokens:a", 60)
    assert held.allowed and held.remaining == 40 and reservation is not None
    refused, none = limiter.reserve("100/minute", "tokens:a", 50)
    assert not refused.allowed and none is None and refused.remaining == 40
    assert 55 <= refused.retry_after_s <= 60
    assert limiter.reserve("100/minute", "tokens:a", 40)[1] is not None


def test_settling_gives_back_what_was_not_used_or_charges_past_the_estimate() -> None:
    """A settlement replaces the reserved tokens by the used ones in the same window: less
    frees room, more spends it (an estimate that fell short is still charged in full)."""
    limiter = RateLimiter()
    _, first = limiter.reserve("100/minute", "tokens:a", 80)
    assert first is not None
    limiter.settle(first, 30)
    decision, second = limiter.reserve("100/minute", "tokens:a", 70)
    assert decision.remaining == 0 and second is not None
    limiter.settle(second, 90)  # more than reserved: 30 + 90 spent of 100
    assert limiter.reserve("100/minute", "tokens:a", 0)[0].remaining == 0
    assert not limiter.reserve("100/minute", "tokens:a", 1)[0].allowed


def test_a_settlement_after_its_window_ended_only_charges_usage_past_the_reservation() -> None:
    """The reservation ended with its window; giving it back to the next window would hand
    that window tokens it never held."""
    limiter = RateLimiter()
    windows, item = limiter._memory, parse_limit("100/second")
    _, kept = limiter.reserve("100/second", "tokens:a", 50)
    _, overrun = limiter.reserve("100/second", "tokens:a", 10)
    assert kept is not None and overrun is not None
    time.sleep(1.05)
    limiter.settle(kept, 5)  # would be a refund of 45 in the old window
    limiter.settle(overrun, 30)  # 20 past its reservation
    assert windows.reserve(item, "ragline/tokens:a", 0)[0].remaining == 80


def test_a_window_ends_after_its_period_and_ended_windows_are_swept() -> None:
    windows = MemoryWindows()
    item = parse_limit("1/second")
    assert windows.hit(item, "a", 1).allowed
    assert not windows.hit(item, "a", 1).allowed
    time.sleep(1.05)
    assert windows.hit(item, "a", 1).allowed  # a new window
    time.sleep(1.05)
    windows._next_sweep = 0.0  # the next hit sweeps
    windows.hit(item, "b", 1)
    assert len(windows._windows) == 1


def test_an_invalid_limit_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. '60/minute'"):
        RateLimiter().hit("sixty a minute", "key:a")
