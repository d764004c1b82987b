"""Token usage: the one fallback for when the LLM server reports no prompt tokens."""

from __future__ import annotations

from ragline.domain import Usage


def test_usage_without_prompt_tokens_is_completed_with_our_count_and_marked_estimated() -> None:
    """llama.cpp streams no usage: the prompt count is ragline's, the total is the sum."""
    usage = Usage(None, 7, None, estimated=True).or_estimate(lambda: 40)
    assert usage == Usage(40, 7, 47, estimated=True)
    assert Usage(None, None, None).or_estimate(lambda: 40) == Usage(40, None, 40, estimated=True)


def test_reported_usage_is_kept_and_the_prompt_is_not_counted() -> None:
    """A server that reports usage is believed, and the tokenizer is not run for nothing."""
    reported = Usage(12, 3, 15)

    def count() -> int:
        raise AssertionError("counted a prompt the server had already counted")

    assert reported.or_estimate(count) is reported
