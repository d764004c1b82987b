"""Key-value caches with a TTL: in-process (embedded default) or Redis (shared by replicas).

Redis is an optimisation, never a dependency: any Redis error or timeout counts as a miss
(fail open), is counted in `stats.errors`, and never fails the request.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache

from ragline import metrics

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    name: str = ""
    hits: int = 0
    misses: int = 0
    errors: int = 0

    def record(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        metrics.CACHE.labels(self.name, "hit" if hit else "miss").inc()


class Cache(Protocol):
    """Bytes by string key, each entry living `ttl_s` seconds."""

    name: str
    stats: CacheStats

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes) -> None: ...

    def close(self) -> None: ...


class MemoryCache:
    """A thread-safe TTL + LRU cache in this process."""

    def __init__(self, name: str, ttl_s: float, max_entries: int = 10_000) -> None:
        self.name = name
        self.stats = CacheStats(name)
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=ttl_s)
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
        self.stats.record(value is not None)
        return value

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._entries[key] = value

    def close(self) -> None:
        with self._lock:
            self._entries.clear()


class RedisCache:
    """Redis-backed cache under a key prefix; short timeouts, every error is a miss."""

    def __init__(
        self, name: str, url: str, prefix: str, ttl_s: float, timeout_s: float = 0.05
    ) -> None:
        import redis

        self.name = name
        self.stats = CacheStats(name)
        self._prefix = f"{prefix}{name}:"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._error_types: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def get(self, key: str) -> bytes | None:
        try:
            value = self._redis.get(self._prefix + key)
        except self._error_types as exc:
            self._failed("get", exc)
            self.stats.record(False)
            return None
        self.stats.record(value is not None)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        try:
            self._redis.set(self._prefix + key, value, px=self._ttl_ms)
        except self._error_types as exc:
            self._failed("set", exc)

    def close(self) -> None:
        self._redis.close()

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.stats.errors += 1
        if self.stats.errors == 1 or self.stats.errors % 100 == 0:
            log.warning(
                "redis cache %s failed cache=%s errors=%d error=%s",
                operation,
                self.name,
                self.stats.errors,
                exc,
            )
