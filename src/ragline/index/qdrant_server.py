"""A Qdrant server or cluster as the index (`RAGLINE_INDEX__URL=http://qdrant:6333`), through
qdrant-client: the same schema as the embedded index (named dense vector, cosine, HNSW; BM25
sparse vector with the IDF modifier, encoded by `Bm25Encoder`), one Qdrant collection per
ragline collection, sharded and replicated as configured.

Several `ragline serve` replicas share it: the sync cursor lives in Qdrant too (collection
`<prefix>_meta`), and index-log entries are idempotent, so replicas applying the same entry
twice leave the same index. A user collection is `<prefix><name>`, and a name starts with a
letter or a digit, so none is ever `<prefix>_meta`. (The cursor used to live in `<prefix>meta`,
which is also the user collection `meta`: it is moved on first use, see `_adopt_old_cursor`.) `RAGLINE_INDEX__URL=:memory:` runs qdrant-client's local mode (an
in-process stand-in for the server, used by the tests; not for production).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from ragline.config import IndexSettings
from ragline.domain import LegHit, check_collection_name
from ragline.errors import BackendError
from ragline.index.base import IndexPoint
from ragline.index.bm25 import Bm25Encoder

log = logging.getLogger(__name__)

DENSE, SPARSE = "dense", "bm25"
META_SUFFIX = "_meta"  # `_`: no collection name starts with it
OLD_META_SUFFIX = "meta"  # before: shared its name with a user collection called `meta`
_CURSOR_POINT = 0


class QdrantServerIndex:
    """A Qdrant server or cluster: the legs of a query run side by side, as each waits on the
    network (not with qdrant-client's in-process `:memory:` stand-in, pure Python)."""

    def __init__(
        self, settings: IndexSettings, dimensions: int, client: QdrantClient | None = None
    ) -> None:
        assert settings.url or client is not None
        self.settings = settings
        self.dimensions = dimensions
        self.bm25 = Bm25Encoder(settings)
        if client is None:
            assert settings.url is not None
            if settings.url == ":memory:":
                client = QdrantClient(location=":memory:")
            else:
                client = QdrantClient(
                    url=settings.url, api_key=settings.api_key, timeout=int(settings.timeout_s)
                )
        self.client = client
        self.local = settings.url == ":memory:"  # qdrant-client's in-process stand-in
        self.concurrent_search = not self.local
        self._known: set[str] = set()
        self._lock = threading.Lock()

    # writes ----------------------------------------------------------------------------------

    def upsert(self, collection: str, points: Sequence[IndexPoint], avg_len: float) -> None:
        if not points:
            return
        name = self._collection(collection, create=True)
        assert name is not None  # create=True always yields a collection
        records = [
            models.PointStruct(
                id=p.point_id,
                vector={
                    DENSE: p.vector.astype(float).tolist(),
                    SPARSE: _sparse(self.bm25.document(p.text, avg_len)),
                },
                payload=p.payload,
            )
            for p in points
        ]
        self._call(lambda: self.client.upsert(name, records, wait=True))

    def delete_document(
        self, collection: str, document_id: str, keep_hash: str | None = None
    ) -> None:
        name = self._collection(collection)
        if name is None:
            return
        must_not: list[models.Condition] | None = (
            [_match("content_hash", keep_hash)] if keep_hash else None
        )
        selector = models.FilterSelector(
            filter=models.Filter(must=[_match("document_id", document_id)], must_not=must_not)
        )
        self._call(lambda: self.client.delete(name, points_selector=selector, wait=True))

    def optimize(self) -> bool:
        """Nothing to do: a Qdrant server builds its HNSW graphs in the background."""
        return False

    def drop(self, collection: str) -> None:
        name = self.settings.collection_prefix + check_collection_name(collection)
        with self._lock:
            self._known.discard(name)
        self._call(lambda: self.client.delete_collection(name))

    # reads -----------------------------------------------------------------------------------

    def search_dense(self, collection: str, vector: np.ndarray, limit: int) -> list[LegHit]:
        name = self._collection(collection)
        if name is None:
            return []
        params = (  # local mode searches exactly (and warns about search params)
            None if self.local else models.SearchParams(hnsw_ef=max(self.settings.hnsw_ef, limit))
        )
        response = self._call(
            lambda: self.client.query_points(
                name,
                query=vector.astype(float).tolist(),
                using=DENSE,
                limit=limit,
                search_params=params,
            )
        )
        return _hits(response.points)

    def search_sparse(self, collection: str, text: str, limit: int) -> list[LegHit]:
        name = self._collection(collection)
        sparse = self.bm25.query(text)
        if name is None or not sparse.indices:
            return []
        response = self._call(
            lambda: self.client.query_points(name, query=_sparse(sparse), using=SPARSE, limit=limit)
        )
        return _hits(response.points)

    def vectors(self, collection: str, point_ids: Sequence[int]) -> dict[int, np.ndarray]:
        name = self._collection(collection)
        if name is None or not point_ids:
            return {}
        records = self._call(
            lambda: self.client.retrieve(name, list(point_ids), with_vectors=[DENSE])
        )
        return {int(r.id): np.asarray(r.vector[DENSE], dtype=np.float32) for r in records}

    def term_counts(self, texts: Sequence[str]) -> list[int]:
        return self.bm25.term_counts(texts)

    def count(self, collection: str) -> int:
        name = self._collection(collection)
        if name is None:
            return 0
        return int(self._call(lambda: self.client.count(name, exact=True)).count)

    # the sync cursor, shared by every replica --------------------------------------------------

    def cursor(self) -> int:
        name = self._meta()
        records = self._call(lambda: self.client.retrieve(name, [_CURSOR_POINT]))
        return int((records[0].payload or {}).get("cursor", 0)) if records else 0

    def set_cursor(self, seq: int) -> None:
        name = self._meta()
        point = models.PointStruct(id=_CURSOR_POINT, vector={}, payload={"cursor": seq})
        self._call(lambda: self.client.upsert(name, [point], wait=True))

    def close(self) -> None:
        self.client.close()

    # helpers -----------------------------------------------------------------------------------

    def _collection(self, collection: str, create: bool = False) -> str | None:
        """The Qdrant collection name, or None when it does not exist (and `create` is off)."""
        return self._ensure(
            self.settings.collection_prefix + check_collection_name(collection),
            self._create if create else None,
        )

    def _meta(self) -> str:
        name = self._ensure(self.settings.collection_prefix + META_SUFFIX, self._create_meta)
        assert name is not None
        return name

    def _create_meta(self, name: str) -> None:
        self.client.create_collection(name, vectors_config={})
        self._adopt_old_cursor(name)

    def _adopt_old_cursor(self, name: str) -> None:
        """Move the cursor of an index of the old naming (`<prefix>meta`) into `name`, and
        delete that collection so that a user collection `meta` can take its name. Moved,
        not replayed: the collections themselves keep their names, so the cursor still
        describes them. A `<prefix>meta` with a dense vector is the user's collection `meta`,
        not the old cursor's: it stays, and the sync starts from 0 (a full, idempotent replay
        from the store). The replica whose `create_collection` won does this; the others got
        409 and skip it."""
        old = self.settings.collection_prefix + OLD_META_SUFFIX
        if not self.client.collection_exists(old):
            return
        vectors = self.client.get_collection(old).config.params.vectors
        if vectors:
            log.warning("index: %s is a user collection; replaying the log from 0", old)
            return
        records = self.client.retrieve(old, [_CURSOR_POINT])
        if records:
            point = models.PointStruct(id=_CURSOR_POINT, vector={}, payload=records[0].payload)
            self.client.upsert(name, [point], wait=True)
        self.client.delete_collection(old)
        log.warning("index: moved the sync cursor from %s to %s", old, name)

    def _ensure(self, name: str, create: Callable[[str], object] | None) -> str | None:
        """`name` once it exists (created with `create` when given), else None; remembered,
        so a collection is looked up once per process."""
        with self._lock:
            if name in self._known:
                return name
        if not self._call(lambda: self.client.collection_exists(name)):
            if create is None:
                return None
            try:
                create(name)
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # 409: another replica created it first
                    raise BackendError(
                        f"Qdrant at {self.settings.url}: cannot create {name}: {exc}"
                    ) from exc
        with self._lock:
            self._known.add(name)
        return name

    def _create(self, name: str) -> None:
        settings = self.settings
        self.client.create_collection(
            name,
            vectors_config={
                DENSE: models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            hnsw_config=models.HnswConfigDiff(
                m=settings.hnsw_m, ef_construct=settings.hnsw_ef_construct
            ),
            shard_number=settings.shards,
            replication_factor=settings.replicas,
        )
        if self.local:  # local mode has no payload indexes (and warns about them)
            return
        for field in ("document_id", "content_hash"):  # the delete filters
            self.client.create_payload_index(
                name, field, models.PayloadSchemaType.KEYWORD, wait=True
            )

    def _call(self, operation: Any) -> Any:
        """Run a client call; connection and server errors become a readable BackendError."""
        try:
            return operation()
        except BackendError:
            raise
        except (UnexpectedResponse, OSError, RuntimeError, ValueError) as exc:
            raise BackendError(f"Qdrant at {self.settings.url} failed: {exc}") from exc
        except Exception as exc:  # httpx / grpc transport errors
            if type(exc).__module__.startswith(("httpx", "httpcore", "grpc")):
                raise BackendError(f"Qdrant at {self.settings.url} is unreachable: {exc}") from exc
            raise


def _sparse(vector: Any) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def _hits(points: Sequence[models.ScoredPoint]) -> list[LegHit]:
    return [LegHit(int(p.id), float(p.score), rank) for rank, p in enumerate(points, start=1)]


def _match(key: str, value: Any) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))
