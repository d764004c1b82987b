"""Parsing LLM-as-judge replies: grades with reasons, normalised to 0..1; garbage recorded."""

from __future__ import annotations

from ragline.evals.judge import RESPONSE_FORMATS, VERDICT_SCHEMA, parse_verdict


def test_a_json_verdict_with_reasons_is_normalised_to_0_1() -> None:
    reply = (
        'Sure! {"faithfulness": {"score": 5, "reason": "All in [1]."}, '
        '"answer_relevance": {"score": 3, "reason": "Partly."}, '
        '"correctness": {"score": 1, "reason": "Wrong year."}} done'
    )
    verdict = parse_verdict(reply)
    assert verdict.error is None
    assert verdict.scores == {"faithfulness": 1.0, "answer_relevance": 0.5, "correctness": 0.0}
    assert verdict.reasons["correctness"] == "Wrong year."


def test_bare_integer_grades_are_accepted() -> None:
    verdict = parse_verdict('{"faithfulness": 4, "answer_relevance": 5, "correctness": 3}')
    assert verdict.scores == {"faithfulness": 0.75, "answer_relevance": 1.0, "correctness": 0.5}
    assert verdict.reasons == {"faithfulness": "", "answer_relevance": "", "correctness": ""}


def test_garbage_out_of_range_and_missing_keys_are_parse_failures() -> None:
    """No crash, no zeros: an error and no scores."""
    for reply in (
        "The answer is good.",
        '{"faithfulness": 9, "answer_relevance": 3, "correctness": 1}',
        '{"faithfulness": {"score": 4, "reason": "ok"}}',
        '{"faithfulness": true, "answer_relevance": 3, "correctness": 1}',
        "{not json}",
        "",
    ):
        verdict = parse_verdict(reply)
        assert verdict.scores == {} and verdict.error is not None, reply


def test_the_schema_and_response_formats_name_every_criterion() -> None:
    assert VERDICT_SCHEMA["required"] == ["faithfulness", "answer_relevance", "correctness"]
    assert RESPONSE_FORMATS["json_object"] == {"type": "json_object", "schema": VERDICT_SCHEMA}
    assert RESPONSE_FORMATS["json_schema"]["json_schema"]["schema"] is VERDICT_SCHEMA
    assert RESPONSE_FORMATS["none"] is None
