"""Maximal Marginal Relevance."""

from __future__ import annotations

import numpy as np


def maximal_marginal_relevance(
    query: np.ndarray, candidates: np.ndarray, limit: int, lambda_: float = 0.7
) -> list[int]:
    """Pick `limit` rows of `candidates` balancing relevance and novelty; returns row indices.

    Carbonell & Goldstein, "The Use of MMR, Diversity-Based Reranking..." (SIGIR 1998):
    next = argmax_i [ λ·sim(q, d_i) − (1−λ)·max_{j∈selected} sim(d_i, d_j) ].
    λ=1 is pure relevance, λ=0 pure diversity; 0.7 keeps relevance first while dropping
    near-duplicate chunks (e.g. overlapping neighbours). Vectors are L2-normalised, so
    similarity is a dot product.
    """
    if len(candidates) == 0 or limit <= 0:
        return []
    relevance = candidates @ query
    pairwise = candidates @ candidates.T
    selected: list[int] = [int(np.argmax(relevance))]
    while len(selected) < min(limit, len(candidates)):
        redundancy = pairwise[:, selected].max(axis=1)
        scores = lambda_ * relevance - (1.0 - lambda_) * redundancy
        scores[selected] = -np.inf
        selected.append(int(np.argmax(scores)))
    return selected
