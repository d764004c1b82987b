"""The OpenAI-compatible embeddings client, against the documented /v1/embeddings wire format."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from ragline.config import EmbeddingSettings
from ragline.errors import BackendError, ConfigurationError
from ragline.models.embedders import OpenAIEmbedder


def settings(**overrides: object) -> EmbeddingSettings:
    return EmbeddingSettings(
        provider="openai", base_url="http://tei/v1", dimensions=2, batch_size=2, **overrides
    )


def test_batches_are_sent_in_order_and_vectors_normalised() -> None:
    """Inputs go out in batches of batch_size; rows come back by `index`, L2-normalised."""
    seen: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body["input"])
        data = [{"index": i, "embedding": [3.0 * (i + 1), 4.0]} for i in range(len(body["input"]))]
        return httpx.Response(200, json={"object": "list", "data": list(reversed(data))})

    embedder = OpenAIEmbedder(settings(api_key="k"), transport=httpx.MockTransport(handler))
    vectors = embedder.embed_documents(["a", "b", "c"])
    assert seen == [["a", "b"], ["c"]]
    assert vectors.shape == (3, 2)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(vectors[0], [0.6, 0.8], rtol=1e-6)


def test_server_errors_become_backend_errors() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    with pytest.raises(BackendError, match="http://tei/v1"):
        OpenAIEmbedder(settings(), transport=transport).embed_query("x")


def test_missing_base_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="RAGLINE_EMBEDDING__BASE_URL"):
        OpenAIEmbedder(EmbeddingSettings(provider="openai"))
