"""The RAG answer: retrieve, assemble a budgeted prompt, stream the model, validate citations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context

from ragline import metrics
from ragline.config import GenerationSettings, LLMSettings
from ragline.domain import Answer, Citation, RetrievalResult, Usage
from ragline.generation.context import attribute_by_overlap, build_context, resolve_citations
from ragline.generation.injection import screen
from ragline.generation.llm import ChatClient, Completion, Delta
from ragline.generation.prompts import PromptTemplate
from ragline.retrieval.retriever import HybridRetriever
from ragline.timing import ms_since
from ragline.tracing import attributes as attr
from ragline.tracing import spans
from ragline.tracing.setup import Tracing, record_error

NO_CONTEXT_ANSWER = "I could not find anything about this in the indexed documents."


@dataclass(frozen=True)
class Retrieved:
    """First event of a streamed answer: what was retrieved and which passages the model gets,
    and what was spent before the answer's text: its prompt's tokens (as counted here) and, in
    multi-step modes, the tokens of the plan and summary calls (a stream cut from here on is
    charged these plus the text streamed)."""

    retrieval: RetrievalResult
    context: list[Citation]
    prompt_tokens: int = 0
    step_tokens: int = 0


class Answerer:
    """Answers questions over one retriever and one chat model."""

    def __init__(
        self,
        retriever: HybridRetriever,
        chat: Callable[[], ChatClient],
        count_tokens: Callable[[Sequence[str]], list[int]],
        prompt: Callable[[], PromptTemplate],
        generation: GenerationSettings,
        llm: LLMSettings,
        tracing: Tracing | None = None,
    ) -> None:
        self.retriever = retriever
        self._chat = chat
        self.count_tokens = count_tokens
        self.prompt_source = prompt  # resolved per answer: a rollback applies without restart
        self.generation = generation
        self.llm = llm
        self.tracing = tracing or Tracing.disabled()
        self._template_tokens: dict[tuple[str, int], int] = {}  # prompt (name, version) -> tokens

    def stream(
        self, question: str, collection: str, top_n: int | None = None
    ) -> Iterator[Retrieved | Delta | Answer]:
        """Retrieve, then `generate`."""
        retrieval = self.retriever.retrieve(question, collection, top_n=top_n)
        yield from self.generate(question, retrieval)

    def cost_bound(self, question: str) -> int:
        """The most one answer to `question` can spend: its prompt (the template and the
        question, counted, plus the whole context budget `generation.max_context_tokens`) and
        `llm.max_tokens` of completion, at most `llm.context_window` (a server refuses more).

        Asked before every question, cached answers included: the template's tokens are
        counted once per prompt version, the question's each time, plus a token per message
        for a word the question may merge with at its edges (tokenizing the whole prompt was
        5 % of a cached answer's time)."""
        prompt = self.prompt_source()
        key = (prompt.name, prompt.version)
        if (template := self._template_tokens.get(key)) is None:
            messages = prompt.messages("", "")
            template = sum(self.count_tokens([m["content"] for m in messages])) + len(messages)
            self._template_tokens[key] = template
        prompt_tokens = template + sum(self.count_tokens([question]))
        budget = self.generation.max_context_tokens
        return min(self.llm.context_window, prompt_tokens + budget + self.llm.max_tokens)

    def call_bound(
        self, messages: list[dict[str, str]], max_tokens: int, context_budget: int | None = None
    ) -> int:
        """The most one LLM call on `messages` can spend, with `context_budget` tokens of
        passages still to be added (default: the answer's context budget)."""
        budget = self.generation.max_context_tokens if context_budget is None else context_budget
        prompt_tokens = sum(self.count_tokens([m["content"] for m in messages])) + budget
        return min(self.llm.context_window, prompt_tokens + max_tokens)

    def generate(
        self,
        question: str,
        retrieval: RetrievalResult,
        parent: Context | None = None,
        prompt: PromptTemplate | None = None,
    ) -> Iterator[Retrieved | Delta | Answer]:
        """Yield `Retrieved`, then `Delta`s as the answer is generated, then the `Answer`.

        Spans `prompt` and `llm` are children of `parent` (they cross yields, so they are
        started with an explicit parent and never made current).
        """
        started = time.perf_counter()
        context = build_context(
            retrieval.chunks, self.count_tokens, self.generation.max_context_tokens
        )
        prompt = prompt or self.prompt_source()
        messages = prompt.messages(context.text, question)
        prompt_tokens = sum(self.count_tokens([m["content"] for m in messages]))
        spans.prompt_span(
            self.tracing,
            parent,
            prompt,
            context.tokens,
            len(context.blocks),
            prompt_tokens,
            self.llm.context_window,
            self.generation.max_context_tokens,
        )
        yield Retrieved(retrieval, context.blocks, prompt_tokens if context.blocks else 0)
        timings = {"retrieve": retrieval.timings_ms.get("total", 0.0)}
        if not context.blocks:
            yield Delta(NO_CONTEXT_ANSWER)
            timings["total"] = timings["retrieve"] + ms_since(started)
            yield self._answer(
                prompt,
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
        llm_started = time.perf_counter()
        parts: list[str] = []
        completion: Completion | None = None
        parameters = {"max_tokens": self.llm.max_tokens, "temperature": self.llm.temperature}
        span = spans.start_llm_span(
            self.tracing, parent, messages, self.llm.model, parameters, prompt
        )
        try:
            passages = ((b.n, b.chunk_id, f"{b.source}\n{b.text}") for b in context.blocks)
            spans.flag_injection(self.tracing, span, screen(passages))
            for event in self._chat().stream(messages, self.llm.max_tokens, self.llm.temperature):
                if isinstance(event, Delta):
                    parts.append(event.text)
                    yield event
                else:
                    completion = event
            assert completion is not None  # the client always ends with a Completion
            usage = completion.usage.or_estimate(lambda: prompt_tokens)
            text = "".join(parts).strip()
            spans.end_llm_span(self.tracing, span, text, completion, usage, llm_started)
        except GeneratorExit:  # the client stopped reading mid-answer
            span.set_attribute(attr.CANCELLED, True)
            raise
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            span.end()
        timings["llm"] = ms_since(llm_started)
        if completion.time_to_first_token_ms is not None:
            timings["time_to_first_token"] = round(completion.time_to_first_token_ms, 3)
            metrics.TTFT.observe(completion.time_to_first_token_ms / 1000)
        timings["total"] = timings["retrieve"] + ms_since(started)
        yield self._answer(
            prompt,
            text,
            context.blocks,
            completion.finish_reason,
            usage,
            completion.model,
            retrieval,
            context.tokens,
            timings,
        )

    def complete(
        self,
        name: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        parent: Context | None,
        response_format: dict[str, Any] | None = None,
        passages: Sequence[tuple[int, str, str]] = (),
    ) -> tuple[str, Completion, Usage]:
        """One auxiliary LLM call (a plan, a summary) in its own LLM span named `name`, with
        the same attributes as the answer's `llm` span; `passages` (number, chunk id, text)
        are the retrieved texts in `messages`, screened for injection. Raises like the client."""
        started = time.perf_counter()
        parameters = {"max_tokens": max_tokens or self.llm.max_tokens, "temperature": 0.0}
        span = spans.start_llm_span(
            self.tracing, parent, messages, self.llm.model, parameters, name=name
        )
        try:
            if passages:
                spans.flag_injection(self.tracing, span, screen(passages))
            parts: list[str] = []
            completion: Completion | None = None
            for event in self._chat().stream(messages, max_tokens, 0.0, response_format):
                if isinstance(event, Delta):
                    parts.append(event.text)
                else:
                    completion = event
            assert completion is not None
            text = "".join(parts).strip()
            usage = completion.usage.or_estimate(
                lambda: sum(self.count_tokens([m["content"] for m in messages]))
            )
            spans.end_llm_span(self.tracing, span, text, completion, usage, started)
            return text, completion, usage
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            span.end()

    def ask(self, question: str, collection: str, top_n: int | None = None) -> Answer:
        """The whole answer at once."""
        for event in self.stream(question, collection, top_n):
            if isinstance(event, Answer):
                return event
        raise AssertionError("stream ended without an answer")

    def _answer(
        self,
        prompt: PromptTemplate,
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
            prompt_name=prompt.name,
            prompt_version=prompt.version,
            context_tokens=context_tokens,
            retrieval=retrieval,
            timings_ms=timings,
        )
