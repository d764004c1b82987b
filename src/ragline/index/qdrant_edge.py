"""Embedded index: one Qdrant Edge shard per collection (dense HNSW + BM25 with IDF), on disk.
BM25 vectors come from `Bm25Encoder` (index/bm25.py), shared with the Qdrant server backend.

Layout of the index folder: `sync-cursor` (the last applied index-log sequence number) and
`collections/<name>/`, one shard per collection. User-chosen names only ever name folders
inside `collections/`, so no collection can land on the cursor, its temporary file or anything
the index adds later. Indexes from before kept their shards next to the cursor (a collection
named `sync-cursor` then broke the sync); they are moved into `collections/` when opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from ragline.config import IndexSettings
from ragline.domain import LegHit, check_collection_name
from ragline.errors import BackendError
from ragline.index.base import IndexPoint
from ragline.index.bm25 import Bm25Encoder

log = logging.getLogger(__name__)

DENSE, SPARSE = "dense", "bm25"
CURSOR_FILE = "sync-cursor"
COLLECTIONS_FOLDER = "collections"
SHARD_MARKER = "edge_config.json"  # every Qdrant Edge shard folder holds one
_MIGRATING_FOLDER = ".migrating-shards"  # a dot: never a collection name (nor a shard of old)


class QdrantEdgeIndex:
    """The embedded default index. Thread-safe: shards are opened once and shared.

    Its searches hold the GIL: two threads searching take longer than one doing both
    (docs/benchmarks.md), so the retriever runs the legs one after the other."""

    concurrent_search = False

    def __init__(self, root: Path, dimensions: int, settings: IndexSettings) -> None:
        self.root = root
        self.dimensions = dimensions
        self.settings = settings
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.Lock()
        self.bm25 = Bm25Encoder(settings)
        self.collections = root / COLLECTIONS_FOLDER
        _move_flat_shards(root)

    def upsert(self, collection: str, points: Sequence[IndexPoint], avg_len: float) -> None:
        if not points:
            return
        records = [
            qe.Point(
                p.point_id,
                {
                    DENSE: p.vector.astype(float).tolist(),
                    SPARSE: self.bm25.document(p.text, avg_len),
                },
                p.payload,
            )
            for p in points
        ]
        shard = self._shard(collection, create=True)
        assert shard is not None  # create=True always yields a shard
        shard.update(qe.UpdateOperation.upsert_points(records))

    def delete_document(
        self, collection: str, document_id: str, keep_hash: str | None = None
    ) -> None:
        shard = self._shard(collection)
        if shard is None:
            return
        must_not: list[Any] | None = [_match("content_hash", keep_hash)] if keep_hash else None
        selector = qe.Filter(must=[_match("document_id", document_id)], must_not=must_not)
        shard.update(qe.UpdateOperation.delete_points_by_filter(selector))

    def search_dense(self, collection: str, vector: np.ndarray, limit: int) -> list[LegHit]:
        query = qe.Query.Nearest(vector.astype(float).tolist(), using=DENSE)
        params = qe.SearchParams(hnsw_ef=max(self.settings.hnsw_ef, limit))
        return self._query(collection, qe.QueryRequest(limit=limit, query=query, params=params))

    def search_sparse(self, collection: str, text: str, limit: int) -> list[LegHit]:
        sparse = self.bm25.query(text)
        if not sparse.indices:
            return []
        query = qe.Query.Nearest(sparse, using=SPARSE)
        return self._query(collection, qe.QueryRequest(limit=limit, query=query))

    def vectors(self, collection: str, point_ids: Sequence[int]) -> dict[int, np.ndarray]:
        shard = self._shard(collection)
        if shard is None or not point_ids:
            return {}
        records = shard.retrieve(list(point_ids), False, [DENSE])
        return {int(r.id): np.asarray(_named(r.vector)[DENSE], dtype=np.float32) for r in records}

    def term_counts(self, texts: Sequence[str]) -> list[int]:
        return self.bm25.term_counts(texts)

    def count(self, collection: str) -> int:
        shard = self._shard(collection)
        return 0 if shard is None else int(shard.count(qe.CountRequest(exact=True)))

    def cursor(self) -> int:
        """0 when there is no cursor yet, or an unreadable number (a replay from the start is
        always correct); any other failure to read it is an error, not a silent replay."""
        try:
            return int((self.root / CURSOR_FILE).read_text())
        except FileNotFoundError:
            return 0
        except ValueError:
            log.warning("index cursor at %s is unreadable: replaying the log", self.root)
            return 0
        except OSError as exc:
            raise BackendError(f"cannot read the index cursor: {exc}") from exc

    def optimize(self) -> bool:
        """Run Qdrant Edge's segment optimizers on every collection: they build the HNSW graph
        (until then dense search is a full scan: 10 ms at 100k points, 0.9 ms after). Edge
        never optimizes by itself, and `optimize` holds the GIL (about 60 s at 100k points on
        2 cores), so it runs at start-up, after CLI ingestion and reindexing, and in the sync
        thread only past `index.optimize_after_points`. A no-op costs 0.2 ms."""
        built = False
        for config in sorted(self.collections.glob(f"*/{SHARD_MARKER}")):
            shard = self._shard(config.parent.name)
            if shard is not None:
                built = bool(shard.optimize()) or built
        return built

    def set_cursor(self, seq: int) -> None:
        """Flush every open shard, then record `seq`: the cursor never runs ahead of the data
        on disk (writes are visible to queries at once; flushing once per page of the log,
        not once per write, is what makes the sync fast)."""
        with self._lock:
            shards = list(self._shards.values())
        for shard in shards:
            shard.flush()
        try:
            _write_atomically(self.root / CURSOR_FILE, str(seq))
        except OSError as exc:
            raise BackendError(f"cannot write the index cursor: {exc}") from exc

    def drop(self, collection: str) -> None:
        with self._lock:
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._path(collection), ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()

    def _query(self, collection: str, request: qe.QueryRequest) -> list[LegHit]:
        shard = self._shard(collection)
        if shard is None:
            return []
        points = shard.query(request)
        return [LegHit(int(p.id), float(p.score), rank) for rank, p in enumerate(points, start=1)]

    def _path(self, collection: str) -> Path:
        return self.collections / check_collection_name(collection)

    def _shard(self, collection: str, create: bool = False) -> qe.EdgeShard | None:
        with self._lock:
            shard = self._shards.get(collection)
            if shard is not None:
                return shard
            path = self._path(collection)
            try:
                if (path / SHARD_MARKER).exists():
                    shard = qe.EdgeShard.load(str(path))
                elif create:
                    path.mkdir(parents=True, exist_ok=True)
                    shard = qe.EdgeShard.create(str(path), self._config())
                else:
                    return None
            except Exception as exc:  # the engine raises a bare Exception
                raise BackendError(_open_error(path, exc)) from exc
            self._shards[collection] = shard
            return shard

    def _config(self) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=self.dimensions, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(
                m=self.settings.hnsw_m,
                ef_construct=self.settings.hnsw_ef_construct,
                full_scan_threshold=10000,
                max_indexing_threads=2,
            ),
        )


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file of a unique name, then rename: a reader sees the old text
    or the new, and no folder or file left around can take the temporary file's place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _move_flat_shards(root: Path) -> None:
    """Move the shards of an index of the old layout (directly under the root, beside the
    cursor) into `collections/`: renames, so the shards, their HNSW graphs and the cursor stay
    as they were and nothing is replayed. They go through a staging folder first, because one
    of them may be a collection named `collections`. Safe to interrupt: the next open resumes.

    A shard already in `collections/` under the same name (an older ragline ran on a migrated
    index) means two copies of unknown age: both are dropped and the cursor reset to 0, so the
    sync rebuilds every collection from the store."""
    if not root.is_dir():
        return
    staging = root / _MIGRATING_FOLDER
    flat = [p for p in root.iterdir() if p != staging and (p / SHARD_MARKER).is_file()]
    if not flat and not staging.is_dir():
        return
    staging.mkdir(exist_ok=True)
    for shard in flat:
        shard.rename(staging / shard.name)
    collections = root / COLLECTIONS_FOLDER
    collections.mkdir(exist_ok=True)
    moved = 0
    for shard in sorted(staging.iterdir()):
        target = collections / shard.name
        if target.exists():
            log.warning("index: two copies of collection %s; rebuilding from the store", shard.name)
            shutil.rmtree(target)
            shutil.rmtree(shard)
            _write_atomically(root / CURSOR_FILE, "0")
            continue
        shard.rename(target)
        moved += 1
    staging.rmdir()
    log.warning("index: moved %d collection shards into %s (new layout)", moved, collections)


def _open_error(path: Path, exc: Exception) -> str:
    if "WouldBlock" in str(exc):
        return (
            f"the index at {path} is open in another ragline process (is `ragline serve` "
            "running?); stop it, or use that process's HTTP API"
        )
    return f"cannot open the index at {path}: {exc}"


def _named(vector: Any) -> dict[str, Any]:
    if not isinstance(vector, dict):
        raise TypeError(f"expected named vectors, got {type(vector).__name__}")
    return vector


def _match(key: str, value: Any) -> qe.FieldCondition:
    return qe.FieldCondition(key=key, match=qe.MatchValue(value))
