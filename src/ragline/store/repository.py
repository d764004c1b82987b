"""Repository over the SQL schema. Every method is one short transaction."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from ragline.domain import Chunk, Document, Job, check_collection_name
from ragline.errors import (
    ConfigurationError,
    InvalidRequestError,
    LeaseLostError,
    NotFoundError,
)
from ragline.store.schema import chunks, collections, contents, documents, index_log, jobs

QUEUED, PROCESSING, READY, FAILED = "queued", "processing", "ready", "failed"
CHUNK_COLUMNS = [c for c in chunks.c if c.name != "vector"]  # a Chunk, without the 1.5 kB vector
JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_DEAD = "queued", "running", "done", "dead"


def utcnow() -> datetime:
    """Naive UTC: stored the same way on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Submission:
    """The outcome of submitting a file: the document, its new job (None when unchanged)."""

    document: Document
    job: Job | None

    @property
    def duplicate(self) -> bool:
        return self.job is None


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk with what the index needs: its BM25 length and its embedding."""

    chunk: Chunk
    term_count: int
    vector: np.ndarray


@dataclass(frozen=True)
class LogEntry:
    """One change the index must apply: index a document's version, or (no hash) remove it."""

    seq: int
    collection: str
    document_id: str
    content_hash: str | None


@dataclass(frozen=True)
class CollectionStats:
    name: str
    version: int
    documents: int
    chunks: int
    created_at: datetime


APPLIED_MEMO = 4096


