"""LLM-as-judge: faithfulness, answer relevance and correctness on a 1-5 scale, through the same
OpenAI-compatible client as generation, with its own (configurable) judge model.

A judge that answers garbage yields a recorded parse failure (`judge_parse_failure: 1` and
the raw text in the item's error), never a crash and never a silent zero.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragline.generation.llm import ChatClient, Delta

CRITERIA = ("faithfulness", "relevance", "correctness")
SYSTEM = (
    "You grade answers of a question-answering system. Reply with one JSON object and nothing "
    'else, like {"faithfulness": 4, "relevance": 5, "correctness": 3}. Each value is an integer '
    "from 1 (bad) to 5 (good). faithfulness: every claim of the answer is supported by the "
    "context. relevance: the answer addresses the question. correctness: the answer agrees with "
    "the reference answer (use 3 when there is no reference)."
)
_OBJECT = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class Verdict:
    scores: dict[str, float]  # criterion -> 0..1 ((grade - 1) / 4)
    raw: str
    error: str | None = None


def parse_verdict(text: str) -> Verdict:
    """The first JSON object holding the three integer grades 1-5, normalised to 0..1."""
    for candidate in _OBJECT.findall(text):
        try:
            values = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(values, dict):
            continue
        grades = {k: values.get(k) for k in CRITERIA}
        if all(isinstance(v, int | float) and 1 <= v <= 5 for v in grades.values()):
            return Verdict({f"judge_{k}": (float(v) - 1) / 4 for k, v in grades.items()}, text)  # type: ignore[arg-type]
    return Verdict({}, text, f"judge reply is not a JSON verdict: {text[:200]!r}")


class Judge:
    def __init__(self, chat: ChatClient, max_tokens: int = 96) -> None:
        self.chat = chat
        self.max_tokens = max_tokens

    def grade(
        self, question: str, context: Sequence[str], answer: str, references: Sequence[str]
    ) -> Verdict:
        passages = (
            "\n\n".join(f"[{i}] {text}" for i, text in enumerate(context, start=1)) or "(none)"
        )
        reference = " | ".join(references) or "(none)"
        user = f"Question: {question}\n\nContext:\n{passages}\n\nReference answer: {reference}\n\nAnswer to grade: {answer}\n\nJSON grades:"
        parts = [
            event.text
            for event in self.chat.stream(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                self.max_tokens,
                0.0,
            )
            if isinstance(event, Delta)
        ]
        return parse_verdict("".join(parts))
