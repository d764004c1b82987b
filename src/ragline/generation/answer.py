"""The RAG answer: retrieve, assemble a budgeted prompt, stream the model, validate citations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ragline.config import GenerationSettings, LLMSettings
from ragline.domain import Answer, Citation, RetrievalResult, Usage
from ragline.generation.context import attribute_by_overlap, build_context, resolve_citations
from ragline.generation.llm import ChatClient, Completion, Delta
from ragline.generation.prompts import PromptTemplate
from ragline.retrieval.retriever import HybridRetriever

NO_CONTEXT_ANSWER = "I could not find anything about this in the indexed documents."


@dataclass(frozen=True)
class Retrieved:
    """First event of a streamed answer: what was retrieved and which passages the model gets."""

    retrieval: RetrievalResult
    context: list[Citation]


class Answerer:
    """Answers questions over one retriever and one chat model."""

    def __init__(
        self,
        retriever: HybridRetriever,
        chat: Callable[[], ChatClient],
        count_tokens: Callable[[Sequence[str]], list[int]],
        prompt: PromptTemplate,
        generation: GenerationSettings,
        llm: LLMSettings,
    ) -> None:
        self.retriever = retriever
        self._chat = chat
        self.count_tokens = count_tokens
        self.prompt = prompt
        self.generation = generation
        self.llm = llm

    def stream(
        self, question: str, collection: str, top_n: int | None = None
    ) -> Iterator[Retrieved | Delta | Answer]:
        """Retrieve, then `generate`."""
        retrieval = self.retriever.retrieve(question, collection, top_n=top_n)
        yield from self.generate(question, retrieval)

    def generate(
        self, question: str, retrieval: RetrievalResult
    ) -> Iterator[Retrieved | Delta | Answer]:
        """Yield `Retrieved`, then `Delta`s as the answer is generated, then the `Answer`."""
        started = time.perf_counter()
        context = build_context(
            retrieval.chunks, self.count_tokens, self.generation.max_context_tokens
        )
        yield Retrieved(retrieval, context.blocks)
        timings = {"retrieve": retrieval.timings_ms.get("total", 0.0)}
        if not context.blocks:
            yield Delta(NO_CONTEXT_ANSWER)
            timings["total"] = timings["retrieve"] + _ms_since(started)
            yield self._answer(
                NO_CONTEXT_ANSWER,
                context.blocks,
                "no_context",
                Usage(),
                self.llm.model,
                retrieval,
                context.tokens,
                timings,
            )
            return
        messages = self.prompt.messages(context.text, question)
        llm_started = time.perf_counter()
        parts: list[str] = []
        completion: Completion | None = None
        for event in self._chat().stream(messages, self.llm.max_tokens, self.llm.temperature):
            if isinstance(event, Delta):
                parts.append(event.text)
                yield event
            else:
                completion = event
        assert completion is not None  # the client always ends with a Completion
        usage = completion.usage
        if usage.prompt_tokens is None:
            prompt_tokens = sum(self.count_tokens([m["content"] for m in messages]))
            usage = Usage(
                prompt_tokens,
                usage.completion_tokens,
                prompt_tokens + (usage.completion_tokens or 0),
                estimated=True,
            )
        timings["llm"] = _ms_since(llm_started)
        if completion.time_to_first_token_ms is not None:
            timings["time_to_first_token"] = round(completion.time_to_first_token_ms, 3)
        timings["total"] = timings["retrieve"] + _ms_since(started)
        yield self._answer(
            "".join(parts).strip(),
            context.blocks,
            completion.finish_reason,
            usage,
            completion.model,
            retrieval,
            context.tokens,
            timings,
        )

    def ask(self, question: str, collection: str, top_n: int | None = None) -> Answer:
        """The whole answer at once."""
        for event in self.stream(question, collection, top_n):
            if isinstance(event, Answer):
                return event
        raise AssertionError("stream ended without an answer")

    def _answer(
        self,
        text: str,
        blocks: list[Citation],
        finish_reason: str | None,
        usage: Usage,
        model: str,
        retrieval: RetrievalResult,
        context_tokens: int,
        timings: dict[str, float],
    ) -> Answer:
        citations, invalid = resolve_citations(text, blocks)
        method = "model" if citations else "none"
        if not citations and finish_reason != "no_context":
            citations = attribute_by_overlap(text, blocks)
            method = "overlap" if citations else "none"
        return Answer(
            text=text,
            citations=citations,
            context=blocks,
            invalid_citations=invalid,
            citation_method=method,
            finish_reason=finish_reason,
            usage=usage,
            model=model,
            prompt_name=self.prompt.name,
            prompt_version=self.prompt.version,
            context_tokens=context_tokens,
            retrieval=retrieval,
            timings_ms=timings,
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
