"""Reciprocal Rank Fusion and Maximal Marginal Relevance."""

from __future__ import annotations

import numpy as np
import pytest

from ragline.retrieval.fusion import reciprocal_rank_fusion
from ragline.retrieval.mmr import maximal_marginal_relevance


def test_rrf_scores_are_sums_of_reciprocal_ranks() -> None:
    """score = Σ 1/(k+rank) with ranks from 1; agreement beats a single first place."""
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["d"] == pytest.approx(1 / 62)
    assert next(iter(fused)) == "b"


def test_rrf_ties_keep_first_appearance_order() -> None:
    """Equal scores keep the order in which they first appeared."""
    assert [key for key, _ in reciprocal_rank_fusion([["x"], ["y"]], k=60)] == ["x", "y"]


def test_rrf_of_nothing_is_empty() -> None:
    assert reciprocal_rank_fusion([[], []]) == []


def test_mmr_with_lambda_one_is_relevance_order() -> None:
    """λ=1 ignores redundancy: the most similar candidates win."""
    query = np.array([1.0, 0.0])
    candidates = np.array([[0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
    assert maximal_marginal_relevance(query, candidates, 3, lambda_=1.0) == [1, 2, 0]


def test_mmr_drops_a_near_duplicate_for_a_novel_candidate() -> None:
    """With λ=0.3 the second pick is the diverse candidate, not the duplicate of the first."""
    query = np.array([1.0, 0.0])
    duplicate = np.array([0.999, 0.0447])
    novel = np.array([0.6, 0.8])
    candidates = np.vstack([np.array([1.0, 0.0]), duplicate / np.linalg.norm(duplicate), novel])
    assert maximal_marginal_relevance(query, candidates, 2, lambda_=0.3) == [0, 2]


def test_mmr_returns_at_most_the_candidates() -> None:
    assert maximal_marginal_relevance(np.ones(2), np.ones((1, 2)), 5) == [0]
    assert maximal_marginal_relevance(np.ones(2), np.zeros((0, 2)), 5) == []
