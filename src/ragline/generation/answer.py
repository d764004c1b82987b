"""The RAG answer: retrieve, assemble a budgeted prompt, stream the model, validate citations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span

from ragline import metrics
from ragline.config import GenerationSettings, LLMSettings
from ragline.domain import Answer, Citation, RetrievalResult, Usage
from ragline.generation.context import attribute_by_overlap, build_context, resolve_citations
from ragline.generation.injection import Suspect, screen
from ragline.generation.llm import ChatClient, Completion, Delta
from ragline.generation.prompts import PromptTemplate
from ragline.retrieval.retriever import HybridRetriever
from ragline.tracing import attributes as attr
from ragline.tracing.setup import Tracing, kind, record_error

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

    def stream(
        self, question: str, collection: str, top_n: int | None = None
    ) -> Iterator[Retrieved | Delta | Answer]:
        """Retrieve, then `generate`."""
        retrieval = self.retriever.retrieve(question, collection, top_n=top_n)
        yield from self.generate(question, retrieval)

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
        self._prompt_span(prompt, parent, context.tokens, len(context.blocks), prompt_tokens)
        yield Retrieved(retrieval, context.blocks)
        timings = {"retrieve": retrieval.timings_ms.get("total", 0.0)}
        if not context.blocks:
            yield Delta(NO_CONTEXT_ANSWER)
            timings["total"] = timings["retrieve"] + _ms_since(started)
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
        span = self._llm_span(prompt, parent, messages)
        try:
            passages = ((b.n, b.chunk_id, f"{b.source}\n{b.text}") for b in context.blocks)
            self._flag_injection(span, screen(passages))
            for event in self._chat().stream(messages, self.llm.max_tokens, self.llm.temperature):
                if isinstance(event, Delta):
                    parts.append(event.text)
                    yield event
                else:
                    completion = event
            assert completion is not None  # the client always ends with a Completion
            usage = completion.usage
            if usage.prompt_tokens is None:
                usage = Usage(
                    prompt_tokens,
                    usage.completion_tokens,
                    prompt_tokens + (usage.completion_tokens or 0),
                    estimated=True,
                )
            text = "".join(parts).strip()
            self._end_llm_span(span, text, completion, usage, llm_started)
        except GeneratorExit:  # the client stopped reading mid-answer
            span.set_attribute(attr.CANCELLED, True)
            raise
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            span.end()
        timings["llm"] = _ms_since(llm_started)
        if completion.time_to_first_token_ms is not None:
            timings["time_to_first_token"] = round(completion.time_to_first_token_ms, 3)
            metrics.TTFT.observe(completion.time_to_first_token_ms / 1000)
        timings["total"] = timings["retrieve"] + _ms_since(started)
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

    def _prompt_span(
        self,
        prompt: PromptTemplate,
        parent: Context | None,
        context_tokens: int,
        chunks: int,
        prompt_tokens: int,
    ) -> None:
        span = self.tracing.tracer.start_span(attr.PROMPT, context=parent)
        span.set_attributes(
            {
                **kind(attr.KIND_CHAIN, "span"),
                attr.LANGFUSE_PROMPT_NAME: prompt.name,
                attr.LANGFUSE_PROMPT_VERSION: prompt.version,
                attr.PROMPT_TEMPLATE_VERSION: str(prompt.version),
                attr.CONTEXT_TOKENS: context_tokens,
                attr.CONTEXT_CHUNKS: chunks,
                attr.CONTEXT_UTILISATION: round(prompt_tokens / self.llm.context_window, 4),
                attr.PROMPT_TOKENS: prompt_tokens,
                attr.CONTEXT_BUDGET: self.generation.max_context_tokens,
            }
        )
        self.tracing.set_content(span, attr.PROMPT_TEMPLATE, f"{prompt.system}\n\n{prompt.user}")
        span.end()

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
        span = self._llm_span(None, parent, messages, name, max_tokens)
        try:
            if passages:
                self._flag_injection(span, screen(passages))
            parts: list[str] = []
            completion: Completion | None = None
            for event in self._chat().stream(messages, max_tokens, 0.0, response_format):
                if isinstance(event, Delta):
                    parts.append(event.text)
                else:
                    completion = event
            assert completion is not None
            text = "".join(parts).strip()
            usage = completion.usage
            if usage.prompt_tokens is None:
                prompt_tokens = sum(self.count_tokens([m["content"] for m in messages]))
                usage = Usage(
                    prompt_tokens,
                    usage.completion_tokens,
                    prompt_tokens + (usage.completion_tokens or 0),
                    estimated=True,
                )
            self._end_llm_span(span, text, completion, usage, started)
            return text, completion, usage
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            span.end()

    def _llm_span(
        self,
        prompt: PromptTemplate | None,
        parent: Context | None,
        messages: list[dict[str, str]],
        name: str = attr.LLM,
        max_tokens: int | None = None,
    ) -> Span:
        span = self.tracing.tracer.start_span(name, context=parent)
        parameters = {
            "max_tokens": max_tokens or self.llm.max_tokens,
            "temperature": self.llm.temperature if prompt else 0.0,
        }
        span.set_attributes(
            {
                **kind(attr.KIND_LLM, "generation"),
                attr.LLM_MODEL_NAME: self.llm.model,
                attr.LLM_INVOCATION_PARAMETERS: json.dumps(parameters),
            }
        )
        if prompt is not None:
            span.set_attributes(
                {
                    attr.LANGFUSE_PROMPT_NAME: prompt.name,
                    attr.LANGFUSE_PROMPT_VERSION: prompt.version,
                }
            )
        for i, message in enumerate(messages):
            span.set_attribute(f"{attr.LLM_INPUT_MESSAGES}.{i}.message.role", message["role"])
            self.tracing.set_content(
                span, f"{attr.LLM_INPUT_MESSAGES}.{i}.message.content", message["content"]
            )
        self.tracing.set_json(span, attr.INPUT_VALUE, messages)
        return span

    def _flag_injection(self, span: Span, suspects: list[Suspect]) -> None:
        """Record on an LLM span whether its passages hold suspected injected instructions.

        Flagged passages are still given to the model (delimited as data like the others):
        the detector is a heuristic, and dropping what it flags would let any document that
        quotes such a phrase, a security advisory say, vanish from answers. The trace is kept
        whatever the sampling rate, and counted, so someone can look."""
        span.set_attribute(attr.INJECTION_SUSPECTED, bool(suspects))
        if not suspects:
            return
        metrics.INJECTION_SUSPECTED.inc()
        span.set_attributes(
            {
                attr.INJECTION_PASSAGES: [s.n for s in suspects],
                attr.INJECTION_CHUNK_IDS: [s.chunk_id for s in suspects],
                attr.INJECTION_RULES: sorted({rule for s in suspects for rule in s.rules}),
                attr.FORCE_KEEP: True,
            }
        )
        matches = [{"n": s.n, "rule": m.rule, "text": m.text} for s in suspects for m in s.matches]
        self.tracing.set_json(span, attr.INJECTION_MATCHES, matches)

    def _end_llm_span(
        self, span: Span, text: str, completion: Completion, usage: Usage, started: float
    ) -> None:
        span.set_attributes(
            {
                attr.LLM_MODEL_NAME: completion.model,
                attr.FINISH_REASON: completion.finish_reason or "",
                attr.USAGE_ESTIMATED: usage.estimated,
                attr.LLM_ATTEMPTS: completion.attempts,
            }
        )
        counts = (
            (attr.LLM_TOKEN_COUNT_PROMPT, usage.prompt_tokens),
            (attr.LLM_TOKEN_COUNT_COMPLETION, usage.completion_tokens),
            (attr.LLM_TOKEN_COUNT_TOTAL, usage.total_tokens),
        )
        span.set_attributes({key: value for key, value in counts if value is not None})
        if completion.time_to_first_token_ms is not None:
            first_token = (
                time.time()
                - (time.perf_counter() - started)
                + completion.time_to_first_token_ms / 1000
            )
            span.set_attribute(
                attr.TIME_TO_FIRST_TOKEN_MS, round(completion.time_to_first_token_ms, 3)
            )
            span.set_attribute(
                attr.LANGFUSE_COMPLETION_START, datetime.fromtimestamp(first_token, UTC).isoformat()
            )
        span.set_attribute(f"{attr.LLM_OUTPUT_MESSAGES}.0.message.role", "assistant")
        self.tracing.set_content(span, f"{attr.LLM_OUTPUT_MESSAGES}.0.message.content", text)
        self.tracing.set_content(span, attr.OUTPUT_VALUE, text)

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


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
