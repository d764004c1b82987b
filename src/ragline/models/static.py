"""A static embedding model distilled locally from the shipped transformer (model2vec).

model2vec's distillation (Tulkens & van Dongen, 2024) runs every vocabulary token through the
transformer once, reduces the token vectors with PCA and weights them by estimated token
frequency (SIF, coefficient 1e-4). A text's vector is then the mean of its tokens' vectors: no
transformer at run time, so embedding costs a tokenization and a lookup. Quality is lower than
the transformer's (docs/benchmarks.md), which is why it is the opt-in `static` backend for very
large corpora, never the default. Distillation takes about 20 s on 2 cores and is cached.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ragline.config import EmbeddingSettings
from ragline.models.embedders import check_dimensions, normalize, offline
from ragline.models.onnx import max_sequence_length, weights_digest

log = logging.getLogger(__name__)


def distill(model_dir: Path, cache_dir: Path, dimensions: int) -> Path:
    """The folder of the static model distilled from `model_dir` (built and cached on first use)."""
    folder = cache_dir / weights_digest(model_dir) / f"static-{dimensions}"
    if (folder / "model.safetensors").exists():
        return folder
    offline()
    from model2vec.distill import distill as model2vec_distill

    started = time.perf_counter()
    model = model2vec_distill(model_name=str(model_dir), pca_dims=dimensions, device="cpu")
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    model.save_pretrained(str(partial))
    partial.replace(folder)  # atomic: a concurrent process sees no folder or a whole one
    log.info("distilled %s in %.1f s: %s", model_dir, time.perf_counter() - started, folder)
    return folder


class StaticEmbedder:
    """Mean of distilled token vectors; tokenization is the only per-text work."""

    def __init__(self, folder: Path, model_dir: Path, settings: EmbeddingSettings) -> None:
        from model2vec import StaticModel

        self._model = StaticModel.from_pretrained(str(folder))
        self.model_name = settings.model
        self.fingerprint = settings.fingerprint()
        self.batch_size = settings.batch_size
        self.max_tokens = max_sequence_length(model_dir, settings.max_seq_length) - 2
        self.dimensions = check_dimensions(int(self._model.dim), settings)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self._encode(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self._encode([text])[0]
        return vector

    def _encode(self, texts: list[str]) -> np.ndarray:
        # the same token window as the transformer, so a chunk means the same text to both
        vectors = self._model.encode(
            texts, max_length=self.max_tokens + 2, use_multiprocessing=False
        )
        return normalize(vectors)