class Store:
    """Collections, documents (with their raw bytes), chunks and ingestion jobs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._versions: dict[str, tuple[int, float]] = {}  # name -> (version, monotonic read)
        # (collection, cursor) -> the collection's last applied entry: fixed once the cursor is
        # known (the log only grows), so reused without expiry; bounded by APPLIED_MEMO
        self._applied: dict[tuple[str, int], int] = {}

    def close(self) -> None:
        self.engine.dispose()

    # collections ---------------------------------------------------------------------------

    def ensure_collection(self, name: str) -> None:
        with self.engine.begin() as conn:
            self._ensure_collection(conn, name)

    def list_collections(self) -> list[CollectionStats]:
        doc_count = (
            select(func.count())
            .where(documents.c.collection == collections.c.name)
            .scalar_subquery()
        )
        chunk_count = (
            select(func.count()).where(chunks.c.collection == collections.c.name).scalar_subquery()
        )
        query = select(collections, doc_count.label("docs"), chunk_count.label("chunks")).order_by(
            collections.c.name
        )
        with self.engine.connect() as conn:
            return [
                CollectionStats(r.name, r.version, r.docs, r.chunks, r.created_at)
                for r in conn.execute(query)
            ]

    def embedder_mismatches(self, fingerprint: str) -> dict[str, str]:
        """Collections holding vectors of another embedder than `fingerprint`, with theirs.

        Collections without one yet (empty, or from before migration m007) adopt it."""
        with self.engine.begin() as conn:
            conn.execute(
                update(collections)
                .where(collections.c.embedder.is_(None))
                .values(embedder=fingerprint)
            )
            rows = conn.execute(
                select(collections.c.name, collections.c.embedder).where(
                    collections.c.embedder != fingerprint
                )
            )
            return {row.name: row.embedder for row in rows}

    def reembed(
        self,
        collection: str,
        embed: Callable[[list[str]], np.ndarray],
        fingerprint: str,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Replace every chunk vector of `collection` with `embed(texts)`, then record the new
        embedder. Batches commit one by one: an interrupted run is finished by running it again
        (the collection keeps its old fingerprint until the last batch). Returns chunks done."""
        done, after = 0, ""
        while True:
            with self.engine.connect() as conn:
                batch = conn.execute(
                    select(chunks.c.id, chunks.c.text)
                    .where(chunks.c.collection == collection, chunks.c.id > after)
                    .order_by(chunks.c.id)
                    .limit(batch_size)
                ).all()
            if not batch:
                break
            vectors = np.asarray(embed([row.text for row in batch]), dtype=np.float32)
            with self.engine.begin() as conn:
                conn.execute(
                    update(chunks).where(chunks.c.id == bindparam("chunk_id")),
                    [
                        {"chunk_id": row.id, "vector": vector.tobytes()}
                        for row, vector in zip(batch, vectors, strict=True)
                    ],
                )
            done, after = done + len(batch), batch[-1].id
            if progress:
                progress(len(batch))
        with self.engine.begin() as conn:
            conn.execute(
                update(collections)
                .where(collections.c.name == collection)
                .values(embedder=fingerprint)
            )
        return done

    def collection_version(self, name: str, max_age_s: float = 0.0) -> int:
        """The collection's version, bumped by every change to its documents. With
        `max_age_s`, a version this process read that recently is reused: cache keys ask for
        it on every request, and the query cost 16 % of a cached answer at 500 requests/s.
        Changes made through this store are seen at once; those of other processes (worker
        processes, replicas) within `max_age_s`."""
        read_at = time.monotonic()
        seen = self._versions.get(name) if max_age_s else None
        if seen is not None and read_at - seen[1] < max_age_s:
            return seen[0]
        with self.engine.connect() as conn:
            version = conn.scalar(select(collections.c.version).where(collections.c.name == name))
        if version is None:
            raise NotFoundError(f"collection {name!r} does not exist")
        self._versions[name] = (int(version), read_at)
        return int(version)

    @contextmanager
    def _changing(self, collection: str) -> Iterator[None]:
        """Around a transaction that bumps `collection`'s version: the version this process
        reused is forgotten once it commits (or fails)."""
        try:
            yield
        finally:
            self._versions.pop(collection, None)

    # documents -----------------------------------------------------------------------------

    def submit(
        self,
        collection: str,
        source: str,
        data: bytes,
        max_attempts: int,
        media_type: str | None = None,
    ) -> Submission:
        """Record a file and queue its ingestion, unless the collection already has this content.

        Identical content (same hash in the collection) is a no-op. New content under a known
        source replaces that document's previous version once its job succeeds. An invalid
        collection name is refused here, where every path in (API, CLI) passes, rather than as
        a log entry that the index could never apply.
        """
        check_collection_name(collection)
        try:
            return self._submit(collection, source, data, max_attempts, media_type)
        except IntegrityError:  # a concurrent first upload of the same name or bytes won: the
            return self._submit(collection, source, data, max_attempts, media_type)  # retry sees it

    def _submit(
        self,
        collection: str,
        source: str,
        data: bytes,
        max_attempts: int,
        media_type: str | None,
    ) -> Submission:
        digest = content_hash(data)
        now = utcnow()
        with self.engine.begin() as conn:
            self._ensure_collection(conn, collection)
            same = conn.execute(
                select(documents).where(
                    documents.c.collection == collection, documents.c.content_hash == digest
                )
            ).first()
            if same is not None:
                return Submission(_document(same._mapping), None)
            if (
                conn.scalar(
                    select(contents.c.content_hash).where(contents.c.content_hash == digest)
                )
                is None
            ):
                conn.execute(insert(contents).values(content_hash=digest, data=data))
            values = dict(
                content_hash=digest,
                media_type=media_type,
                size_bytes=len(data),
                status=QUEUED,
                error=None,
                updated_at=now,
            )
            existing = conn.scalar(
                select(documents.c.id).where(
                    documents.c.collection == collection, documents.c.source == source
                )
            )
            if existing is None:
                document_id = uuid.uuid4().hex
                conn.execute(
                    insert(documents).values(
                        id=document_id,
                        collection=collection,
                        source=source,
                        chunk_count=0,
                        created_at=now,
                        **values,
                    )
                )
            else:
                document_id = existing
                conn.execute(
                    update(documents).where(documents.c.id == document_id).values(**values)
                )
            job_id = uuid.uuid4().hex
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    document_id=document_id,
                    collection=collection,
                    content_hash=digest,
                    status=JOB_QUEUED,
                    attempts=0,
                    max_attempts=max_attempts,
                    run_after=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            return Submission(self._get_document(conn, document_id), self._get_job(conn, job_id))

    def get_document(self, document_id: str) -> Document:
        with self.engine.connect() as conn:
            return self._get_document(conn, document_id)

    def list_documents(self, collection: str | None = None) -> list[Document]:
        query = select(documents).order_by(documents.c.collection, documents.c.source)
        if collection is not None:
            query = query.where(documents.c.collection == collection)
        with self.engine.connect() as conn:
            return [_document(r._mapping) for r in conn.execute(query)]

    def content(self, digest: str) -> bytes:
        with self.engine.connect() as conn:
            data = conn.scalar(select(contents.c.data).where(contents.c.content_hash == digest))
        if data is None:
            raise NotFoundError(f"content {digest[:12]} is not stored")
        return bytes(data)

    def delete_document(self, document_id: str) -> Document:
        """Remove a document, its chunks, jobs and (if unshared) its bytes; the caller cleans the index."""
        with self.engine.begin() as conn:
            document = self._get_document(conn, document_id)
            conn.execute(delete(chunks).where(chunks.c.document_id == document_id))
            conn.execute(delete(jobs).where(jobs.c.document_id == document_id))
            conn.execute(delete(documents).where(documents.c.id == document_id))
            self._drop_unreferenced_content(conn, document.content_hash)
            self._log(conn, document.collection, document_id, None)
            self._bump_version(conn, document.collection)
        self._versions.pop(document.collection, None)  # committed: no reuse of the old version
        return document

    # chunks --------------------------------------------------------------------------------

    def chunks_by_point_ids(self, collection: str, point_ids: Sequence[int]) -> dict[int, Chunk]:
        """The live chunks behind index hits; points the store does not know (stale) are absent.

        Looked up by the unique point id alone (the collection is checked on the rows): with
        the collection in the WHERE clause, SQLite walks the collection's index instead, which
        cost 24 ms per query at 10k chunks."""
        if not point_ids:
            return {}
        query = select(*CHUNK_COLUMNS).where(chunks.c.point_id.in_(list(point_ids)))
        with self.engine.connect() as conn:
            return {
                r.point_id: _chunk(r._mapping)
                for r in conn.execute(query)
                if r.collection == collection
            }

    def chunks_of_document(self, document_id: str) -> list[Chunk]:
        query = (
            select(*CHUNK_COLUMNS)
            .where(chunks.c.document_id == document_id)
            .order_by(chunks.c.position)
        )
        with self.engine.connect() as conn:
            return [_chunk(r._mapping) for r in conn.execute(query)]

    def term_count_totals(self, collection: str) -> tuple[int, int]:
        """(sum of BM25 term counts, number of chunks) in a collection: the BM25 average length."""
        query = select(func.coalesce(func.sum(chunks.c.term_count), 0), func.count()).where(
            chunks.c.collection == collection
        )
        with self.engine.connect() as conn:
            total, count = conn.execute(query).one()
        return int(total), int(count)

    def indexable_chunks(self, document_id: str, digest: str) -> list[IndexedChunk]:
        """The chunks of a document's version with their vectors; empty if that version is gone."""
        query = (
            select(chunks)
            .join(documents, documents.c.id == chunks.c.document_id)
            .where(chunks.c.document_id == document_id, documents.c.content_hash == digest)
            .order_by(chunks.c.position)
        )
        with self.engine.connect() as conn:
            return [
                IndexedChunk(
                    _chunk(r._mapping), r.term_count, np.frombuffer(r.vector, dtype=np.float32)
                )
                for r in conn.execute(query)
            ]

    # index log -----------------------------------------------------------------------------

    def log_after(self, seq: int, limit: int = 200) -> list[LogEntry]:
        """Index changes newer than `seq`, oldest first."""
        query = (
            select(index_log).where(index_log.c.seq > seq).order_by(index_log.c.seq).limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                LogEntry(r.seq, r.collection, r.document_id, r.content_hash)
                for r in conn.execute(query)
            ]

    def last_log_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.coalesce(func.max(index_log.c.seq), 0))) or 0)

    def applied_seq(self, collection: str, cursor: int) -> int:
        """The sequence number of `collection`'s last change that an index at `cursor` has
        applied (0: none). Cache keys hold it, so a retrieval made before the index applied a
        change is never cached as if made after (ix_index_log_collection_seq)."""
        memo = (collection, cursor)
        if (seq := self._applied.get(memo)) is not None:
            return seq
        query = select(func.coalesce(func.max(index_log.c.seq), 0)).where(
            index_log.c.collection == collection, index_log.c.seq <= cursor
        )
        with self.engine.connect() as conn:
            seq = int(conn.scalar(query) or 0)
        if len(self._applied) >= APPLIED_MEMO:
            self._applied.clear()
        self._applied[memo] = seq
        return seq

    def unindexed(self, cursor: int) -> set[str]:
        """Documents with a change the index at `cursor` has not applied yet (the log entries
        after the cursor: few, read by primary key)."""
        query = select(index_log.c.document_id).where(index_log.c.seq > cursor).distinct()
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def log_entry_time_after(self, seq: int) -> datetime | None:
        """When the first entry newer than `seq` was logged (naive UTC): how long the oldest
        change the index has not applied has waited. None when there is none."""
        query = (
            select(index_log.c.created_at)
            .where(index_log.c.seq > seq)
            .order_by(index_log.c.seq)
            .limit(1)
        )
        with self.engine.connect() as conn:
            created: datetime | None = conn.scalar(query)
            return created

    # jobs ----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        with self.engine.connect() as conn:
            return self._get_job(conn, job_id)

    def claim_job(
        self, worker_id: str, lease_s: float, job_ids: Iterable[str] | None = None
    ) -> Job | None:
        """Take the oldest runnable job (queued and due, or running with an expired lease).

        The claim is a conditional UPDATE, so two workers can never both win the same job;
        on PostgreSQL the candidate is picked with FOR UPDATE SKIP LOCKED.
        """
        now = utcnow()
        self._bury_lost_jobs(now)
        runnable = or_(
            and_(jobs.c.status == JOB_QUEUED, jobs.c.run_after <= now),
            and_(jobs.c.status == JOB_RUNNING, jobs.c.locked_until < now),
        )
        candidates = select(jobs.c.id).where(runnable).order_by(jobs.c.created_at).limit(1)
        if job_ids is not None:
            candidates = candidates.where(jobs.c.id.in_(list(job_ids)))
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            job_id = conn.scalar(candidates)
            if job_id is None:
                return None
            claimed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, runnable)
                .values(
                    status=JOB_RUNNING,
                    attempts=jobs.c.attempts + 1,
                    locked_until=now + timedelta(seconds=lease_s),
                    locked_by=worker_id,
                    updated_at=now,
                )
            )
            if claimed.rowcount != 1:
                return None
            job = self._get_job(conn, job_id)
            conn.execute(
                update(documents)
                .where(
                    documents.c.id == job.document_id, documents.c.content_hash == job.content_hash
                )
                .values(status=PROCESSING, updated_at=now)
            )
            return job

    def _bury_lost_jobs(self, now: datetime) -> None:
        """Dead-letter the jobs whose worker vanished (lease expired) on their last attempt.

        A document that kills its worker outright (out of memory, a native crash, a hang
        past the lease) never reaches `fail_job`; without this it would be claimed, and
        would kill a worker, forever."""
        lost = and_(
            jobs.c.status == JOB_RUNNING,
            jobs.c.locked_until < now,
            jobs.c.attempts >= jobs.c.max_attempts,
        )
        with self.engine.connect() as conn:
            lost_jobs = [_job(r._mapping) for r in conn.execute(select(jobs).where(lost))]
        for job in lost_jobs:
            error = (
                f"the worker running this job stopped without finishing it on each of "
                f"{job.attempts} attempts (last: {job.locked_by}); the document may crash "
                f"or hang the parser"
            )
            try:
                with self.engine.begin() as conn:
                    self._dead_letter(conn, job, error, now)
            except LeaseLostError:  # another worker claimed it between the two statements
                continue

    def renew_lease(self, job: Job, lease_s: float) -> bool:
        """Extend the lease of a running job this worker holds; False when it lost the lease
        (expired and taken by another worker): the caller must then drop its result."""
        now = utcnow()
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(jobs)
                .where(*_held(job))
                .values(locked_until=now + timedelta(seconds=lease_s), updated_at=now)
            )
            return renewed.rowcount == 1

    def is_current(self, job: Job) -> bool:
        """False when a newer version of the document superseded this job's content."""
        with self.engine.connect() as conn:
            digest = conn.scalar(
                select(documents.c.content_hash).where(documents.c.id == job.document_id)
            )
        return digest == job.content_hash

    def complete_job(
        self,
        job: Job,
        new_chunks: Sequence[IndexedChunk],
        title: str | None,
        media_type: str,
        embedder: str | None = None,
    ) -> bool:
        """Swap the document's chunks for `new_chunks` and log the change for the index, in one
        transaction. Returns False (and changes nothing but the job) when superseded meanwhile.

        `embedder` is the fingerprint of the model that made the vectors: the collection takes
        it if it has none, and ConfigurationError refuses chunks from any other model."""
        now = utcnow()
        with self._changing(job.collection), self.engine.begin() as conn:
            current = conn.scalar(
                select(documents.c.content_hash)
                .where(documents.c.id == job.document_id)
                .with_for_update()
            )
            if new_chunks and embedder is not None:
                self._claim_embedder(conn, job.collection, embedder)
            self._finish(conn, job, JOB_DONE, None, now)
            if current != job.content_hash:
                return False
            conn.execute(delete(chunks).where(chunks.c.document_id == job.document_id))
            if new_chunks:
                conn.execute(insert(chunks), [_chunk_row(c) for c in new_chunks])
            conn.execute(
                update(documents)
                .where(documents.c.id == job.document_id)
                .values(
                    status=READY,
                    error=None,
                    chunk_count=len(new_chunks),
                    title=title,
                    media_type=media_type,
                    updated_at=now,
                )
            )
            self._log(conn, job.collection, job.document_id, job.content_hash)
            self._bump_version(conn, job.collection)
            return True

    def fail_job(self, job: Job, error: str, retry_in_s: float | None) -> Job:
        """Record a failed attempt: back to the queue after `retry_in_s`, or dead (None)."""
        now = utcnow()
        with self.engine.begin() as conn:
            if retry_in_s is None:
                self._dead_letter(conn, job, error, now)
            else:
                requeued = conn.execute(
                    update(jobs)
                    .where(*_held(job))
                    .values(
                        status=JOB_QUEUED,
                        error=error,
                        run_after=now + timedelta(seconds=retry_in_s),
                        locked_until=None,
                        locked_by=None,
                        updated_at=now,
                    )
                )
                if requeued.rowcount != 1:
                    raise LeaseLostError(f"job {job.id}: the lease expired and it was taken over")
            return self._get_job(conn, job.id)

    def retry_job(self, job_id: str) -> Job:
        """Put a dead job back in the queue with a fresh attempt budget."""
        now = utcnow()
        with self.engine.begin() as conn:
            job = self._get_job(conn, job_id)
            if job.status != JOB_DEAD:
                raise InvalidRequestError(
                    f"job {job_id} is {job.status}: only a dead job can be retried"
                )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    status=JOB_QUEUED, attempts=0, run_after=now, locked_until=None, updated_at=now
                )
            )
            conn.execute(
                update(documents)
                .where(
                    documents.c.id == job.document_id, documents.c.content_hash == job.content_hash
                )
                .values(status=QUEUED, error=None, updated_at=now)
            )
            return self._get_job(conn, job_id)

    def job_counts(self) -> dict[str, int]:
        """Jobs by state: queued (never failed), failed (waiting out a retry), running, dead."""
        retrying = jobs.c.error.is_not(None)
        query = select(jobs.c.status, retrying.label("retrying"), func.count()).group_by(
            jobs.c.status, retrying
        )
        counts: dict[str, int] = {}
        with self.engine.connect() as conn:
            for status, is_retrying, count in conn.execute(query):
                state = "failed" if status == JOB_QUEUED and is_retrying else status
                counts[state] = counts.get(state, 0) + int(count)
        return counts

    def pending_jobs(self) -> int:
        query = select(func.count()).where(jobs.c.status.in_([JOB_QUEUED, JOB_RUNNING]))
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    # helpers -------------------------------------------------------------------------------

    def _ensure_collection(self, conn: Connection, name: str) -> None:
        if conn.scalar(select(collections.c.name).where(collections.c.name == name)) is None:
            conn.execute(insert(collections).values(name=name, version=0, created_at=utcnow()))

    def _claim_embedder(self, conn: Connection, name: str, fingerprint: str) -> None:
        held = conn.scalar(
            select(collections.c.embedder).where(collections.c.name == name).with_for_update()
        )
        if held is None:
            conn.execute(
                update(collections).where(collections.c.name == name).values(embedder=fingerprint)
            )
        elif held != fingerprint:
            raise ConfigurationError(
                f"collection {name!r} holds vectors from {held}, not from this worker's embedder "
                f"({fingerprint}): align the embedding settings, or run `ragline reindex`"
            )

    def _bump_version(self, conn: Connection, name: str) -> None:
        conn.execute(
            update(collections)
            .where(collections.c.name == name)
            .values(version=collections.c.version + 1)
        )

    def _log(self, conn: Connection, collection: str, document_id: str, digest: str | None) -> None:
        conn.execute(
            insert(index_log).values(
                collection=collection,
                document_id=document_id,
                content_hash=digest,
                created_at=utcnow(),
            )
        )

    def _finish(
        self, conn: Connection, job: Job, status: str, error: str | None, now: datetime
    ) -> None:
        """End a job this worker holds; LeaseLostError (rolling the transaction back) when its
        lease expired and another worker took the job meanwhile."""
        finished = conn.execute(
            update(jobs)
            .where(*_held(job))
            .values(status=status, error=error, locked_until=None, updated_at=now)
        )
        if finished.rowcount != 1:
            raise LeaseLostError(
                f"job {job.id}: the lease of {job.locked_by} expired and the job was taken over"
            )

    def _dead_letter(self, conn: Connection, job: Job, error: str, now: datetime) -> None:
        """The job dead, its document version failed, the error kept on both."""
        self._finish(conn, job, JOB_DEAD, error, now)
        conn.execute(
            update(documents)
            .where(documents.c.id == job.document_id, documents.c.content_hash == job.content_hash)
            .values(status=FAILED, error=error, updated_at=now)
        )

    def _drop_unreferenced_content(self, conn: Connection, digest: str) -> None:
        used = conn.scalar(select(func.count()).where(documents.c.content_hash == digest))
        pending = conn.scalar(select(func.count()).where(jobs.c.content_hash == digest))
        if not used and not pending:
            conn.execute(delete(contents).where(contents.c.content_hash == digest))

    def _get_document(self, conn: Connection, document_id: str) -> Document:
        row = conn.execute(select(documents).where(documents.c.id == document_id)).first()
        if row is None:
            raise NotFoundError(f"document {document_id} does not exist")
        return _document(row._mapping)

    def _get_job(self, conn: Connection, job_id: str) -> Job:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"job {job_id} does not exist")
        return _job(row._mapping)


