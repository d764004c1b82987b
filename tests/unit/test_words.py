"""Content words: the one stop-word list behind attribution and the doctor's overlap rules."""

from __future__ import annotations

from ragline.ops.doctor import overlap
from ragline.words import content_words


def test_content_words_drop_stop_words_and_words_under_three_characters() -> None:
    """Lowercased runs of three or more letters or digits count; stop words and "of", "is" do not."""
    assert content_words("What is the MTU of their VPN gateway, in 2024?") == {
        "mtu",
        "vpn",
        "gateway",
        "2024",
    }


def test_doctor_overlap_counts_the_same_words_as_attribution() -> None:
    """The doctor's overlap share is over `content_words`, so function words do not raise it."""
    assert overlap("They also said their VPN gateway", "the gateway") == 1 / 3
