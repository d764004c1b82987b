"""Token budgets: a question holds its worst case before any LLM call and settles what it spent.

Checking the budget before an answer and charging it after let concurrent questions all pass on
a nearly spent budget, and a stream the client cut was never charged. Now a question reserves
the most it can spend (`question_cost`) against its caller's window, atomically (a 429 with
Retry-After when that does not fit), and `Spend.settle` charges what it used and gives back the
rest, once, however the answer ends:

- answered: the answer's usage plus its multi-step calls (`step_tokens`); a cached answer: 0;
- the stream cut by the client, or ended by an error: the prompt's tokens and the steps' (sent
  with the `retrieval` event) plus one token per `token` event streamed (llama.cpp streams one
  token per event), or nothing when no LLM call had begun;
- a JSON answer that failed: nothing (the caller received no text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragline.api.deps import Caller
from ragline.api.errors import ApiError
from ragline.api.limits import RateLimiter, Reservation, parse_limit
from ragline.api.state import AppState
from ragline.factory import Runtime


def question_cost(runtime: Runtime, question: str, mode: str, collections: int) -> int:
    """The most LLM tokens answering `question` can spend: one answer call in plain RAG mode
    (`Answerer.cost_bound`), plus the plan or summary calls of the multi-step modes
    (`MultiStep.cost_bound`)."""
    if mode == "rag" and collections <= 1:
        return runtime.answerer.cost_bound(question)
    return runtime.multistep.cost_bound(question, mode, collections)


def answer_cost(answer: dict[str, Any]) -> int:
    """The LLM tokens an answer object spent: its usage and its multi-step calls; a cached
    answer cost nothing."""
    if (answer.get("cache") or {}).get("answer"):
        return 0
    usage = answer.get("usage") or {}
    total = usage.get("total_tokens")
    if total is None:
        total = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
    return int(total) + int(answer.get("step_tokens") or 0)


class Spend:
    """One question's hold on its caller's token budget: fed the answer's events as they pass
    (`observe`), then settled once (`settle`)."""

    def __init__(self, limiter: RateLimiter, reservation: Reservation | None) -> None:
        self._limiter = limiter
        self._reservation = reservation
        self.prompt_tokens = 0
        self.step_tokens = 0
        self.streamed = 0
        self.answer: dict[str, Any] | None = None

    def observe(self, name: str, data: dict[str, Any]) -> None:
        if name == "retrieval":
            self.prompt_tokens = int(data.get("prompt_tokens") or 0)
            self.step_tokens = int(data.get("step_tokens") or 0)
        elif name == "token":
            self.streamed += 1
        elif name == "done":
            self.answer = data

    def used(self) -> int:
        """What the answer spent so far (see the module docstring)."""
        if self.answer is not None:
            return answer_cost(self.answer)
        answering = self.prompt_tokens + self.streamed if self.prompt_tokens else 0
        return self.step_tokens + answering

    def settle(self) -> None:
        """Charge `used()` and give back the rest of the reservation; later calls do nothing."""
        reservation, self._reservation = self._reservation, None
        if reservation is not None:
            self._limiter.settle(reservation, self.used())


def reserve(
    state: AppState,
    caller: Caller,
    question: str,
    mode: str = "rag",
    sources: Sequence[object] = (),
) -> Spend:
    """Hold the question's worst case in the caller's token budget before any LLM work: a 429
    with Retry-After when what is left of the window cannot hold it, a 422 when even a whole
    window could not."""
    budget = state.runtime.settings.server.token_budget
    if budget is None:
        return Spend(state.limiter, None)
    tokens = question_cost(state.runtime, question, mode, max(1, len(sources)))
    if tokens > parse_limit(budget).amount:
        raise ApiError(
            422,
            f"this question may use up to {tokens} LLM tokens, more than the whole token budget "
            f"of {budget}; ask over fewer collections or in a simpler mode",
            "invalid_request",
        )
    decision, reservation = state.limiter.reserve(budget, f"tokens:{caller.identity}", tokens)
    if reservation is None:
        raise ApiError(
            429,
            f"token budget of {budget} spent: this question may use up to {tokens} tokens and "
            f"{decision.remaining} are left; retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )
    return Spend(state.limiter, reservation)
