"""One ingestion job: parse → chunk → embed → swap the chunks (with vectors) in the store.

The index is not touched here: the store's index log tells the index owner what to apply
(see `ragline.index.sync`), so any number of worker processes can run beside it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ragline import metrics
from ragline.config import ChunkingSettings
from ragline.domain import Chunk, Job
from ragline.errors import ConfigurationError
from ragline.index.base import VectorIndex
from ragline.ingestion.chunking import ChunkDraft, chunk_text
from ragline.ingestion.parsers import ParsedDocument, parse_document
from ragline.models.embedders import Embedder, TokenCounter
from ragline.store import Store
from ragline.store.repository import IndexedChunk
from ragline.tracing import attributes as attr
from ragline.tracing.setup import Tracing, errors_recorded, kind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    job: Job
    chunks: int
    superseded: bool = False


def chunk_identity(document_id: str, digest: str, position: int) -> tuple[str, int]:
    """Deterministic (chunk id, index point id) for one version of a document.

    Re-running a job writes the same points, so a retried or resumed job never duplicates them.
    """
    h = hashlib.sha256(f"{document_id}:{digest}:{position}".encode()).hexdigest()
    return h[:32], int(h[32:48], 16) & (2**63 - 1)


def draft_chunks(
    parsed: ParsedDocument,
    count_tokens: TokenCounter,
    settings: ChunkingSettings,
    embedder: Embedder | None = None,
) -> list[ChunkDraft]:
    """Chunk every section of a parsed document, keeping heading and page with each chunk."""
    embed = embedder.embed_documents if (settings.semantic and embedder) else None
    drafts = []
    for section in parsed.sections:
        for text, tokens in chunk_text(
            section.text,
            count_tokens,
            settings.chunk_size,
            settings.chunk_overlap,
            embed=embed,
            semantic_percentile=settings.semantic_percentile,
        ):
            drafts.append(ChunkDraft(text, tokens, section.heading, section.page))
    return drafts


class IngestionPipeline:
    """Turns a job's stored bytes into indexed chunks."""

    def __init__(
        self,
        store: Store,
        index: VectorIndex,
        embedder: Embedder,
        count_tokens: TokenCounter,
        settings: ChunkingSettings,
        tracing: Tracing | None = None,
    ) -> None:
        if settings.chunk_size > embedder.max_tokens:
            raise ConfigurationError(
                f"chunking.chunk_size={settings.chunk_size} exceeds the embedding model's limit of "
                f"{embedder.max_tokens} tokens ({embedder.model_name}); chunks would be truncated. "
                f"Set RAGLINE_CHUNKING__CHUNK_SIZE to at most {embedder.max_tokens}."
            )
        self.store = store
        self.index = index
        self.embedder = embedder
        self.count_tokens = count_tokens
        self.settings = settings
        self.tracing = tracing or Tracing.disabled()

    def process(self, job: Job) -> JobOutcome:
        """Run the job; raises DocumentError for bad input, other errors for retryable failures.

        Spans (children of the current `ingest` span): parse, chunk, embed, store.
        """
        if not self.store.is_current(job):
            self.store.complete_job(job, [], None, "")
            return JobOutcome(job, 0, superseded=True)
        document = self.store.get_document(job.document_id)
        tracer = self.tracing.tracer
        with tracer.start_as_current_span(attr.PARSE) as span, errors_recorded(span):
            parsed = parse_document(self.store.content(job.content_hash), document.source)
            span.set_attributes(
                {
                    attr.PARSE_MEDIA_TYPE: parsed.media_type,
                    attr.PARSE_SECTIONS: len(parsed.sections),
                }
            )
        with tracer.start_as_current_span(attr.CHUNK) as span, errors_recorded(span):
            drafts = draft_chunks(parsed, self.count_tokens, self.settings, self.embedder)
            chunks = self._chunks(job, document.source, drafts)
            sizes = [c.token_count for c in chunks] or [0]
            span.set_attributes(
                {
                    attr.CHUNK_COUNT: len(chunks),
                    attr.CHUNK_TOKENS_MAX: max(sizes),
                    attr.CHUNK_TOKENS_MEAN: round(sum(sizes) / len(sizes), 1),
                    attr.CHUNK_SIZE: self.settings.chunk_size,
                    attr.CHUNK_OVERLAP: self.settings.chunk_overlap,
                }
            )
        texts = [c.text for c in chunks]
        with tracer.start_as_current_span(attr.EMBED) as span, errors_recorded(span):
            span.set_attributes(
                {
                    **kind(attr.KIND_EMBEDDING, "embedding"),
                    attr.EMBEDDING_MODEL_NAME: self.embedder.model_name,
                    attr.LANGFUSE_MODEL_NAME: self.embedder.model_name,
                    attr.BATCH_SIZE: len(texts),
                }
            )
            embed_started = time.perf_counter()
            vectors = self.embedder.embed_documents(texts)
            metrics.EMBEDDING.labels("ingest").observe(time.perf_counter() - embed_started)
            terms = self.index.term_counts(texts)
        indexed = [
            IndexedChunk(chunk, term_count, vector)
            for chunk, term_count, vector in zip(chunks, terms, vectors, strict=True)
        ]
        with tracer.start_as_current_span(attr.STORE) as span, errors_recorded(span):
            applied = self.store.complete_job(
                job, indexed, parsed.title, parsed.media_type, self.embedder.fingerprint
            )
            span.set_attribute(attr.STORE_SUPERSEDED, not applied)
        return JobOutcome(job, len(chunks), superseded=not applied)

    def _chunks(self, job: Job, source: str, drafts: Sequence[ChunkDraft]) -> list[Chunk]:
        chunks = []
        for position, draft in enumerate(drafts):
            chunk_id, point_id = chunk_identity(job.document_id, job.content_hash, position)
            metadata = {"source": source, "heading": draft.heading, "page": draft.page}
            chunks.append(
                Chunk(
                    id=chunk_id,
                    point_id=point_id,
                    document_id=job.document_id,
                    collection=job.collection,
                    position=position,
                    text=draft.text,
                    token_count=draft.token_count,
                    metadata={k: v for k, v in metadata.items() if v is not None},
                )
            )
        return chunks
