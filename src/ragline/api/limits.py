"""Rate limits (the `limits` library, fixed windows): in process, or Redis shared by replicas.

Policy when Redis fails: fall back to the in-process limiter (each replica then enforces the
limit on its own share of traffic) and count the error; never fail the request because the
limiter's store is down.
"""

from __future__ import annotations

import logging
import math
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
        self._memory = FixedWindowRateLimiter(storage_from_string("memory://"))
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
        limiter = self._redis or self._memory
        try:
            if check_only:
                allowed = limiter.test(item, self.namespace, key)
            else:
                allowed = limiter.hit(item, self.namespace, key, cost=cost)
            stats = limiter.get_window_stats(item, self.namespace, key)
        except Exception as exc:  # the Redis client raises its own tree; any failure falls back
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning(
                    "rate limiter store failed; using in-process limits errors=%d error=%s",
                    self.errors,
                    exc,
                )
            if check_only:
                allowed = self._memory.test(item, self.namespace, key)
            else:
                allowed = self._memory.hit(item, self.namespace, key, cost=cost)
            stats = self._memory.get_window_stats(item, self.namespace, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed, item.amount, stats.remaining, retry_after)
