"""Evaluation metrics against known values, and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from ragline.evals.compare import compare_metric, paired_bootstrap
from ragline.evals.metrics import (
    citation_validity,
    exact_match,
    gold_in_answer,
    ir_scores,
    is_refusal,
    normalize_answer,
    token_f1,
)


def test_squad_normalisation_drops_case_punctuation_and_articles() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"


def test_exact_match_and_f1_follow_squad() -> None:
    """EM against any gold; F1 = harmonic mean of token precision and recall."""
    assert exact_match("the Eiffel tower", ["Eiffel Tower", "tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    assert token_f1("Eiffel", ["Eiffel Tower"]) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("nothing shared", ["Eiffel Tower"]) == 0.0
    assert gold_in_answer("It is the Eiffel Tower, of course.", ["eiffel tower"]) == 1.0


def test_citation_validity_is_the_share_of_markers_that_name_a_passage() -> None:
    assert citation_validity(3, 1) == 0.75
    assert citation_validity(0, 0) is None


def test_ir_scores_match_hand_computed_values() -> None:
    """Relevant d2 at rank 2 of 3: hit@1 0, hit@5 1, MRR 0.5, nDCG@10 = 1/log2(3)."""
    scores = ir_scores(["d1", "d2", "d3"], {"d2": 1})
    assert scores["hit@1"] == 0.0 and scores["hit@5"] == 1.0
    assert scores["mrr@10"] == pytest.approx(0.5)
    assert scores["ndcg@10"] == pytest.approx(1 / np.log2(3))
    assert scores["recall@5"] == 1.0
    assert ir_scores([], {"d2": 1})["mrr@10"] == 0.0
    beyond = ir_scores([f"x{i}" for i in range(10)] + ["d2"], {"d2": 1})
    assert beyond["mrr@10"] == 0.0  # rank 11 is outside the cut-off


def test_refusals_are_recognised_and_answers_are_not() -> None:
    for text in (
        "I do not know.",
        "I don't know based on the passages.",
        "The passages do not mention who ruled Normandy.",
        "This information is not provided in the context [1].",
        "I cannot answer that from the given passages.",
    ):
        assert is_refusal(text), text
    assert is_refusal("", "no_context")
    for text in ("Rollo was the Norse leader [1].", "The Normans knew Latin and Norse [2]."):
        assert not is_refusal(text), text


def test_bootstrap_interval_excludes_zero_for_a_consistent_drop() -> None:
    """Every item 0.1 worse: the mean delta is −0.1 and the interval is tight around it."""
    base = np.linspace(0.5, 0.9, 50)
    delta, low, high = paired_bootstrap(base, base - 0.1)
    assert (
        delta == pytest.approx(-0.1) and low == pytest.approx(-0.1) and high == pytest.approx(-0.1)
    )


def test_bootstrap_interval_covers_zero_for_noise() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(40)
    _, low, high = paired_bootstrap(base, base + rng.normal(0, 0.05, 40))
    assert low < 0 < high


def test_regression_gate_needs_significance_and_size() -> None:
    """A certain drop of 0.1 regresses at max_drop 0.02 but not at 0.2; noise never does."""
    base = {f"q{i}": 0.8 for i in range(30)}
    worse = {k: v - 0.1 for k, v in base.items()}
    comparison = compare_metric("f1", base, worse)
    assert comparison is not None and comparison.worse == 30 and comparison.better == 0
    assert comparison.regressed(0.02) and not comparison.regressed(0.2)
    assert compare_metric("f1", base, {"other": 1.0}) is None
