"""The attributes of the query path's spans (`embedding`, `retrieve` and its legs, `prompt`,
`llm`), built here so that the retriever and the answerer keep only their own logic; the span
names and attribute keys themselves live in `tracing/attributes.py`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.trace import Span

from ragline import metrics
from ragline.tracing import attributes as attr
from ragline.tracing.setup import Tracing, kind

if TYPE_CHECKING:
    from ragline.config import RetrievalSettings
    from ragline.domain import LegHit, ScoredChunk, Usage
    from ragline.generation.injection import Suspect
    from ragline.generation.llm import Completion
    from ragline.generation.prompts import PromptTemplate

# chunk metadata that identifies a chunk without saying what it is about: recorded on spans even
# with content capture off (a heading such as "Patient Jane Roe HIV diagnosis" is content)
NON_CONTENT_METADATA = frozenset({"source", "page"})


# retrieval -----------------------------------------------------------------------------------


def embedding_attributes(tracing: Tracing, model: str, question: str) -> dict[str, Any]:
    """The `embedding` span's attributes, given when it starts (in one dict: the SDK validates
    and locks per call, and this path is timed by bench/tracing_overhead.py)."""
    attributes: dict[str, Any] = {
        **kind(attr.KIND_EMBEDDING, "embedding"),
        attr.EMBEDDING_MODEL_NAME: model,
        attr.LANGFUSE_MODEL_NAME: model,
    }
    if (text := tracing.content(question)) is not None:
        attributes[attr.EMBEDDING_TEXT] = text
    return attributes


def retrieve_attributes(
    tracing: Tracing, settings: RetrievalSettings, question: str, top_n: int, use_mmr: bool
) -> dict[str, Any]:
    """The `retrieve` span's attributes, given when it starts: the retrieval settings in use."""
    text = tracing.content(question)
    attributes: dict[str, Any] = {
        **kind(attr.KIND_RETRIEVER, "retriever"),
        attr.TOP_K: settings.dense_top_k,
        attr.TOP_N: top_n,
        attr.FUSION: "rrf",
        attr.RRF_K: settings.rrf_k,
        attr.MMR_ENABLED: use_mmr,
    }
    if settings.score_threshold is not None:
        attributes[attr.THRESHOLD] = settings.score_threshold
    if text is not None:
        attributes[attr.INPUT_VALUE] = text
    return attributes


def leg_attributes(limit: int) -> dict[str, Any]:
    """A `retrieve.dense` or `retrieve.sparse` span's attributes, given when it starts."""
    return {**kind(attr.KIND_RETRIEVER, "retriever"), attr.TOP_K: limit}


def record_leg(span: Span, hits: Sequence[LegHit]) -> None:
    """A leg's ranking, as one JSON string rather than two list attributes: the SDK validates
    list items one by one."""
    ranked = ",".join(f"[{h.point_id},{h.score:.6g}]" for h in hits)
    span.set_attributes({attr.HITS: len(hits), attr.LEG_HITS: f"[{ranked}]"})


def record_retrieved(tracing: Tracing, span: Span, chunks: Sequence[ScoredChunk]) -> None:
    """The final chunks as OpenInference documents and, for Langfuse, as `output.value`."""
    recorded: dict[str, Any] = {attr.HITS: len(chunks), attr.EMPTY_RETRIEVAL: not chunks}
    documents = []
    for i, scored in enumerate(chunks):
        prefix = f"{attr.RETRIEVAL_DOCUMENTS}.{i}.document"
        metadata = {
            **recordable_metadata(tracing, scored.chunk.metadata),
            "document_id": scored.chunk.document_id,
            "dense_rank": scored.dense_rank,
            "sparse_rank": scored.sparse_rank,
        }
        recorded[f"{prefix}.id"] = scored.chunk.id
        recorded[f"{prefix}.score"] = scored.score
        recorded[f"{prefix}.metadata"] = json.dumps(metadata)
        if (content := tracing.content(scored.chunk.text)) is not None:
            recorded[f"{prefix}.content"] = content
        documents.append(
            {
                "id": scored.chunk.id,
                "score": scored.score,
                "source": scored.chunk.source,
                "content": scored.chunk.text,
            }
        )
    if (output := tracing.content(json.dumps(documents))) is not None:
        recorded[attr.OUTPUT_VALUE] = output
        recorded[attr.OUTPUT_MIME_TYPE] = "application/json"
    span.set_attributes(recorded)


