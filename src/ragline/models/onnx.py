"""The local embedding model on ONNX Runtime: exported from the shipped weights, fp32 or int8.

Nothing is downloaded: the transformer is exported once with `torch.onnx.export` from the local
sentence-transformers folder, checked against PyTorch on real inputs, and kept in the model cache
(`<home>/models/<weights hash>/`). `onnx-int8` then quantizes the MatMul weights per output
channel (`onnxruntime.quantization.quantize_dynamic`: int8 weights, activations quantized at run
time); ONNX Runtime picks its kernels for the CPU at run time (AVX2, AVX-512, VNNI, AMX).
Pooling (mean over the attention mask) and normalisation run in NumPy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ragline.config import EmbeddingSettings
from ragline.errors import ConfigurationError
from ragline.models.embedders import (
    CallLocks,
    check_dimensions,
    length_sorted_batches,
    normalize,
    offline,
    thread_count,
)

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # bump when the exported graph changes: old exports are then rebuilt
MAX_EXPORT_DRIFT = 1e-4  # largest 1 - cosine(onnx, torch) accepted from a fresh fp32 export


def weights_digest(model_dir: Path) -> str:
    """A short hash of the model's weight and config files: the cache key of its exports."""
    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}".encode())
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        path = model_dir / name
        if path.exists():
            with path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()[:16]


def check_mean_pooled(model_dir: Path) -> None:
    """Refuse models whose sentence-transformers pipeline is not transformer → mean → normalize."""
    modules_file = model_dir / "modules.json"
    if not modules_file.exists():
        return
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads(modules_file.read_text())]
    pooling_file = next(model_dir.glob("*Pooling/config.json"), None)
    pooling = json.loads(pooling_file.read_text()) if pooling_file else {}
    extra = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if extra or not pooling.get("pooling_mode_mean_tokens", True):
        raise ConfigurationError(
            f"embedding.backend=onnx supports mean-pooled models only; {model_dir} has "
            f"{kinds}. Set RAGLINE_EMBEDDING__BACKEND=torch"
        )


def export(model_dir: Path, cache_dir: Path, int8: bool) -> Path:
    """The ONNX file for `model_dir` (exported, checked and cached on first use)."""
    check_mean_pooled(model_dir)
    folder = cache_dir / weights_digest(model_dir)
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        started = time.perf_counter()
        with quiet():
            _export_fp32(model_dir, fp32)
        log.info(
            "exported %s to ONNX in %.1f s: %s", model_dir, time.perf_counter() - started, fp32
        )
    if not int8:
        return fp32
    quantized = folder / "model.int8.onnx"
    if not quantized.exists():
        with quiet():
            _quantize(fp32, quantized)
        log.info("quantized %s to int8: %s", fp32, quantized)
    return quantized


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's advice (tracer warnings, root-logger notes): it is
    addressed to model authors, and the export is checked against PyTorch anyway."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export_fp32(model_dir: Path, target: Path) -> None:
    offline()
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Transformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    with torch.no_grad():
        torch.onnx.export(
            Transformer(),
            (ids, torch.ones_like(ids)),
            str(partial),
            input_names=["input_ids", "attention_mask"],
            output_names=["token_embeddings"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_embeddings": axes},
            opset_version=17,
            dynamo=False,
        )
    _check_export(model_dir, partial)
    partial.replace(target)  # atomic: a concurrent process sees no file or a whole one


def _check_export(model_dir: Path, exported: Path) -> None:
    """Compare the export with sentence-transformers on padded batches; refuse any drift."""
    from sentence_transformers import SentenceTransformer

    texts = [
        "Aspirin lowers the risk of a second heart attack.",
        "A much longer passage, so that the batch is padded: " + "retrieval quality " * 20,
        "ünïcödé, emoji 🙂 and numbers 3.14",
    ]
    reference = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True).encode(
        texts, normalize_embeddings=True
    )
    onnx = OnnxEmbedder(exported, model_dir, _check_settings(len(reference[0])))
    drift = float(np.max(1 - np.sum(onnx.embed_documents(texts) * reference, axis=1)))
    if drift > MAX_EXPORT_DRIFT:
        exported.unlink(missing_ok=True)
        raise ConfigurationError(
            f"the ONNX export of {model_dir} disagrees with PyTorch (1 - cosine = {drift:.2g}); "
            "set RAGLINE_EMBEDDING__BACKEND=torch"
        )


def _check_settings(dimensions: int) -> EmbeddingSettings:
    return EmbeddingSettings(backend="onnx", dimensions=dimensions)


def _quantize(fp32: Path, target: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_suffix(f".{os.getpid()}.partial")
    quantize_dynamic(
        str(fp32),
        str(partial),
        weight_type=QuantType.QInt8,
        per_channel=True,  # per-tensor scales cost 6 points of cosine here; per channel 0.5
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    partial.replace(target)


def max_sequence_length(model_dir: Path, default: int) -> int:
    """The model's input limit in tokens, from sentence-transformers' config in its folder."""
    config = model_dir / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text()).get("max_seq_length") or default)
    return default


class OnnxEmbedder:
    """A mean-pooled transformer on ONNX Runtime; tokenized with the model's own tokenizer.

    A query runs as one call over `embedding.threads` cores (every core by default): the
    lowest latency for one short input. Document batches run on a second session of one thread
    each, `embedding.threads` batches at once, and every document call in the process shares
    cores-many slots. Several single-thread calls side by side beat one call spread over the
    cores (no synchronisation inside the model), and two worker threads embedding small
    documents then fill both cores while each parses and commits between its calls
    (bench/ingest_throughput.py: 70 against 40 chunks/s with two threads per call)."""

    def __init__(self, model_file: Path, model_dir: Path, settings: EmbeddingSettings) -> None:
        from tokenizers import Tokenizer

        threads = thread_count(settings.threads)
        self._session = _session(model_file, threads)
        self._batch_session = _session(model_file, 1)
        self._parallel = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ragline-embed")
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()  # the shipped tokenizer.json pads; batches pad themselves
        limit = max_sequence_length(model_dir, settings.max_seq_length)
        self._tokenizer.enable_truncation(limit)
        self._locks = CallLocks(threads=1)
        self.model_name = settings.model
        self.fingerprint = settings.fingerprint()
        self.batch_size = settings.batch_size
        self.max_tokens = limit - 2  # [CLS] and [SEP]
        probe = _run(self._session, [self._tokenizer.encode("dimensions").ids])
        self.dimensions = check_dimensions(probe.shape[1], settings)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        encoded = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        # small calls are split too, so that one worker's three-chunk document uses every core
        size = min(self.batch_size, -(-len(texts) // self._parallel))
        batches = list(length_sorted_batches([len(ids) for ids in encoded], size))

        def embed(batch: np.ndarray) -> None:
            with self._locks.batch:
                vectors[batch] = _run(self._batch_session, [encoded[i] for i in batch])

        if len(batches) == 1:
            embed(batches[0])
        else:
            for future in [self._pool.submit(embed, batch) for batch in batches]:
                future.result()
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        with self._locks.query:
            vector: np.ndarray = _run(self._session, [self._tokenizer.encode(text).ids])[0]
        return vector


def _session(model_file: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def _run(session: Any, encoded: Sequence[Sequence[int]]) -> np.ndarray:
    width = max(len(ids) for ids in encoded)
    input_ids = np.zeros((len(encoded), width), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    (tokens,) = session.run(None, {"input_ids": input_ids, "attention_mask": mask})
    summed = np.einsum("btd,bt->bd", tokens, mask.astype(np.float32))
    return normalize(summed / mask.sum(axis=1, keepdims=True))
