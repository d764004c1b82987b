"""The query-embedding cache, as an `Embedder` wrapper keyed by (embedder fingerprint, text hash)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ragline.cache.base import Cache
from ragline.models.embedders import Embedder


class CachingEmbedder:
    """Serves repeated query embeddings from a cache; document batches pass straight through."""

    def __init__(self, embedder: Embedder, cache: Cache) -> None:
        self.embedder = embedder
        self.cache = cache
        self.model_name = embedder.model_name
        self.fingerprint = embedder.fingerprint
        self.dimensions = embedder.dimensions
        self.max_tokens = embedder.max_tokens

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        key = hashlib.sha256(f"{self.fingerprint}\0{text}".encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None:
            return np.frombuffer(cached, dtype=np.float32)
        vector = np.asarray(self.embedder.embed_query(text), dtype=np.float32)
        self.cache.set(key, vector.tobytes())
        return vector
