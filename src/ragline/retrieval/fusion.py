"""Reciprocal Rank Fusion."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Key]], k: int = 60
) -> list[tuple[Key, float]]:
    """Fuse ranked lists: score(d) = Σ_lists 1 / (k + rank(d)), ranks counted from 1.

    Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
    Rank Learning Methods" (SIGIR 2009). k=60 is the paper's constant: it damps the weight of the
    very top ranks so that one leg's first hit cannot outvote agreement between legs. Only ranks
    are used, so the legs' incomparable scores (cosine vs BM25) need no normalisation.
    Ties keep the order of first appearance (earlier lists first).
    """
    scores: dict[Key, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)
