"""The query service: retrieval and answers behind the caches, as wire-format events.

Used by the HTTP API and the CLI alike. Cache keys hold the collection's version (bumped on
every ingest or delete), the RAG-config hash, the prompt version and the normalised question,
so a cached answer never outlives the documents or the configuration it came from.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, set_span_in_context

from ragline import logs, metrics
from ragline.cache.base import Cache
from ragline.config import rag_config_hash
from ragline.domain import Answer, RetrievalResult
from ragline.errors import InvalidRequestError
from ragline.generation.answer import Answerer, Retrieved
from ragline.generation.llm import Delta
from ragline.generation.multistep import MultiStep, Source
from ragline.index.sync import IndexSync
from ragline.retrieval.retriever import HybridRetriever
from ragline.store import Store
from ragline.text import valid_text
from ragline.timing import ms_since
from ragline.tracing import attributes as attr
from ragline.tracing.setup import Tracing, errors_recorded, kind, trace_id_of
from ragline.wire import answer_to_dict, retrieval_from_dict, retrieval_to_dict

Event = tuple[str, dict[str, Any]]
CACHEABLE_FINISH = frozenset({"stop", "length", "no_context"})
# cache keys reuse a collection version read this recently: a change made by this process is
# seen at once, one made by another process (a worker, a replica) within this delay
VERSION_MAX_AGE_S = 1.0


@dataclass(frozen=True)
class Caches:
    embedding: Cache
    retrieval: Cache
    answer: Cache


def normalize_question(question: str) -> str:
    return " ".join(question.split()).lower()


class QueryService:
    """Retrieval and answers for one runtime, with the retrieval and answer caches in front.

    Every call is one trace: root `rag.query` (or `rag.retrieve`) with the retrieval and
    generation spans under it; its id comes back as `trace_id`.
    """

    def __init__(
        self,
        store: Store,
        retriever: HybridRetriever,
        answerer: Answerer,
        caches: Caches | None,
        settings_hash: str,
        tracing: Tracing | None = None,
        multistep: MultiStep | None = None,
        index_sync: IndexSync | None = None,
    ) -> None:
        self.store = store
        self.retriever = retriever
        self.answerer = answerer
        self.caches = caches
        self.settings_hash = settings_hash
        self.tracing = tracing or Tracing.disabled()
        self.multistep = multistep
        self.index_sync = index_sync

    @classmethod
    def for_runtime(cls, runtime: Any) -> QueryService:
        return cls(
            runtime.store,
            runtime.retriever,
            runtime.answerer,
            runtime.caches,
            rag_config_hash(runtime.settings),
            runtime.tracing,
            runtime.multistep,
            runtime.index_sync,
        )

    def retrieve(
        self,
        question: str,
        collection: str,
        top_n: int | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Retrieval only, as one trace (`rag.retrieve`): the wire body with cache and trace id."""
        started = time.perf_counter()
        question = valid_text(question)  # the API refuses lone surrogates; a command line may not
        root = self._root(attr.RETRIEVE_ROOT, question, collection, session_id, user_id)
        try:
            with errors_recorded(root), _measured("retrieve", started):
                result, hit = self._retrieve(question, collection, top_n, set_span_in_context(root))
                root.set_attributes(
                    {attr.EMPTY_RETRIEVAL: not result.chunks, attr.CACHE_RETRIEVAL_HIT: hit}
                )
                if not result.chunks:
                    metrics.EMPTY_RETRIEVALS.inc()
        finally:
            root.end()
        body = retrieval_to_dict(result)
        body["cache"] = {"retrieval": hit}
        body["trace_id"] = trace_id_of(root)
        return body

    def _retrieve(
        self, question: str, collection: str, top_n: int | None, parent: Context
    ) -> tuple[RetrievalResult, bool]:
        """Retrieval behind the retrieval cache; True when it was a cache hit."""
        key = self._key(collection, question, top_n)
        if self.caches is not None:
            cached = self.caches.retrieval.get(key)
            if cached is not None:
                return retrieval_from_dict(json.loads(cached)), True
        result = self.retriever.retrieve(question, collection, top_n=top_n, parent=parent)
        if self.caches is not None:
            self.caches.retrieval.set(key, json.dumps(retrieval_to_dict(result)).encode())
        return result, False

    def stream(
        self,
        question: str,
        collection: str,
        top_n: int | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        route: str = "query",
        sources: Sequence[Source] | None = None,
        mode: str = "rag",
    ) -> Generator[Event, None, None]:
        """Events: `retrieval` (the numbered passages), `token`s, then `done` (the answer).
        `route` labels the request metrics (query, chat). `sources` (several collections, with
        weights) and `mode` (decompose, summarize) go through `MultiStep`, without the answer
        cache; a plain one-collection query is `collection` with mode `rag`."""
        started = time.perf_counter()
        question = valid_text(question)
        if sources and len(sources) == 1 and sources[0] == Source(sources[0].collection):
            collection, sources = sources[0].collection, None
        multi = bool(sources) or mode != "rag"
        label = ",".join(s.collection for s in sources) if sources else collection
        root = self._root(attr.QUERY, question, label, session_id, user_id)
        trace_id = trace_id_of(root)
        parent = set_span_in_context(root)
        try:
            with errors_recorded(root), _measured(route, started):
                retrieval_hit, key = False, ""
                if multi:
                    if self.multistep is None:
                        raise InvalidRequestError("this service has no multi-step support")
                    chosen = list(sources or [Source(collection)])
                    for source in chosen:  # an unknown collection is a NotFoundError (404)
                        self.store.collection_version(source.collection)
                    events = self.multistep.run(question, chosen, mode, top_n, root)
                else:
                    prompt = self.answerer.prompt_source()
                    key = self._key(collection, question, top_n, f"{prompt.name}@{prompt.version}")
                    if self.caches is not None and (cached := self.caches.answer.get(key)):
                        body = json.loads(cached)
                        root.set_attributes(
                            {
                                attr.CACHE_ANSWER_HIT: True,
                                attr.FINISH_REASON: body["finish_reason"] or "",
                            }
                        )
                        self.tracing.set_content(root, attr.OUTPUT_VALUE, body["answer"])
                        yield from self._replay(body, started, trace_id)
                        return
                    retrieval, retrieval_hit = self._retrieve(question, collection, top_n, parent)
                    root.set_attributes(
                        {
                            attr.CACHE_ANSWER_HIT: False,
                            attr.CACHE_RETRIEVAL_HIT: retrieval_hit,
                            attr.EMPTY_RETRIEVAL: not retrieval.chunks,
                        }
                    )
                    events = self.answerer.generate(question, retrieval, parent, prompt)
                for event in events:
                    if isinstance(event, Retrieved):
                        if multi:
                            root.set_attribute(attr.EMPTY_RETRIEVAL, not event.context)
                        context = [asdict(c) for c in event.context]
                        spent = {
                            "prompt_tokens": event.prompt_tokens,
                            "step_tokens": event.step_tokens,
                        }
                        yield "retrieval", {"context": context, **spent}
                    elif isinstance(event, Delta):
                        yield "token", {"text": event.text}
                    elif isinstance(event, Answer):
                        body = answer_to_dict(event)
                        body["cache"] = {"answer": False, "retrieval": retrieval_hit}
                        body["mode"] = mode
                        self._finish_root(root, event)
                        _record_answer(event, self.answerer.llm.context_window)
                        cacheable = event.finish_reason in CACHEABLE_FINISH and not multi
                        if self.caches is not None and cacheable:
                            self.caches.answer.set(key, json.dumps(body).encode())
                        body["trace_id"] = trace_id
                        yield "done", body
        finally:
            root.end()

    def query(
        self,
        question: str,
        collection: str,
        top_n: int | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        route: str = "query",
        sources: Sequence[Source] | None = None,
        mode: str = "rag",
    ) -> dict[str, Any]:
        """The whole answer object at once (the stream is read to its end, so the trace closes
        normally)."""
        events = self.stream(question, collection, top_n, session_id, user_id, route, sources, mode)
        done = [data for name, data in events if name == "done"]
        if not done:
            raise AssertionError("the answer stream ended without a done event")
        return done[0]

    def _root(
        self, name: str, question: str, collection: str, session_id: str | None, user_id: str | None
    ) -> Span:
        settings = self.tracing.settings
        attributes: dict[str, Any] = {
            **kind(attr.KIND_CHAIN, "chain"),
            attr.LANGFUSE_TRACE_NAME: name,
            attr.LANGFUSE_ENVIRONMENT: settings.environment,
            attr.COLLECTION: collection,
            attr.RAG_CONFIG_HASH: self.settings_hash,
            f"{attr.LANGFUSE_TRACE_METADATA}.rag_config_hash": self.settings_hash,
        }
        if settings.release:
            attributes[attr.LANGFUSE_RELEASE] = settings.release
        if session_id:
            attributes[attr.SESSION_ID] = session_id
        if user_id:
            attributes[attr.USER_ID] = user_id
        if (text := self.tracing.content(question)) is not None:
            attributes[attr.INPUT_VALUE] = text
        root = self.tracing.tracer.start_span(name, attributes=attributes)
        logs.bind_trace(root)  # the request's log records and access line name this trace
        return root

    def _finish_root(self, root: Span, answer: Answer) -> None:
        root.set_attributes(
            {
                attr.FINISH_REASON: answer.finish_reason or "",
                attr.CITATIONS: len(answer.citations),
                attr.INVALID_CITATIONS: len(answer.invalid_citations),
                attr.CONTEXT_CHUNKS: len(answer.context),
            }
        )
        self.tracing.set_content(root, attr.OUTPUT_VALUE, answer.text)

    def _replay(
        self, body: dict[str, Any], started: float, trace_id: str | None
    ) -> Iterator[Event]:
        body["cache"] = {"answer": True, "retrieval": True}
        body["timings_ms"] = {"total": ms_since(started)}
        body["trace_id"] = trace_id
        yield "retrieval", {"context": body["context"]}
        yield "token", {"text": body["answer"]}
        yield "done", body

    def _key(self, collection: str, question: str, top_n: int | None, *parts: str) -> str:
        version = self._version(collection)
        digest = hashlib.sha256(normalize_question(question).encode()).hexdigest()[:32]
        return ":".join([collection, version, self.settings_hash, str(top_n), *parts, digest])

    def _version(self, collection: str) -> str:
        """What a cached result depends on: the collection's version, which every committed
        change bumps (a deleted document leaves the cache at once), and its last change the
        index has applied (a document committed but not yet indexed is not retrievable, and a
        retrieval made in that window must not be cached as if it came after)."""
        version = self.store.collection_version(collection, max_age_s=VERSION_MAX_AGE_S)
        if self.index_sync is None:
            return str(version)
        cursor = self.index_sync.cursor(max_age_s=VERSION_MAX_AGE_S)
        return f"{version}.{self.store.applied_seq(collection, cursor)}"


@contextmanager
def _measured(route: str, started: float) -> Iterator[None]:
    """Request duration and outcome; a failure also counts against its stage."""
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except GeneratorExit:  # the client went away: not a failure of ours
        outcome = "ok"
        raise
    except BaseException as exc:
        metrics.ERRORS.labels(metrics.error_stage(exc)).inc()
        raise
    finally:
        metrics.REQUESTS.labels(route, outcome).inc()
        metrics.REQUEST.labels(route).observe(time.perf_counter() - started)


def _record_answer(answer: Answer, context_window: int) -> None:
    """A freshly generated answer's figures (cached replays are not counted twice)."""
    given = len(answer.context)
    metrics.CHUNKS_PER_REQUEST.observe(given)
    metrics.CHUNKS_RETURNED.inc(given)
    metrics.CHUNKS_CITED.inc(len({c.n for c in answer.citations}))
    if given == 0:
        metrics.EMPTY_RETRIEVALS.inc()
    else:
        prompt_tokens = answer.usage.prompt_tokens or answer.context_tokens
        metrics.CONTEXT_UTILISATION.observe(min(1.0, prompt_tokens / context_window))
    if answer.finish_reason == "length":
        metrics.TRUNCATED.inc()
