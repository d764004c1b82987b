"""Multi-step answers: weighted fusion across sources, plan parsing and its fallbacks, budgets."""

from __future__ import annotations

import time

import pytest

from ragline.generation.multistep import Budget, parse_plan
from ragline.retrieval.fusion import reciprocal_rank_fusion

QUESTION = "Who founded the duchy, and when did the Normans convert?"


def test_weighted_rrf_favours_the_heavier_source() -> None:
    """Each source's first hit ties without weights; a weight of 2 puts its hit first."""
    a, b = ["a1", "a2"], ["b1", "b2"]
    plain = reciprocal_rank_fusion([a, b], k=60)
    assert plain[0][1] == pytest.approx(plain[1][1])
    weighted = reciprocal_rank_fusion([a, b], k=60, weights=[1.0, 2.0])
    assert [key for key, _ in weighted][:2] == ["b1", "b2"]
    assert weighted[0][1] == pytest.approx(2 / 61)
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([a, b], weights=[1.0])


def test_a_valid_plan_is_cleaned_deduplicated_and_capped() -> None:
    reply = (
        'Sure: {"sub_questions": ["Who founded the duchy of Normandy?", '
        '" Who founded the duchy of  Normandy? ", "When did the Normans convert?", "", 7, '
        '"What else?"]}'
    )
    questions, fallback = parse_plan(reply, QUESTION, limit=2)
    assert fallback is None
    assert questions == ["Who founded the duchy of Normandy?", "When did the Normans convert?"]


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("I would split it into two parts.", "no JSON object"),
        ('{"sub_questions": ["Who founded', "no JSON object"),  # cut off by max_tokens
        ('{"sub_questions": ["Who founded?",]}', "not valid JSON"),
        ('{"questions": ["a b c"]}', "no sub_questions list"),
        ('{"sub_questions": ["", "  ", 3]}', "no usable sub-question"),
        ('{"sub_questions": ["...", "?", "12 34"]}', "no usable sub-question"),
        ('["Who?", "When?"]', "no JSON object"),
    ],
)
def test_an_unusable_plan_falls_back_to_the_question(reply: str, why: str) -> None:
    questions, fallback = parse_plan(reply, QUESTION, limit=3)
    assert questions == [QUESTION]
    assert fallback is not None and why in fallback


def test_the_budget_names_the_first_limit_hit_and_the_steps_it_skipped() -> None:
    tokens = Budget(max_tokens=100, deadline=time.monotonic() + 60)
    assert tokens.allows("plan")
    tokens.spend(120)
    assert not tokens.allows("sub_question 2") and not tokens.allows("sub_question 3")
    assert tokens.exceeded == "tokens" and tokens.steps == ["sub_question 2", "sub_question 3"]
    late = Budget(max_tokens=100, deadline=time.monotonic() - 1)
    assert not late.allows("plan") and late.exceeded == "time"
