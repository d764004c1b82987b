"""A heuristic detector of prompt injection in retrieved text (OWASP LLM01, indirect injection).

Retrieved passages are data; a passage that addresses the model ("ignore previous
instructions", "you are now …", chat-template tokens) is a sign that someone planted
instructions in a document. This module names such passages so the trace, the metric
`ragline_prompt_injection_suspected_total` and `ragline doctor` can show them. It does not
decide what the model sees: flagged passages are still given to the model, delimited as data
like every other (see docs/reliability.md for why flag-not-drop).

The detector is a list of regular expressions, each with a name, so every flag says which
rule fired and on what text. Rules are "strong" (one match flags the text: phrasing that
ordinary documents almost never use) or "weak" (two different weak rules must match: each is
common in how-to prose on its own, "you are now logged in", "reply with a 404"). It is a
tripwire for the common phrasings, not a defence: a paraphrase, another language or an
encoding evades it; the delimiting in `context.py` and the system prompt are the defence.
Measured on `bench/data/injection.jsonl` by `bench/injection.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TARGET = (
    r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance|constraints"
    r"|programming|orders)"
)
_FLAGS = re.IGNORECASE | re.MULTILINE

STRONG: dict[str, re.Pattern[str]] = {
    # "ignore all previous instructions", "disregard the above rules", "forget your guidelines"
    "ignore_instructions": re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}?"
        r"\b(?:previous|prior|above|earlier|preceding|foregoing|all|any|your|system|original)\b"
        rf"[^.\n]{{0,25}}?\b{_TARGET}\b",
        _FLAGS,
    ),
    # "disregard the above.", "ignore everything above and …" (not "disregard the above table")
    "disregard_above": re.compile(
        r"\b(?:ignore|disregard|forget)\s+(?:the\s+|everything\s+|anything\s+|all\s+)?"
        r"(?:above|before\s+this|so\s+far|previously)(?=\s*(?:[.,;:!]|and\b|$))",
        _FLAGS,
    ),
    # "New instructions:", "Updated system instructions:", "IMPORTANT INSTRUCTION:"
    "new_instructions": re.compile(
        r"\b(?:new|updated|revised|real|true|actual|secret|hidden|important|urgent|additional)"
        r"\s+(?:system\s+)?instructions?\s*:",
        _FLAGS,
    ),
    # chat-template control tokens of ChatML, Llama 2/3, Mistral, Alpaca
    "chat_markup": re.compile(
        r"<\|\s*(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id"
        r"|end_header_id|begin_of_text)\s*\|?>|\[/?INST\]|<</?SYS>>",
        _FLAGS,
    ),
    # "### Instruction:" / "### System:" / "### Response:" headers (Alpaca-style prompts)
    "instruction_header": re.compile(
        r"^\s*#{2,}\s*(?:instruction|system|response|new\s+task)s?\s*:", _FLAGS
    ),
    # the delimiters of our own prompt: a document has no reason to contain them
    "delimiter_lookalike": re.compile(r"[<\uff1c\ufe64]\s*/?\s*passages?\b", _FLAGS),
    # a document speaking to the model reading it
    "addressed_to_model": re.compile(
        r"\b(?:if\s+you\s+are\s+an?|note\s+to|message\s+for|dear|attention\s*[,:!-])\s*"
        r"(?:the\s+|any\s+|all\s+)?(?:AI|LLMs?|(?:large\s+)?language\s+models?|chatbots?"
        r"|AI\s+assistants?)\b(?!\s+(?:research|researcher|engineer|team|product))",
        _FLAGS,
    ),
}

WEAK: dict[str, re.Pattern[str]] = {
    "role_reassignment": re.compile(
        r"\b(?:you\s+are\s+now|from\s+now\s+on,?\s+you|pretend\s+(?:to\s+be|you\s+are)"
        r"|act\s+as\s+(?:if\s+you|an?\s+unrestricted)|role-?play\s+as)\b",
        _FLAGS,
    ),
    "system_prompt": re.compile(
        r"\b(?:system|developer|hidden|initial)\s+(?:prompt|message)s?\b"
        r"|\byour\s+(?:instructions|prompt|guidelines|rules)\b",
        _FLAGS,
    ),
    "output_directive": re.compile(
        r"\b(?:reply|respond|answer)\s+(?:only\s+|just\s+|solely\s+)?with\b"
        r"|\b(?:say|print|output|write|repeat)\s+(?:only|just|exactly|verbatim)\b"
        r"|\b(?:your|the)\s+(?:answer|reply|response)\s+must\b",
        _FLAGS,
    ),
    "role_line": re.compile(r"^\s*(?:system|assistant|user|human)\s*:", _FLAGS),
}


@dataclass(frozen=True)
class Match:
    """One rule that fired, and the text it matched (document content: trace it only when
    content capture is on)."""

    rule: str
    text: str


def detect(text: str) -> list[Match]:
    """The rules that make `text` suspected, or [] when it is not: any strong rule, or at least
    two different weak rules."""
    strong = _matches(STRONG, text)
    weak = _matches(WEAK, text)
    return strong + weak if strong or len(weak) >= 2 else []


def _matches(rules: dict[str, re.Pattern[str]], text: str) -> list[Match]:
    found = ((name, pattern.search(text)) for name, pattern in rules.items())
    return [Match(name, match.group(0)) for name, match in found if match is not None]


@dataclass(frozen=True)
class Suspect:
    """A passage the detector flagged: its number in the prompt, its chunk and the rules."""

    n: int
    chunk_id: str
    matches: list[Match]

    @property
    def rules(self) -> list[str]:
        return [m.rule for m in self.matches]


def screen(passages: Iterable[tuple[int, str, str]]) -> list[Suspect]:
    """The suspected passages among (number, chunk id, text). Callers pass the file name
    with the text: a name is as attacker-controlled as the content."""
    suspects = []
    for n, chunk_id, text in passages:
        if matches := detect(text):
            suspects.append(Suspect(n, chunk_id, matches))
    return suspects
