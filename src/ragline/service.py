"""The query service: retrieval and answers behind the caches, as wire-format events.

Used by the HTTP API and the CLI alike. Cache keys hold the collection's version (bumped on
every ingest or delete), the RAG-config hash, the prompt version and the normalised question,
so a cached answer never outlives the documents or the configuration it came from.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ragline.cache.base import Cache
from ragline.config import rag_config_hash
from ragline.domain import Answer, RetrievalResult
from ragline.generation.answer import Answerer, Retrieved
from ragline.generation.llm import Delta
from ragline.retrieval.retriever import HybridRetriever
from ragline.store import Store
from ragline.wire import answer_to_dict, retrieval_from_dict, retrieval_to_dict

Event = tuple[str, dict[str, Any]]
CACHEABLE_FINISH = frozenset({"stop", "length", "no_context"})


@dataclass(frozen=True)
class Caches:
    embedding: Cache
    retrieval: Cache
    answer: Cache


def normalize_question(question: str) -> str:
    return " ".join(question.split()).lower()


class QueryService:
    """Retrieval and answers for one runtime, with the retrieval and answer caches in front."""

    def __init__(
        self,
        store: Store,
        retriever: HybridRetriever,
        answerer: Answerer,
        caches: Caches | None,
        settings_hash: str,
    ) -> None:
        self.store = store
        self.retriever = retriever
        self.answerer = answerer
        self.caches = caches
        self.settings_hash = settings_hash

    @classmethod
    def for_runtime(cls, runtime: Any) -> QueryService:
        return cls(
            runtime.store,
            runtime.retriever,
            runtime.answerer,
            runtime.caches,
            rag_config_hash(runtime.settings),
        )

    def retrieve(
        self, question: str, collection: str, top_n: int | None
    ) -> tuple[RetrievalResult, bool]:
        """Retrieval for a question, and whether it came from the cache."""
        key = self._key(collection, question, top_n)
        if self.caches is not None:
            cached = self.caches.retrieval.get(key)
            if cached is not None:
                return retrieval_from_dict(json.loads(cached)), True
        result = self.retriever.retrieve(question, collection, top_n=top_n)
        if self.caches is not None:
            self.caches.retrieval.set(key, json.dumps(retrieval_to_dict(result)).encode())
        return result, False

    def stream(self, question: str, collection: str, top_n: int | None = None) -> Iterator[Event]:
        """Events: `retrieval` (the numbered passages), `token`s, then `done` (the answer)."""
        started = time.perf_counter()
        prompt = self.answerer.prompt
        key = self._key(collection, question, top_n, f"{prompt.name}@{prompt.version}")
        if self.caches is not None and (cached := self.caches.answer.get(key)) is not None:
            yield from self._replay(json.loads(cached), started)
            return
        retrieval, retrieval_hit = self.retrieve(question, collection, top_n)
        for event in self.answerer.generate(question, retrieval):
            if isinstance(event, Retrieved):
                yield "retrieval", {"context": [asdict(c) for c in event.context]}
            elif isinstance(event, Delta):
                yield "token", {"text": event.text}
            elif isinstance(event, Answer):
                body = answer_to_dict(event)
                body["cache"] = {"answer": False, "retrieval": retrieval_hit}
                if self.caches is not None and event.finish_reason in CACHEABLE_FINISH:
                    self.caches.answer.set(key, json.dumps(body).encode())
                yield "done", body

    def query(self, question: str, collection: str, top_n: int | None = None) -> dict[str, Any]:
        """The whole answer object at once."""
        for name, data in self.stream(question, collection, top_n):
            if name == "done":
                return data
        raise AssertionError("the answer stream ended without a done event")

    def _replay(self, body: dict[str, Any], started: float) -> Iterator[Event]:
        body["cache"] = {"answer": True, "retrieval": True}
        body["timings_ms"] = {"total": round((time.perf_counter() - started) * 1000, 3)}
        yield "retrieval", {"context": body["context"]}
        yield "token", {"text": body["answer"]}
        yield "done", body

    def _key(self, collection: str, question: str, top_n: int | None, *parts: str) -> str:
        version = self.store.collection_version(collection)
        digest = hashlib.sha256(normalize_question(question).encode()).hexdigest()[:32]
        return ":".join([collection, str(version), self.settings_hash, str(top_n), *parts, digest])
