"""Parsing LLM-as-judge replies."""

from __future__ import annotations

from ragline.evals.judge import parse_verdict


def test_a_json_verdict_is_normalised_to_0_1() -> None:
    verdict = parse_verdict('Sure! {"faithfulness": 5, "relevance": 3, "correctness": 1} done')
    assert verdict.error is None
    assert verdict.scores == {
        "judge_faithfulness": 1.0,
        "judge_relevance": 0.5,
        "judge_correctness": 0.0,
    }


def test_garbage_out_of_range_and_missing_keys_are_parse_failures() -> None:
    """No crash, no zeros: an error and no scores."""
    for reply in (
        "The answer is good.",
        '{"faithfulness": 9, "relevance": 3, "correctness": 1}',
        '{"faithfulness": 4}',
        "{not json}",
    ):
        verdict = parse_verdict(reply)
        assert verdict.scores == {} and verdict.error is not None
