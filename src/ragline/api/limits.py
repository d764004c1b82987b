"""Rate limits in fixed windows: in process, or Redis shared by replicas (the `limits` library).

A window starts at a key's first hit and lasts the limit's period; every hit counts, refused
ones too, so a client that keeps hammering stays refused until its window ends. The in-process
windows are ours: `limits`' memory storage starts a new timer thread after almost every hit to
expire keys (about 100 thread starts a second under load, 3 % of the cached-answer path).

Token budgets reserve and settle instead: a question holds its worst case before any LLM call
(`reserve`, refused without counting anything when it does not fit), and once the answer is
known gives back what it did not use (`settle`). Both are atomic on Redis (Lua scripts on the
counter key the `limits` library uses, whose expiry marks the window) and under the lock in
process, so concurrent questions can never together pass the budget. A settlement applies to the
window its reservation was taken in; when that window has ended, the reservation ended with it
and only usage beyond it is charged to the current window.

Policy when Redis fails: fall back to the in-process limiter (each replica then enforces the
limit on its own share of traffic) and count the error; never fail the request because the
limiter's store is down. A reservation is settled in the store that took it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


@dataclass(frozen=True)
class Reservation:
    """Tokens held in one window of a budget until the answer that holds them is settled."""

    limit: str
    key: str
    tokens: int
    window: float  # the end of the window it was taken in: Redis' PEXPIRETIME, or monotonic
    in_redis: bool


# KEYS[1]: the window's counter; ARGV: tokens, the limit's amount, the window's length (s).
# Counts nothing when the tokens do not fit; a new window's expiry is set once, at creation.
# Returns {allowed, count, ms until the window ends, the window's end (unix ms)}.
RESERVE_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local tokens = tonumber(ARGV[1])
if count + tokens > tonumber(ARGV[2]) then
  return {0, count, redis.call('PTTL', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1])}
end
count = redis.call('INCRBY', KEYS[1], tokens)
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return {1, count, redis.call('PTTL', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1])}
"""
# KEYS[1]: the counter; ARGV: tokens reserved, tokens used, the reservation's window end (unix
# ms), the window's length (s). In the same window: count += used - reserved (INCRBY keeps the
# expiry). Its window gone: only usage past the reservation is charged, to the current window.
SETTLE_SCRIPT = """
local reserved, used = tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('PEXPIRETIME', KEYS[1]) == tonumber(ARGV[3]) then
  if used ~= reserved then redis.call('INCRBY', KEYS[1], used - reserved) end
  return 1
end
if used > reserved then
  redis.call('INCRBY', KEYS[1], used - reserved)
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
return 0
"""


@lru_cache(maxsize=256)
def parse_limit(text: str) -> RateLimitItem:
    """'60/minute' → a limits item; raises ValueError with the syntax on bad input."""
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(
            f"invalid rate limit {text!r}; use e.g. '60/minute' or '10/second'"
        ) from exc


