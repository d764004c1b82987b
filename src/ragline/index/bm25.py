"""BM25 sparse vectors, the same for every index backend (Qdrant Edge's tokenizer and hashing).

The document side weight of a term is tf·(k1+1) / (tf + k1·(1 − b + b·dl/avgdl)) (Robertson &
Zaragoza 2009), computed with the collection's `avg_len`; the index multiplies by IDF at query
time (`Modifier.Idf`), so IDF always reflects the live corpus. Both backends encode through this
class, so the same text gets the same sparse vector whichever engine stores it.
"""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge as qe

from ragline.config import IndexSettings

_LENGTH_K = 1000.0  # with b=0, weight = tf·(k+1)/(tf+k); a large k makes it invertible exactly


class Bm25Encoder:
    def __init__(self, settings: IndexSettings) -> None:
        self.settings = settings
        self._query = self._bm25(avg_len=1.0)
        self._length = qe.Bm25(qe.Bm25Config(k=_LENGTH_K, b=0.0, avg_len=1.0))

    def document(self, text: str, avg_len: float) -> qe.SparseVector:
        return self._bm25(max(avg_len, 1.0)).embed_document(text)

    def query(self, text: str) -> qe.SparseVector:
        """Query terms (weight 1 each); empty when no word survives stop words."""
        return self._query.embed_query(text)

    def term_counts(self, texts: Sequence[str]) -> list[int]:
        """BM25 document lengths (terms after stop words), inverted from a b=0 weight."""
        return [
            round(
                sum(
                    v * _LENGTH_K / (_LENGTH_K + 1 - v)
                    for v in self._length.embed_document(t).values
                )
            )
            for t in texts
        ]

    def _bm25(self, avg_len: float) -> qe.Bm25:
        return qe.Bm25(
            qe.Bm25Config(k=self.settings.bm25_k1, b=self.settings.bm25_b, avg_len=avg_len)
        )
