"""Caches: query embeddings, retrieval results and answers (memory or Redis, fail-open)."""

from ragline.cache.base import Cache, CacheStats, MemoryCache, RedisCache

__all__ = ["Cache", "CacheStats", "MemoryCache", "RedisCache"]
