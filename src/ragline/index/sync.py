"""Index sync: the index follows the store's index log.

Workers never touch the index. A job's chunks, with their vectors and BM25 lengths, are
committed to the store together with a log entry. The one process that owns the index applies
the entries in order:
- `(document, hash)`: upsert that version's points, then delete the document's other points;
- `(document, None)`: delete the document's points.

Entries are idempotent (point ids are deterministic), and the index stores the last applied
sequence number, so a crash at any step is repaired by applying the log again. The log is
applied a page (200 entries) at a time: one upsert per collection, then the deletions, then the
cursor, which the index writes only after its data is durable. Retrieval
resolves hits through the store, so points that are stale or not yet synced are never served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragline.errors import one_line
from ragline.index.base import IndexPoint, VectorIndex
from ragline.store import Store
from ragline.store.repository import IndexedChunk, LogEntry, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncLag:
    """How far the index is behind the store: `entries` = the store's last log sequence number
    minus the index cursor; `seconds` = the age of the oldest entry not applied (0 when none)."""

    cursor: int
    entries: int
    seconds: float


class IndexSync:
    """Applies new index-log entries to one index. Thread-safe; one applier at a time."""

    def __init__(self, store: Store, index: VectorIndex, optimize_after_points: int = 0) -> None:
        self.store = store
        self.index = index
        self.optimize_after_points = optimize_after_points
        self.written = 0  # points upserted since the last optimize
        self.failures = 0  # background sync attempts failed in a row (SyncThread)
        self.last_error: str | None = None  # the last of them, while failing
        self._lock = threading.Lock()
        self._cursor: tuple[int, float] | None = None  # (cursor, monotonic time it was read)

    def optimize(self, force: bool = True) -> bool:
        """Build the index's search structures; without `force`, only once
        `optimize_after_points` points were written since the last time (0: never)."""
        due = self.optimize_after_points and self.written >= self.optimize_after_points
        if not (force or due):
            return False
        with self._lock:
            started = time.perf_counter()
            built = self.index.optimize()
            if built:
                log.warning(
                    "index optimized after %d new points in %.1f s (the process paused meanwhile)",
                    self.written,
                    time.perf_counter() - started,
                )
            self.written = 0
            return built

    def catch_up(self) -> int:
        """Apply every pending entry; returns how many were applied."""
        with self._lock:
            return self._catch_up()

    def rebuild(
        self, collection: str | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Rebuild the index from the store (`ragline reindex`): drop it, then replay the log.

        Repairs an index restored from a copy taken mid-write, a lost cursor, or vectors from
        an old embedding configuration. With `collection`, only that collection is dropped
        and replayed (up to the cursor; later entries come with the next catch-up).
        Returns the entries applied; `progress` is called after each page of them."""
        applied = 0
        with self._lock:
            if collection is None:
                for stats in self.store.list_collections():
                    self.index.drop(stats.name)
                self.index.set_cursor(0)
                self._remember(0)
                return self._catch_up(progress)
            self.index.drop(collection)
            upto, seq = self.index.cursor(), 0
            while seq < upto and (entries := self.store.log_after(seq)):
                mine = [e for e in entries if e.seq <= upto and e.collection == collection]
                self._apply(mine)
                applied += len(mine)
                if progress:
                    progress(applied)
                seq = entries[-1].seq
            self.index.set_cursor(upto)  # flushes what was written
        return applied

    def _catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        applied = 0
        while entries := self.store.log_after(self.cursor()):
            self._apply(entries)
            self.index.set_cursor(entries[-1].seq)
            self._remember(entries[-1].seq)
            applied += len(entries)
            if progress:
                progress(applied)
        return applied

    def pending(self) -> bool:
        return self.store.last_log_seq() > self.cursor()

    def cursor(self, max_age_s: float = 0.0) -> int:
        """The last log entry the index has applied. With `max_age_s`, a value read that
        recently is reused (on a Qdrant server the read is a network call); one this process
        wrote is known at once, and other replicas' progress within `max_age_s`."""
        memo = self._cursor
        if max_age_s and memo is not None and time.monotonic() - memo[1] < max_age_s:
            return memo[0]
        return self._remember(self.index.cursor())

    def _remember(self, cursor: int) -> int:
        self._cursor = (cursor, time.monotonic())
        return cursor

    def lag(self) -> SyncLag:
        """The index's lag behind the store's log (for /readyz and /metrics)."""
        cursor = self.cursor()
        entries = max(0, self.store.last_log_seq() - cursor)
        oldest = self.store.log_entry_time_after(cursor) if entries else None
        seconds = max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0
        return SyncLag(cursor, entries, seconds)

    def _apply(self, entries: Sequence[LogEntry]) -> None:
        """Apply one page of the log: per collection, one upsert of every new version's
        points, then the deletions. The store holds only each document's latest version, so
        only a document's last entry in the page matters (earlier ones find their chunks
        superseded and would be skipped anyway)."""
        latest: dict[tuple[str, str], LogEntry] = {}
        for entry in entries:
            latest.pop((entry.collection, entry.document_id), None)
            latest[(entry.collection, entry.document_id)] = entry
        by_collection: dict[str, list[LogEntry]] = {}
        for entry in latest.values():
            by_collection.setdefault(entry.collection, []).append(entry)
        for collection, mine in by_collection.items():
            self._apply_collection(collection, mine)

    def _apply_collection(self, collection: str, entries: list[LogEntry]) -> None:
        points: list[IndexPoint] = []
        deletions: list[tuple[str, str | None]] = []
        for entry in entries:
            if entry.content_hash is None:
                deletions.append((entry.document_id, None))
                continue
            chunks = self.store.indexable_chunks(entry.document_id, entry.content_hash)
            if not chunks:  # superseded or deleted since: a later entry covers it
                continue
            points.extend(_points(entry, chunks))
            deletions.append((entry.document_id, entry.content_hash))
        if points:
            total, count = self.store.term_count_totals(collection)
            self.index.upsert(collection, points, avg_len=total / max(1, count))
            self.written += len(points)
        for document_id, keep_hash in deletions:
            self.index.delete_document(collection, document_id, keep_hash=keep_hash)
        log.debug(
            "indexed collection=%s documents=%d points=%d", collection, len(entries), len(points)
        )