def recordable_metadata(tracing: Tracing, metadata: dict[str, Any]) -> dict[str, Any]:
    """A chunk's metadata as a span may hold it: with content capture off, only what names
    the chunk (its file and page), never what it says (headings, titles)."""
    if tracing.capture:
        return dict(metadata)
    return {k: v for k, v in metadata.items() if k in NON_CONTENT_METADATA}


# generation ----------------------------------------------------------------------------------


def prompt_span(
    tracing: Tracing,
    parent: Context | None,
    prompt: PromptTemplate,
    context_tokens: int,
    chunks: int,
    prompt_tokens: int,
    context_window: int,
    context_budget: int,
) -> None:
    """The `prompt` span (ended at once): which template, how much context it got, and how
    much of the model's context window the prompt fills."""
    span = tracing.tracer.start_span(attr.PROMPT, context=parent)
    span.set_attributes(
        {
            **kind(attr.KIND_CHAIN, "span"),
            attr.LANGFUSE_PROMPT_NAME: prompt.name,
            attr.LANGFUSE_PROMPT_VERSION: prompt.version,
            attr.PROMPT_TEMPLATE_VERSION: str(prompt.version),
            attr.CONTEXT_TOKENS: context_tokens,
            attr.CONTEXT_CHUNKS: chunks,
            attr.CONTEXT_UTILISATION: round(prompt_tokens / context_window, 4),
            attr.PROMPT_TOKENS: prompt_tokens,
            attr.CONTEXT_BUDGET: context_budget,
        }
    )
    tracing.set_content(span, attr.PROMPT_TEMPLATE, f"{prompt.system}\n\n{prompt.user}")
    span.end()


def start_llm_span(
    tracing: Tracing,
    parent: Context | None,
    messages: list[dict[str, str]],
    model: str,
    parameters: dict[str, Any],
    prompt: PromptTemplate | None = None,
    name: str = attr.LLM,
) -> Span:
    """An LLM span, started (not current: it crosses yields) with the request: model,
    invocation `parameters`, input messages and, for a template's call, its name and version.
    The caller ends it, after `end_llm_span`."""
    span = tracing.tracer.start_span(name, context=parent)
    span.set_attributes(
        {
            **kind(attr.KIND_LLM, "generation"),
            attr.LLM_MODEL_NAME: model,
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
        tracing.set_content(
            span, f"{attr.LLM_INPUT_MESSAGES}.{i}.message.content", message["content"]
        )
    tracing.set_json(span, attr.INPUT_VALUE, messages)
    return span


def flag_injection(tracing: Tracing, span: Span, suspects: list[Suspect]) -> None:
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
    tracing.set_json(span, attr.INJECTION_MATCHES, matches)


def end_llm_span(
    tracing: Tracing,
    span: Span,
    text: str,
    completion: Completion,
    usage: Usage,
    started: float,
) -> None:
    """What the call returned, on its LLM span: model, finish reason, token counts, time to
    first token (as ms and as Langfuse's completion start time) and the output text.
    `started` is the call's `time.perf_counter()` start."""
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
            time.time() - (time.perf_counter() - started) + completion.time_to_first_token_ms / 1000
        )
        span.set_attribute(attr.TIME_TO_FIRST_TOKEN_MS, round(completion.time_to_first_token_ms, 3))
        span.set_attribute(
            attr.LANGFUSE_COMPLETION_START, datetime.fromtimestamp(first_token, UTC).isoformat()
        )
    span.set_attribute(f"{attr.LLM_OUTPUT_MESSAGES}.0.message.role", "assistant")
    tracing.set_content(span, f"{attr.LLM_OUTPUT_MESSAGES}.0.message.content", text)
    tracing.set_content(span, attr.OUTPUT_VALUE, text)
