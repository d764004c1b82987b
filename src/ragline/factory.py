"""The one place that names concrete backends: builds every component from `Settings`.

Components are built lazily on first use, so `ragline documents` never loads a model and
`ragline ask` starts the local LLM server only when it has something to ask.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from pathlib import Path
from types import TracebackType

from ragline.cache import Cache, MemoryCache, RedisCache
from ragline.cache.embedding import CachingEmbedder
from ragline.config import Settings
from ragline.errors import ConfigurationError, RaglineError
from ragline.evals.judge import Judge
from ragline.generation.answer import Answerer
from ragline.generation.llm import ChatClient
from ragline.generation.multistep import MultiStep
from ragline.index.base import VectorIndex
from ragline.index.qdrant_edge import QdrantEdgeIndex
from ragline.index.sync import IndexSync
from ragline.ingestion.pipeline import IngestionPipeline
from ragline.ingestion.worker import Worker
from ragline.models.embedders import (
    Embedder,
    LocalEmbedder,
    OpenAIEmbedder,
    TokenCounter,
    default_model_dir,
)
from ragline.models.llm_server import LocalLLMServer, default_gguf, running_server
from ragline.prompts import LangfusePrompts, PromptRegistry, PromptResolver
from ragline.retrieval.retriever import HybridRetriever
from ragline.service import Caches, QueryService
from ragline.store import Store, create_store_engine, migrate
from ragline.tracing.feedback import FeedbackService, LangfuseScores
from ragline.tracing.setup import Tracing
from ragline.tracing.store import LocalSpanExporter, TraceStore

log = logging.getLogger(__name__)
WARM_TIMEOUT_S = 30.0  # one token from the local LLM at start-up: 4–8 s on a loaded 2-core box


class Runtime:
    """Every long-lived component of one ragline process; close it when done."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._llm_server: LocalLLMServer | None = None
        self._judge_chat: ChatClient | None = None

    @cached_property
    def store(self) -> Store:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        engine = create_store_engine(self.settings.resolved_database_url)
        migrate(engine)
        return Store(engine)

    @cached_property
    def model_dir(self) -> Path:
        return (
            Path(self.settings.embedding.model_path)
            if self.settings.embedding.model_path
            else default_model_dir()
        )

    @cached_property
    def token_counter(self) -> TokenCounter:
        return TokenCounter(self.model_dir / "tokenizer.json")

    @cached_property
    def embedder(self) -> Embedder:
        """The configured embedder, once every collection is known to hold its vectors."""
        self.check_embedder()
        return self.build_embedder()

    def check_embedder(self) -> None:
        """Refuse to embed into (or query) a collection indexed with another embedder."""
        fingerprint = self.settings.embedding.fingerprint()
        mismatched = self.store.embedder_mismatches(fingerprint)
        if mismatched:
            listed = ", ".join(f"{name!r} ({old})" for name, old in sorted(mismatched.items()))
            raise ConfigurationError(
                f"collections {listed} hold vectors from another embedding model than the "
                f"configured one ({fingerprint}); vectors from different models must never mix. "
                "Run `ragline reindex` to re-embed them, or restore the embedding settings."
            )

    def build_embedder(self) -> Embedder:
        """The configured embedder, without the collection check (`ragline reindex` uses it)."""
        settings = self.settings.embedding
        if settings.provider == "openai":
            return OpenAIEmbedder(settings)
        if settings.backend in ("onnx", "onnx-int8"):
            from ragline.models import onnx

            exported = onnx.export(
                self.model_dir, self.settings.resolved_model_cache, settings.backend == "onnx-int8"
            )
            return onnx.OnnxEmbedder(exported, self.model_dir, settings)
        if settings.backend == "static":
            from ragline.models import static

            distilled = static.distill(
                self.model_dir, self.settings.resolved_model_cache, settings.static_dimensions
            )
            return static.StaticEmbedder(distilled, self.model_dir, settings)
        return LocalEmbedder(self.model_dir, settings)

    @cached_property
    def tracing(self) -> Tracing:
        local = LocalSpanExporter(self.store.engine) if self.settings.tracing.local_store else None
        return Tracing(self.settings, local_exporter=local)

    @cached_property
    def traces(self) -> TraceStore:
        return TraceStore(self.store.engine)

    @cached_property
    def langfuse_scores(self) -> LangfuseScores | None:
        return LangfuseScores(self.settings.langfuse) if self.settings.langfuse.configured else None

    @cached_property
    def feedback(self) -> FeedbackService:
        return FeedbackService(self.traces, self.tracing, self.langfuse_scores)

    @cached_property
    def caches(self) -> Caches | None:
        settings = self.settings.cache
        if not settings.enabled:
            return None
        ttls = {
            "embedding": settings.embedding_ttl_s,
            "retrieval": settings.retrieval_ttl_s,
            "answer": settings.answer_ttl_s,
        }
        if settings.redis_url:
            made: dict[str, Cache] = {
                name: RedisCache(
                    name, settings.redis_url, settings.key_prefix, ttl, settings.timeout_s
                )
                for name, ttl in ttls.items()
            }
        else:
            made = {
                name: MemoryCache(name, ttl, settings.max_entries) for name, ttl in ttls.items()
            }
        return Caches(**made)

    @cached_property
    def query_embedder(self) -> Embedder:
        """The embedder for questions: behind the query-embedding cache when caches are on."""
        if self.caches is None:
            return self.embedder
        return CachingEmbedder(self.embedder, self.caches.embedding)

    @cached_property
    def query_service(self) -> QueryService:
        return QueryService.for_runtime(self)

    @cached_property
    def index(self) -> VectorIndex:
        if self.settings.index.url:
            from ragline.index.qdrant_server import QdrantServerIndex

            return QdrantServerIndex(self.settings.index, self.settings.embedding.vector_size())
        return QdrantEdgeIndex(
            self.settings.resolved_index_path,
            self.settings.embedding.vector_size(),
            self.settings.index,
        )

    @cached_property
    def index_sync(self) -> IndexSync:
        return IndexSync(self.store, self.index, self.settings.index.optimize_after_points)

    def sync_index(self) -> int:
        """Apply pending store changes to this process's index; returns the entries applied."""
        return self.index_sync.catch_up()

    @cached_property
    def retriever(self) -> HybridRetriever:
        return HybridRetriever(
            self.query_embedder, self.index, self.store, self.settings.retrieval, self.tracing
        )

    @cached_property
    def chat(self) -> ChatClient:
        return ChatClient(self.settings.llm, self._llm_base_url())

    @cached_property
    def prompts(self) -> PromptRegistry:
        return PromptRegistry(self.store.engine)

    @cached_property
    def prompt_resolver(self) -> PromptResolver:
        remote = None
        if self.settings.generation.prompt_source == "langfuse":
            if not self.settings.langfuse.configured:
                raise ConfigurationError(
                    "generation.prompt_source=langfuse needs RAGLINE_LANGFUSE__HOST and keys"
                )
            remote = LangfusePrompts(self.settings.langfuse)
        return PromptResolver(self.prompts, self.settings.generation.prompt_name, remote=remote)

    @cached_property
    def answerer(self) -> Answerer:
        return Answerer(
            self.retriever,
            lambda: self.chat,
            self.token_counter,
            self.prompt_resolver,
            self.settings.generation,
            self.settings.llm,
            self.tracing,
        )

    @cached_property
    def multistep(self) -> MultiStep:
        """Several sources per query; the decompose and summarize modes."""
        return MultiStep(self.retriever, self.answerer, self.settings.multistep, self.tracing)

    @cached_property
    def judge(self) -> Judge:
        """The LLM-as-judge: the eval settings' server and model, else generation's."""
        settings = self.settings.eval
        overrides = {"model": settings.judge_model or self.settings.llm.model, "temperature": 0.0}
        if settings.judge_api_key:
            overrides["api_key"] = settings.judge_api_key
        llm = self.settings.llm.model_copy(update=overrides)
        base_url = settings.judge_base_url or self.chat.base_url
        self._judge_chat = ChatClient(llm, base_url)
        return Judge(self._judge_chat, settings.judge_max_tokens, settings.judge_response_format)

    def ingestion_pipeline(self) -> IngestionPipeline:
        return IngestionPipeline(
            self.store,
            self.index,
            self.embedder,
            self.token_counter,
            self.settings.chunking,
            self.tracing,
        )

    def worker(self) -> Worker:
        return Worker(
            self.store, self.ingestion_pipeline, self.settings.ingestion, tracing=self.tracing
        )

    def delete_document(self, document_id: str) -> None:
        """Remove a document from the store (the source of truth), then sync the index."""
        self.store.delete_document(document_id)
        self.sync_index()

    def warm_llm(self) -> float | None:
        """Ask the local LLM server for one token, so its weights are paged in, its first
        inference's one-time costs paid and the system prompt cached before the first user's
        question; the seconds it took, or None.

        Only the local server (started or reused by ragline): a remote one is shared and
        already warm, and a call there may cost money. A failure is logged, never raised: a
        dead LLM leaves `serve` degraded, not down. No retries, and a short timeout, so a hung
        server delays start-up by `WARM_TIMEOUT_S` at most.
        """
        if self.settings.llm.base_url:
            return None
        started = time.perf_counter()
        settings = self.settings.llm.model_copy(
            update={"max_retries": 0, "timeout_s": min(WARM_TIMEOUT_S, self.settings.llm.timeout_s)}
        )
        client = ChatClient(settings, self.chat.base_url)
        try:
            # the production prompt without passages: llama.cpp keeps the prompt's prefix
            # cached, so the first question also skips evaluating the system text
            messages = self.answerer.prompt_source().messages("", "Hi")
            for _ in client.stream(messages, 1, 0.0):
                pass
        except RaglineError as exc:
            log.warning("llm warm-up failed; the first question pays the load error=%s", exc)
            return None
        finally:
            client.close()
        elapsed = time.perf_counter() - started
        log.info("llm warmed duration_ms=%.0f", elapsed * 1000)
        return elapsed

    def _llm_base_url(self) -> str:
        settings = self.settings.llm
        if settings.base_url:
            return settings.base_url
        reusable = running_server(self.settings.home)
        if reusable:
            log.info("reusing local LLM server %s", reusable)
            return reusable
        model = Path(settings.local_model_path) if settings.local_model_path else default_gguf()
        self._llm_server = LocalLLMServer(
            model,
            settings.model,
            settings.context_window,
            settings.local_threads,
            log_file=self.settings.home / "llm-server.log",
        )
        return self._llm_server.start()

    def close(self) -> None:
        """Close what was built, in reverse order of dependency."""
        built = self.__dict__
        for name in ("chat",):
            if name in built:
                built[name].close()
        if self._judge_chat is not None:
            self._judge_chat.close()
        if "multistep" in built:
            built["multistep"].close()
        if "retriever" in built:
            built["retriever"].close()
        if built.get("caches") is not None:
            for cache in (
                built["caches"].embedding,
                built["caches"].retrieval,
                built["caches"].answer,
            ):
                cache.close()
        if self._llm_server is not None:
            self._llm_server.stop()
        if built.get("langfuse_scores") is not None:
            built["langfuse_scores"].close()
        if "tracing" in built:
            built["tracing"].shutdown()  # flushes what is queued
        if "index" in built:
            built["index"].close()
        if "store" in built:
            built["store"].close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
