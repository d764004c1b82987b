"""Rate limits in fixed windows: in process, or Redis shared by replicas (the `limits` library).

A window starts at a key's first hit and lasts the limit's period; every hit counts, refused
ones too, so a client that keeps hammering stays refused until its window ends. The in-process
windows are ours: `limits`' memory storage starts a new timer thread after almost every hit to
expire keys (about 100 thread starts a second under load, 3 % of the cached-answer path).

Policy when Redis fails: fall back to the in-process limiter (each replica then enforces the
limit on its own share of traffic) and count the error; never fail the request because the
limiter's store is down.
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
        if redis_url:
            storage: Any = storage_from_string(
                redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
            self._redis = FixedWindowRateLimiter(storage)

    def hit(self, limit: str, key: str, cost: int = 1, check_only: bool = False) -> Decision:
        """Count `cost` hits (a request, or tokens spent) for `key`; `check_only` counts
        nothing and says whether the window has room left."""
        item = parse_limit(limit)
        if self._redis is None:
            return self._memory.hit(item, f"{self.namespace}/{key}", cost, check_only)
        try:
            if check_only:
                allowed = self._redis.test(item, self.namespace, key)
            else:
                allowed = self._redis.hit(item, self.namespace, key, cost=cost)
            stats = self._redis.get_window_stats(item, self.namespace, key)
        except Exception as exc:  # the Redis client raises its own tree; any failure falls back
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning(
                    "rate limiter store failed; using in-process limits errors=%d error=%s",
                    self.errors,
                    exc,
                )
            return self._memory.hit(item, f"{self.namespace}/{key}", cost, check_only)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed, item.amount, stats.remaining, retry_after)


class MemoryWindows:
    """Fixed windows in this process: a count and an end time per key, under one lock.
    Ended windows are dropped once a minute, on a hit; nothing runs in the background."""

    SWEEP_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, hits)
        self._next_sweep = 0.0

    def hit(self, item: RateLimitItem, key: str, cost: int, check_only: bool) -> Decision:
        window_key = f"{key}/{item.key_for()}"
        now = time.monotonic()
        with self._lock:
            if now >= self._next_sweep:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
                self._next_sweep = now + self.SWEEP_S
            end, count = self._windows.get(window_key, (0.0, 0))
            if end <= now:
                end, count = now + item.get_expiry(), 0
            if check_only:
                allowed = count < item.amount
            else:
                count += cost
                allowed = count <= item.amount
                self._windows[window_key] = (end, count)
        retry_after = max(1, math.ceil(end - now))
        return Decision(allowed, item.amount, max(0, item.amount - count), retry_after)
