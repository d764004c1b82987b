"""Settings validation and the RAG-config hash."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragline.config import Settings, rag_config_hash
from ragline.ingestion.worker import backoff_s


def test_env_nesting_with_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    """RAGLINE_LLM__MAX_TOKENS sets settings.llm.max_tokens."""
    monkeypatch.setenv("RAGLINE_LLM__MAX_TOKENS", "77")
    monkeypatch.setenv("RAGLINE_RETRIEVAL__MMR", "true")
    settings = Settings()
    assert settings.llm.max_tokens == 77
    assert settings.retrieval.mmr is True


def test_overlap_must_be_smaller_than_chunk_size() -> None:
    with pytest.raises(ValidationError, match="chunk_overlap"):
        Settings(chunking={"chunk_size": 100, "chunk_overlap": 100})


def test_context_budget_plus_answer_must_fit_the_window() -> None:
    with pytest.raises(ValidationError, match="context_window"):
        Settings(
            generation={"max_context_tokens": 4000}, llm={"max_tokens": 512, "context_window": 4096}
        )


def test_rag_config_hash_changes_with_retrieval_settings_only() -> None:
    """The hash identifies retrieval/generation behaviour, not where data lives."""
    base = Settings()
    assert rag_config_hash(base) == rag_config_hash(Settings(home=base.home / "elsewhere"))
    assert rag_config_hash(base) != rag_config_hash(Settings(retrieval={"top_n": 5}))


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(a, 2.0, 10.0) for a in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 10.0]
