"""LLM-as-judge: faithfulness, answer relevance and correctness, each a 1-5 grade with a one-line
reason, through the same OpenAI-compatible client as generation and its own (configurable)
judge model.

The prompt is versioned (`JUDGE_PROMPT_VERSION`, stored with every graded item): changing the
wording changes the scores, so runs graded by different versions must not be compared blindly.
The reply is constrained to `VERDICT_SCHEMA` where the server supports structured output
(`eval.judge_response_format`); whatever comes back is still validated, and a judge that
returns garbage yields a recorded parse failure (`judge_parse_failure: 1` and the raw text),
never a crash and never a silent zero.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ragline import jsonbody
from ragline.generation.llm import ChatClient, Delta, structured_output

CRITERIA = ("faithfulness", "answer_relevance", "correctness")
JUDGE_PROMPT_VERSION = 2
SYSTEM = (
    "You grade answers of a question-answering system. Reply with one JSON object and nothing "
    "else. For each criterion give an integer score from 1 (bad) to 5 (good) and a reason of "
    "at most one short sentence:\n"
    "- faithfulness: every claim of the answer is supported by the context passages;\n"
    "- answer_relevance: the answer addresses the question;\n"
    "- correctness: the answer agrees with the reference answer (score 3 when there is none).\n"
    'Example: {"faithfulness": {"score": 4, "reason": "One date is not in the context."}, '
    '"answer_relevance": {"score": 5, "reason": "Answers the question."}, '
    '"correctness": {"score": 3, "reason": "No reference."}}'
)
_GRADE = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["score", "reason"],
}
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": dict.fromkeys(CRITERIA, _GRADE),
    "required": list(CRITERIA),
}
RESPONSE_FORMATS = {
    dialect: structured_output(dialect, "verdict", VERDICT_SCHEMA)
    for dialect in ("json_schema", "json_object", "none")
}
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    scores: dict[str, float]  # criterion -> 0..1 ((grade - 1) / 4)
    raw: str
    error: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)


def parse_verdict(text: str) -> Verdict:
    """The JSON object holding the three 1-5 grades (with reasons), normalised to 0..1.
    Bare integers (`{"faithfulness": 4, …}`) are accepted too: small models drop the nesting."""
    match = _OBJECT.search(text)
    values: Any = None
    if match:
        try:
            values = jsonbody.loads(match.group(0))
        except ValueError:
            values = None
    if isinstance(values, dict):
        scores, reasons = {}, {}
        for criterion in CRITERIA:
            grade = values.get(criterion)
            reason = ""
            if isinstance(grade, dict):
                reason = str(grade.get("reason") or "")
                grade = grade.get("score")
            if isinstance(grade, bool) or not isinstance(grade, int | float) or not 1 <= grade <= 5:
                break
            scores[criterion] = (float(grade) - 1) / 4
            reasons[criterion] = reason[:300]
        else:
            return Verdict(scores, text, None, reasons)
    return Verdict({}, text, f"judge reply is not a JSON verdict: {text[:200]!r}")


class Judge:
    def __init__(
        self, chat: ChatClient, max_tokens: int = 256, response_format: str = "json_object"
    ) -> None:
        self.chat = chat
        self.max_tokens = max_tokens
        self.response_format = RESPONSE_FORMATS[response_format]

    @property
    def model(self) -> str:
        return self.chat.settings.model

    def grade(
        self, question: str, context: Sequence[str], answer: str, references: Sequence[str]
    ) -> Verdict:
        passages = (
            "\n\n".join(f"[{i}] {text}" for i, text in enumerate(context, start=1)) or "(none)"
        )
        reference = " | ".join(references) or "(none)"
        user = (
            f"Question: {question}\n\nContext:\n{passages}\n\nReference answer: {reference}\n\n"
            f"Answer to grade: {answer}\n\nJSON verdict:"
        )
        parts = [
            event.text
            for event in self.chat.stream(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                self.max_tokens,
                0.0,
                self.response_format,
            )
            if isinstance(event, Delta)
        ]
        return parse_verdict("".join(parts))