def _document(row: RowMapping) -> Document:
    return Document(**{name: row[name] for name in Document.__dataclass_fields__})


def _held(job: Job) -> tuple[Any, ...]:
    """WHERE clauses matching `job` only while still running under the same worker's lease."""
    return (jobs.c.id == job.id, jobs.c.status == JOB_RUNNING, jobs.c.locked_by == job.locked_by)


def _job(row: RowMapping) -> Job:
    return Job(**{name: row[name] for name in Job.__dataclass_fields__})


def _chunk(row: RowMapping) -> Chunk:
    return Chunk(
        id=row["id"],
        point_id=row["point_id"],
        document_id=row["document_id"],
        collection=row["collection"],
        position=row["position"],
        text=row["text"],
        token_count=row["token_count"],
        metadata=dict(row["metadata"] or {}),
    )


def _chunk_row(indexed: IndexedChunk) -> dict[str, Any]:
    chunk = indexed.chunk
    return {
        "id": chunk.id,
        "point_id": chunk.point_id,
        "document_id": chunk.document_id,
        "collection": chunk.collection,
        "position": chunk.position,
        "text": chunk.text,
        "token_count": chunk.token_count,
        "term_count": indexed.term_count,
        "metadata": chunk.metadata,
        "vector": np.asarray(indexed.vector, dtype=np.float32).tobytes(),
    }
