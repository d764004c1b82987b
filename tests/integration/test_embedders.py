"""The local embedding backends (torch, ONNX fp32/int8, static) and the one-vector-space rule."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.config import EmbeddingSettings, Settings
from ragline.errors import ConfigurationError
from ragline.factory import Runtime
from ragline.ingestion.pipeline import IngestionPipeline
from tests.conftest import FIXTURES
from tests.helpers import ingest, updated

TEXTS = [
    "Aspirin lowers the risk of a second heart attack in adults.",
    "Vitamin D supplements and bone density in older women: a randomised trial. " * 6,
    "The API key is rotated every 90 days by the platform team.",
    "x",
]
MARKDOWN = sorted((FIXTURES / "docs" / "markdown").glob("*.md"))[:3]


def built(settings: Settings, backend: str) -> Runtime:
    return Runtime(updated(settings, embedding={"backend": backend}))


def test_vector_spaces_are_shared_only_by_backends_that_compute_the_same_function() -> None:
    """torch, torch-bf16 and onnx share one fingerprint; int8, static and a server do not."""
    prints = {
        backend: EmbeddingSettings(backend=backend).fingerprint()  # type: ignore[arg-type]
        for backend in ("torch", "torch-bf16", "onnx", "onnx-int8", "static")
    }
    assert prints["torch"] == prints["torch-bf16"] == prints["onnx"]
    assert len({prints["onnx"], prints["onnx-int8"], prints["static"]}) == 3
    assert EmbeddingSettings(provider="openai").fingerprint() != prints["torch"]
    assert EmbeddingSettings(backend="static", static_dimensions=128).vector_size() == 128


def test_onnx_export_matches_pytorch_and_is_cached(settings: Settings, model_cache: Path) -> None:
    """The ONNX export gives PyTorch's vectors (documents in sorted batches and queries), in
    input order; the second build reuses the exported file."""
    reference = built(settings, "torch").build_embedder()
    onnx = built(settings, "onnx").build_embedder()
    exported = next(model_cache.glob("*/model.onnx"))
    modified = exported.stat().st_mtime_ns
    vectors = onnx.embed_documents(TEXTS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.min(np.sum(vectors * reference.embed_documents(TEXTS), axis=1)) > 0.9999
    assert float(onnx.embed_query(TEXTS[2]) @ reference.embed_query(TEXTS[2])) > 0.9999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    built(settings, "onnx").build_embedder()
    assert exported.stat().st_mtime_ns == modified


def test_onnx_document_calls_split_their_batches_over_the_cores_and_keep_input_order(
    settings: Settings,
) -> None:
    """Document batches run one core each, side by side, from one call or several threads at
    once; every vector lands in its text's row and matches the text embedded alone."""
    onnx = Runtime(
        updated(settings, embedding={"backend": "onnx", "threads": 2, "batch_size": 8})
    ).build_embedder()
    texts = [f"passage {i}: " + "evidence " * (i * 7 % 60) for i in range(50)]
    alone = np.vstack([onnx.embed_documents([t]) for t in texts])
    with ThreadPoolExecutor(3) as pool:
        forward, backward, few = pool.map(onnx.embed_documents, [texts, texts[::-1], texts[:3]])
    for vectors, expected in ((forward, alone), (backward, alone[::-1]), (few, alone[:3])):
        assert vectors.shape == expected.shape
        assert np.min(np.sum(vectors * expected, axis=1)) > 1 - 1e-5


def test_int8_and_bf16_stay_close_to_fp32(settings: Settings) -> None:
    """int8 weights and bf16 arithmetic move vectors a little, never the best match."""
    reference = built(settings, "torch").build_embedder().embed_documents(TEXTS)
    for backend, floor in (("onnx-int8", 0.97), ("torch-bf16", 0.999)):
        embedder = built(settings, backend).build_embedder()
        vectors = embedder.embed_documents(TEXTS)
        assert np.min(np.sum(vectors * reference, axis=1)) > floor, backend
        question = embedder.embed_query("who rotates the API keys, and how often?")
        assert int(np.argmax(vectors @ question)) == 2, backend


def test_static_model_is_distilled_locally_and_ranks_related_text_first(
    settings: Settings,
) -> None:
    """The distilled static model has the configured size, unit vectors, and puts a paraphrase
    above unrelated text."""
    embedder = built(settings, "static").build_embedder()
    vectors = embedder.embed_documents(TEXTS)
    assert vectors.shape == (4, 256) and embedder.dimensions == 256
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = embedder.embed_query("does aspirin prevent heart attacks")
    scores = vectors @ query
    assert int(np.argmax(scores)) == 0


def test_a_collection_never_mixes_vectors_of_two_models(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After a switch to another model, the service refuses the old collections with a message
    that names `ragline reindex`; workers refuse to add chunks; `ragline reindex` re-embeds and
    rebuilds, after which the new model answers queries. torch and onnx switch freely."""
    with built(settings, "onnx") as rt:
        ingest(rt, "kb", *MARKDOWN)
        chunks = rt.store.list_collections()[0].chunks
    with built(settings, "torch") as rt:  # same vector space: no reindex needed
        assert rt.retriever.retrieve("API keys", "kb").chunks
    static = updated(settings, embedding={"backend": "static"})
    with Runtime(static) as rt:
        with pytest.raises(ConfigurationError, match="ragline reindex"):
            rt.embedder  # noqa: B018
        # a worker built before the switch (its embedder never checked) cannot add chunks
        job = rt.store.submit("kb", "new.md", b"# New\n\nA new document about keys.", 3).job
        claimed = rt.store.claim_job("w", 60, [job.id] if job else None)
        assert claimed is not None
        unchecked = IngestionPipeline(
            rt.store, rt.index, rt.build_embedder(), rt.token_counter, static.chunking
        )
        with pytest.raises(ConfigurationError, match="holds vectors from"):
            unchecked.process(claimed)
        rt.store.delete_document(claimed.document_id)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    monkeypatch.setenv("RAGLINE_EMBEDDING__BACKEND", "static")
    result = CliRunner().invoke(app, ["reindex"])
    assert result.exit_code == 0, result.output
    assert f"re-embedded {chunks} chunks of kb" in result.output
    with Runtime(static) as rt:
        hits = rt.retriever.retrieve("How are API keys rotated?", "kb").chunks
        assert hits and rt.index.count("kb") == chunks
        assert rt.store.embedder_mismatches(static.embedding.fingerprint()) == {}
