"""Reciprocal Rank Fusion."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Key]], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[Key, float]]:
    """Fuse ranked lists: score(d) = Σ_lists 1 / (k + rank(d)), ranks counted from 1.

    Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
    Rank Learning Methods" (SIGIR 2009). k=60 is the paper's constant: it damps the weight of the
    very top ranks so that one leg's first hit cannot outvote agreement between legs. Only ranks
    are used, so the legs' incomparable scores (cosine vs BM25) need no normalisation.
    Ties keep the order of first appearance (earlier lists first).

    `weights` (one per list, default 1) scale each list's contribution: weighted RRF, used to
    favour one source over another when fusing across collections.
    """
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[Key, float] = {}
    for index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[index]
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)
