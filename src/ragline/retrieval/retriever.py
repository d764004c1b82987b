"""Hybrid retrieval: dense and BM25 legs in parallel, RRF, optional threshold and MMR, top-n."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from ragline.config import RetrievalSettings
from ragline.domain import LegHit, RetrievalResult, ScoredChunk
from ragline.index.base import VectorIndex
from ragline.models.embedders import Embedder
from ragline.retrieval.fusion import reciprocal_rank_fusion
from ragline.retrieval.mmr import maximal_marginal_relevance
from ragline.store import Store


class HybridRetriever:
    """Runs both legs, fuses them and resolves hits against the store (the source of truth)."""

    def __init__(
        self, embedder: Embedder, index: VectorIndex, store: Store, settings: RetrievalSettings
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.store = store
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ragline-retrieve")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def retrieve(
        self, question: str, collection: str, top_n: int | None = None, mmr: bool | None = None
    ) -> RetrievalResult:
        settings = self.settings
        timings: dict[str, float] = {}
        started = time.perf_counter()
        query_vector = self.embedder.embed_query(question)
        timings["embedding"] = _ms_since(started)

        legs_started = time.perf_counter()
        dense_future = self._pool.submit(
            self.index.search_dense, collection, query_vector, settings.dense_top_k
        )
        sparse = self.index.search_sparse(collection, question, settings.sparse_top_k)
        dense = dense_future.result()
        timings["search"] = _ms_since(legs_started)

        candidates = self._fuse(collection, dense, sparse)
        use_mmr = settings.mmr if mmr is None else mmr
        if candidates and (use_mmr or settings.score_threshold is not None):
            chunks = self._rerank(
                collection, query_vector, candidates, top_n or settings.top_n, use_mmr
            )
        else:
            chunks = candidates[: top_n or settings.top_n]
        timings["total"] = _ms_since(started)
        return RetrievalResult(question, collection, dense, sparse, candidates, chunks, timings)

    def _fuse(
        self, collection: str, dense: list[LegHit], sparse: list[LegHit]
    ) -> list[ScoredChunk]:
        fused = reciprocal_rank_fusion(
            [[h.point_id for h in dense], [h.point_id for h in sparse]], k=self.settings.rrf_k
        )
        live = self.store.chunks_by_point_ids(collection, [point for point, _ in fused])
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
        matrix = np.vstack([vectors[c.chunk.point_id] for c in scored])
        order = maximal_marginal_relevance(query_vector, matrix, top_n, self.settings.mmr_lambda)
        return [scored[i] for i in order]


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
