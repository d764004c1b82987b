"""The index Protocol: dense vectors + BM25 per collection, addressed by integer point ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ragline.domain import LegHit


@dataclass(frozen=True)
class IndexPoint:
    """What the index stores for one chunk: its dense vector, its text (for BM25) and payload."""

    point_id: int
    vector: np.ndarray
    text: str
    payload: dict[str, Any]


class VectorIndex(Protocol):
    """Hybrid index. `avg_len` is the collection's mean BM25 length in terms (from the store).

    `concurrent_search`: whether two searches from two threads overlap. A server's do (the
    thread waits on the network); an in-process engine that holds the GIL runs them one after
    the other anyway, and the thread handoff only adds its cost."""

    concurrent_search: bool

    def upsert(self, collection: str, points: Sequence[IndexPoint], avg_len: float) -> None: ...

    def delete_document(
        self, collection: str, document_id: str, keep_hash: str | None = None
    ) -> None:
        """Remove a document's points; with `keep_hash`, only those of other content versions."""

    def search_dense(self, collection: str, vector: np.ndarray, limit: int) -> list[LegHit]: ...

    def search_sparse(self, collection: str, text: str, limit: int) -> list[LegHit]: ...

    def vectors(self, collection: str, point_ids: Sequence[int]) -> dict[int, np.ndarray]: ...

    def term_counts(self, texts: Sequence[str]) -> list[int]:
        """BM25 document lengths (terms after stop words), as the index counts them."""

    def count(self, collection: str) -> int: ...

    def drop(self, collection: str) -> None:
        """Remove the collection's points and structures (`ragline reindex` rebuilds them)."""

    def cursor(self) -> int:
        """The last store index-log sequence number applied to this index."""

    def optimize(self) -> bool:
        """Build the search structures (HNSW) for what was written; blocking. Returns whether
        anything was built. A Qdrant server does this in the background by itself."""

    def set_cursor(self, seq: int) -> None:
        """Make every write so far durable, then record `seq` as applied."""

    def close(self) -> None: ...
