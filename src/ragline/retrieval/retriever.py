"""Hybrid retrieval: dense and BM25 legs (side by side where the index allows it), RRF,
optional threshold and MMR, top-n."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from opentelemetry.context import Context
from opentelemetry.trace import Span

from ragline import metrics
from ragline.config import RetrievalSettings
from ragline.domain import LegHit, RetrievalResult, ScoredChunk
from ragline.index.base import VectorIndex
from ragline.models.embedders import Embedder
from ragline.retrieval.fusion import reciprocal_rank_fusion
from ragline.retrieval.mmr import maximal_marginal_relevance
from ragline.store import Store
from ragline.tracing import attributes as attr
from ragline.tracing.setup import Tracing, errors_recorded, kind

# chunk metadata that identifies a chunk without saying what it is about: recorded on spans even
# with content capture off (a heading such as "Patient Jane Roe HIV diagnosis" is content)
NON_CONTENT_METADATA = frozenset({"source", "page"})


class HybridRetriever:
    """Runs both legs, fuses them and resolves hits against the store (the source of truth).

    Spans: `embedding`, then `retrieve` with children `retrieve.dense`, `retrieve.sparse` (each
    leg's hits) and `mmr` when used; `parent` is the trace context to attach them to.
    """

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        store: Store,
        settings: RetrievalSettings,
        tracing: Tracing | None = None,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.store = store
        self.settings = settings
        self.tracing = tracing or Tracing.disabled()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ragline-retrieve")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def embed(self, question: str, parent: Context | None = None) -> np.ndarray:
        """The query vector, in its own `embedding` span."""
        # attributes are given when a span starts, in one dict: the SDK validates and locks per
        # call, and this path is timed (bench/tracing_overhead.py)
        model = self.embedder.model_name
        attributes: dict[str, Any] = {
            **kind(attr.KIND_EMBEDDING, "embedding"),
            attr.EMBEDDING_MODEL_NAME: model,
            attr.LANGFUSE_MODEL_NAME: model,
        }
        if (text := self.tracing.content(question)) is not None:
            attributes[attr.EMBEDDING_TEXT] = text
        started = time.perf_counter()
        with (
            self.tracing.tracer.start_as_current_span(
                attr.EMBEDDING, parent, attributes=attributes
            ) as span,
            errors_recorded(span),
        ):
            vector = self.embedder.embed_query(question)
        metrics.EMBEDDING.labels("query").observe(time.perf_counter() - started)
        return vector

    def retrieve(
        self,
        question: str,
        collection: str,
        top_n: int | None = None,
        mmr: bool | None = None,
        parent: Context | None = None,
        query_vector: np.ndarray | None = None,
    ) -> RetrievalResult:
        """Retrieve from one collection; with `query_vector` (embedded once for several
        collections) there is no `embedding` span here."""
        settings = self.settings
        tracer = self.tracing.tracer
        top_n = top_n or settings.top_n
        use_mmr = settings.mmr if mmr is None else mmr
        timings: dict[str, float] = {}
        started = time.perf_counter()
        if query_vector is None:
            query_vector = self.embed(question, parent)
        timings["embedding"] = _ms_since(started)
        text = self.tracing.content(question)
        attributes: dict[str, Any] = {
            **kind(attr.KIND_RETRIEVER, "retriever"),
            attr.TOP_K: settings.dense_top_k,
            attr.TOP_N: top_n,
            attr.FUSION: "rrf",
            attr.RRF_K: settings.rrf_k,
            attr.MMR_ENABLED: use_mmr,
        }
        if settings.score_threshold is not None:
            attributes[attr.THRESHOLD] = settings.score_threshold
        if text is not None:
            attributes[attr.INPUT_VALUE] = text
        with (
            tracer.start_as_current_span(attr.RETRIEVE, parent, attributes=attributes) as span,
            errors_recorded(span),
        ):
            legs_started = time.perf_counter()
            dense_leg = partial(
                self._leg,
                attr.RETRIEVE_DENSE,
                self.index.search_dense,
                collection,
                query_vector,
                settings.dense_top_k,
            )
            dense_future = None
            if settings.legs != "sparse" and self.index.concurrent_search:
                dense_future = self._pool.submit(copy_context().run, dense_leg)
            sparse: list[LegHit] = []
            if settings.legs != "dense":
                sparse = self._leg(
                    attr.RETRIEVE_SPARSE,
                    self.index.search_sparse,
                    collection,
                    question,
                    settings.sparse_top_k,
                )
            dense: list[LegHit] = []
            if dense_future is not None:
                dense = dense_future.result()
            elif settings.legs != "sparse":
                dense = dense_leg()
            timings["search"] = _ms_since(legs_started)
            if use_mmr or settings.score_threshold is not None:  # they look at every candidate
                candidates = self._fuse(collection, dense, sparse)
                chunks = self._rerank(collection, query_vector, candidates, top_n, use_mmr)
            else:
                candidates = self._fuse(collection, dense, sparse, limit=top_n)
                chunks = candidates[:top_n]
            self._record(span, chunks)
        timings["total"] = _ms_since(started)
        metrics.RETRIEVAL.observe((timings["total"] - timings["embedding"]) / 1000)
        return RetrievalResult(question, collection, dense, sparse, candidates, chunks, timings)

    def _leg(
        self,
        name: str,
        search: Callable[[str, Any, int], list[LegHit]],
        collection: str,
        query: Any,
        limit: int,
    ) -> list[LegHit]:
        attributes: dict[str, Any] = {**kind(attr.KIND_RETRIEVER, "retriever"), attr.TOP_K: limit}
        with (
            self.tracing.tracer.start_as_current_span(name, attributes=attributes) as span,
            errors_recorded(span),
        ):
            hits = search(collection, query, limit)
            # one JSON string, not two list attributes: the SDK validates list items one by one
            ranked = ",".join(f"[{h.point_id},{h.score:.6g}]" for h in hits)
            span.set_attributes({attr.HITS: len(hits), attr.LEG_HITS: f"[{ranked}]"})
            return hits

    def _record(self, span: Span, chunks: list[ScoredChunk]) -> None:
        """The final chunks as OpenInference documents and, for Langfuse, as `output.value`."""
        recorded: dict[str, Any] = {attr.HITS: len(chunks), attr.EMPTY_RETRIEVAL: not chunks}
        documents = []
        for i, scored in enumerate(chunks):
            prefix = f"{attr.RETRIEVAL_DOCUMENTS}.{i}.document"
            metadata = {
                **self._recordable(scored.chunk.metadata),
                "document_id": scored.chunk.document_id,
                "dense_rank": scored.dense_rank,
                "sparse_rank": scored.sparse_rank,
            }
            recorded[f"{prefix}.id"] = scored.chunk.id
            recorded[f"{prefix}.score"] = scored.score
            recorded[f"{prefix}.metadata"] = json.dumps(metadata)
            if (content := self.tracing.content(scored.chunk.text)) is not None:
                recorded[f"{prefix}.content"] = content
            documents.append(
                {
                    "id": scored.chunk.id,
                    "score": scored.score,
                    "source": scored.chunk.source,
                    "content": scored.chunk.text,
                }
            )
        if (output := self.tracing.content(json.dumps(documents))) is not None:
            recorded[attr.OUTPUT_VALUE] = output
            recorded[attr.OUTPUT_MIME_TYPE] = "application/json"
        span.set_attributes(recorded)

    def _recordable(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """A chunk's metadata as a span may hold it: with content capture off, only what names
        the chunk (its file and page), never what it says (headings, titles)."""
        if self.tracing.capture:
            return dict(metadata)
        return {k: v for k, v in metadata.items() if k in NON_CONTENT_METADATA}

    def all_candidates(self, result: RetrievalResult) -> list[ScoredChunk]:
        """Every fused candidate of `result`, resolved against the store. Serving resolves only
        the chunks it returns; evaluation ranks documents beyond them. A multi-source result
        (collections joined by commas) already holds all of its fused chunks."""
        if "," in result.collection:
            return result.candidates
        return self._fuse(result.collection, result.dense, result.sparse)

    def _fuse(
        self,
        collection: str,
        dense: list[LegHit],
        sparse: list[LegHit],
        limit: int | None = None,
    ) -> list[ScoredChunk]:
        """The fused candidates, best first, resolved against the store; with `limit`, only
        until that many live chunks are found. Looking up all ~80 candidates cost 3.2 ms of a
        7.5 ms retrieval at 100k chunks, for the 4 the prompt gets."""
        fused = reciprocal_rank_fusion(
            [[h.point_id for h in dense], [h.point_id for h in sparse]], k=self.settings.rrf_k
        )
        ids = [point for point, _ in fused]
        if limit is None:
            live = self.store.chunks_by_point_ids(collection, ids)
        else:
            live, looked = {}, 0
            while len(live) < limit and looked < len(ids):
                # a stale point (a replaced or deleted version, until the sync drops it) is
                # skipped: the page after it is looked up too
                page = ids[looked : looked + max(limit - len(live), 1) + 2]
                live |= self.store.chunks_by_point_ids(collection, page)
                looked += len(page)
            fused = fused[:looked]
        by_dense = {h.point_id: h for h in dense}
        by_sparse = {h.point_id: h for h in sparse}
        candidates = []
        for point_id, score in fused:
            chunk = live.get(point_id)
            if chunk is None:  # a stale point of a replaced or deleted version
                continue
            d, s = by_dense.get(point_id), by_sparse.get(point_id)
            candidates.append(
                ScoredChunk(
                    chunk=chunk,
                    score=score,
                    dense_rank=d.rank if d else None,
                    dense_score=d.score if d else None,
                    sparse_rank=s.rank if s else None,
                    sparse_score=s.score if s else None,
                )
            )
        return candidates

    def _rerank(
        self,
        collection: str,
        query_vector: np.ndarray,
        candidates: list[ScoredChunk],
        top_n: int,
        use_mmr: bool,
    ) -> list[ScoredChunk]:
        """Score every candidate by cosine to the question, drop those under the threshold,
        then take the top-n by fused rank, or by MMR over the survivors."""
        vectors = self.index.vectors(collection, [c.chunk.point_id for c in candidates])
        scored = [
            replace(c, similarity=float(vectors[c.chunk.point_id] @ query_vector))
            for c in candidates
            if c.chunk.point_id in vectors
        ]
        threshold = self.settings.score_threshold
        if threshold is not None:
            scored = [c for c in scored if c.similarity is not None and c.similarity >= threshold]
        if not use_mmr or not scored:
            return scored[:top_n]
        with self.tracing.tracer.start_as_current_span(attr.MMR) as span:
            span.set_attribute(attr.MMR_LAMBDA, self.settings.mmr_lambda)
            span.set_attribute(attr.MMR_CANDIDATES, len(scored))
            matrix = np.vstack([vectors[c.chunk.point_id] for c in scored])
            order = maximal_marginal_relevance(
                query_vector, matrix, top_n, self.settings.mmr_lambda
            )
            span.set_attribute(attr.MMR_SELECTED, [scored[i].chunk.id for i in order])
        return [scored[i] for i in order]


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