def _points(entry: LogEntry, chunks: Sequence[IndexedChunk]) -> list[IndexPoint]:
    return [
        IndexPoint(
            point_id=c.chunk.point_id,
            vector=c.vector,
            text=c.chunk.text,
            payload={
                "document_id": c.chunk.document_id,
                "chunk_id": c.chunk.id,
                "content_hash": entry.content_hash,
                "position": c.chunk.position,
            },
        )
        for c in chunks
    ]


class SyncThread:
    """Keeps an index in sync in the background (used by long-running processes)."""

    def __init__(self, sync: IndexSync, interval_s: float = 0.2) -> None:
        self.sync = sync
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragline-index-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        """Failures in a row are kept on the `IndexSync`, where /readyz and /metrics read them."""
        sync = self.sync
        while not self._stop.is_set():
            try:
                if sync.pending():
                    sync.catch_up()
                    sync.optimize(force=False)
                sync.failures, sync.last_error = 0, None
            except Exception as exc:  # keep syncing after a failure; the entry is retried
                sync.failures += 1
                sync.last_error = one_line(exc)
                log.warning(
                    "index sync failed (%d in a row); retrying: %s", sync.failures, sync.last_error
                )
                log.debug("index sync error", exc_info=True)
            # an outage (store or index down) is retried 0.2 s doubling to 10 s, not 5 times a s
            failures = sync.failures
            wait = self.interval_s if not failures else min(10.0, self.interval_s * 2**failures)
            self._stop.wait(wait)