class RateLimiter:
    """Counts hits per key within fixed windows."""

    def __init__(
        self, redis_url: str | None = None, namespace: str = "ragline", timeout_s: float = 0.05
    ) -> None:
        self.namespace = namespace
        self.errors = 0
        self._memory = MemoryWindows()
        self._redis: FixedWindowRateLimiter | None = None
        self._storage: Any = None
        self._reserve_script: Any = None
        self._settle_script: Any = None
        if redis_url:
            self._storage = storage_from_string(
                redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
            self._redis = FixedWindowRateLimiter(self._storage)
            connection = self._storage.get_connection()  # scripts run by SHA, loaded once
            self._reserve_script = connection.register_script(RESERVE_SCRIPT)
            self._settle_script = connection.register_script(SETTLE_SCRIPT)

    def hit(self, limit: str, key: str, cost: int = 1) -> Decision:
        """Count `cost` hits for `key` (a request)."""
        item = parse_limit(limit)
        if self._redis is None:
            return self._memory.hit(item, f"{self.namespace}/{key}", cost)
        try:
            allowed = self._redis.hit(item, self.namespace, key, cost=cost)
            stats = self._redis.get_window_stats(item, self.namespace, key)
        except Exception as exc:  # the Redis client raises its own tree; any failure falls back
            self._failed(exc)
            return self._memory.hit(item, f"{self.namespace}/{key}", cost)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed, item.amount, stats.remaining, retry_after)

    def check(self, limit: str, key: str) -> Decision:
        """Whether `key`'s window has room for one more hit, counting nothing."""
        item = parse_limit(limit)
        if self._redis is None:
            return self._memory.check(item, f"{self.namespace}/{key}")
        try:
            allowed = self._redis.test(item, self.namespace, key)
            stats = self._redis.get_window_stats(item, self.namespace, key)
        except Exception as exc:  # as in `hit`: the in-process windows stand in
            self._failed(exc)
            return self._memory.check(item, f"{self.namespace}/{key}")
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed, item.amount, stats.remaining, retry_after)

    def reserve(self, limit: str, key: str, tokens: int) -> tuple[Decision, Reservation | None]:
        """Hold `tokens` in `key`'s current window when they fit (a Reservation to settle),
        else count nothing: (refusal, None)."""
        item = parse_limit(limit)
        if self._redis is not None:
            try:
                return self._reserve_redis(item, limit, key, tokens)
            except Exception as exc:  # as in `hit`: the in-process windows stand in
                self._failed(exc)
        decision, end = self._memory.reserve(item, f"{self.namespace}/{key}", tokens)
        if not decision.allowed:
            return decision, None
        return decision, Reservation(limit, key, tokens, end, in_redis=False)

    def settle(self, reservation: Reservation, used: int) -> None:
        """Charge `used` tokens against `reservation` (giving back the rest, or charging more
        when the answer cost more than its estimate). Call once per reservation."""
        item = parse_limit(reservation.limit)
        if not reservation.in_redis:
            self._memory.settle(item, f"{self.namespace}/{reservation.key}", reservation, used)
            return
        try:
            self._settle_script(
                [self._redis_key(item, reservation.key)],
                [reservation.tokens, max(0, used), int(reservation.window), item.get_expiry()],
            )
        except Exception as exc:  # the reservation stays charged in full: the safe side
            self._failed(exc)

    def _reserve_redis(
        self, item: RateLimitItem, limit: str, key: str, tokens: int
    ) -> tuple[Decision, Reservation | None]:
        allowed, count, ttl_ms, window = self._reserve_script(
            [self._redis_key(item, key)], [tokens, item.amount, item.get_expiry()]
        )
        retry_after = max(1, math.ceil(int(ttl_ms) / 1000)) if int(ttl_ms) > 0 else 1
        decision = Decision(
            bool(allowed), item.amount, max(0, item.amount - int(count)), retry_after
        )
        if not allowed:
            return decision, None
        return decision, Reservation(limit, key, tokens, float(window), in_redis=True)

    def _redis_key(self, item: RateLimitItem, key: str) -> str:
        """The counter `limits` keeps for (namespace, key) in this window kind."""
        prefixed: str = self._storage.prefixed_key(item.key_for(self.namespace, key))
        return prefixed

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:
            log.warning(
                "rate limiter store failed; using in-process limits errors=%d error=%s",
                self.errors,
                exc,
            )


class MemoryWindows:
    """Fixed windows in this process: a count and an end time per key, under one lock.
    Ended windows are dropped once a minute, on a hit; nothing runs in the background."""

    SWEEP_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, hits)
        self._next_sweep = 0.0

    def hit(self, item: RateLimitItem, key: str, cost: int) -> Decision:
        window_key = f"{key}/{item.key_for()}"
        now = time.monotonic()
        with self._lock:
            if now >= self._next_sweep:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
                self._next_sweep = now + self.SWEEP_S
            end, count = self._windows.get(window_key, (0.0, 0))
            if end <= now:
                end, count = now + item.get_expiry(), 0
            count += cost
            allowed = count <= item.amount
            self._windows[window_key] = (end, count)
        retry_after = max(1, math.ceil(end - now))
        return Decision(allowed, item.amount, max(0, item.amount - count), retry_after)

    def check(self, item: RateLimitItem, key: str) -> Decision:
        now = time.monotonic()
        with self._lock:
            end, count = self._windows.get(f"{key}/{item.key_for()}", (0.0, 0))
        if end <= now:
            end, count = now + item.get_expiry(), 0
        retry_after = max(1, math.ceil(end - now))
        return Decision(count < item.amount, item.amount, max(0, item.amount - count), retry_after)

    def reserve(self, item: RateLimitItem, key: str, tokens: int) -> tuple[Decision, float]:
        """Add `tokens` to the window when they fit, else nothing: (decision, window end)."""
        window_key = f"{key}/{item.key_for()}"
        now = time.monotonic()
        with self._lock:
            end, count = self._windows.get(window_key, (0.0, 0))
            if end <= now:
                end, count = now + item.get_expiry(), 0
            allowed = count + tokens <= item.amount
            if allowed:
                count += tokens
                self._windows[window_key] = (end, count)
        retry_after = max(1, math.ceil(end - now))
        return Decision(allowed, item.amount, max(0, item.amount - count), retry_after), end

    def settle(self, item: RateLimitItem, key: str, reservation: Reservation, used: int) -> None:
        """`used` instead of the reserved tokens in the reservation's window; when that window
        has ended, only usage past the reservation counts, in the current one."""
        window_key = f"{key}/{item.key_for()}"
        now = time.monotonic()
        with self._lock:
            end, count = self._windows.get(window_key, (0.0, 0))
            if end == reservation.window and end > now:
                self._windows[window_key] = (end, max(0, count + used - reservation.tokens))
            elif used > reservation.tokens:
                if end <= now:
                    end, count = now + item.get_expiry(), 0
                self._windows[window_key] = (end, count + used - reservation.tokens)
