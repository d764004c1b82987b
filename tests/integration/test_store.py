"""The SQL store on SQLite and PostgreSQL: submissions, job claims, leases, swaps, deletes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from ragline.domain import Chunk
from ragline.errors import InvalidRequestError, LeaseLostError, NotFoundError
from ragline.store import Store, create_store_engine, migrate
from ragline.store.repository import IndexedChunk


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = create_store_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent
    yield Store(engine)
    engine.dispose()


def chunk(document_id: str, position: int, text: str = "t") -> IndexedChunk:
    record = Chunk(
        f"{document_id[:8]}{position:04d}{'0' * 20}",
        10_000 + position,
        document_id,
        "c",
        position,
        text,
        1,
        {},
    )
    return IndexedChunk(record, term_count=1, vector=np.full(4, position, dtype=np.float32))


def test_identical_content_is_a_no_op_even_under_another_name(store: Store) -> None:
    """Same bytes in the same collection: the existing document comes back and no job is queued."""
    first = store.submit("c", "a.txt", b"hello", 3)
    again = store.submit("c", "copy.txt", b"hello", 3)
    assert first.job is not None and again.duplicate
    assert again.document.id == first.document.id
    assert store.submit("other", "a.txt", b"hello", 3).job is not None  # other collection: new


def test_changed_content_updates_the_same_document_with_a_new_job(store: Store) -> None:
    first = store.submit("c", "a.txt", b"v1", 3)
    second = store.submit("c", "a.txt", b"v2", 3)
    assert second.document.id == first.document.id
    assert second.job is not None and second.job.content_hash != first.document.content_hash
    assert store.content(second.job.content_hash) == b"v2"


def test_a_job_is_claimed_once_until_its_lease_expires(store: Store) -> None:
    """Two claims cannot both win; an expired lease makes the job claimable again."""
    store.submit("c", "a.txt", b"x", 3)
    job = store.claim_job("w1", lease_s=0.3)
    assert job is not None and job.attempts == 1
    assert store.claim_job("w2", lease_s=0.3) is None
    time.sleep(0.5)
    resumed = store.claim_job("w2", lease_s=60)
    assert resumed is not None and resumed.id == job.id and resumed.attempts == 2


def test_failed_job_is_retried_after_backoff_then_dead(store: Store) -> None:
    """A retry waits run_after; a final failure marks the job dead and the document failed."""
    store.submit("c", "a.txt", b"x", 2)
    job = store.claim_job("w", 60)
    assert job is not None
    store.fail_job(job, "boom", retry_in_s=0.3)
    assert store.claim_job("w", 60) is None  # not due yet
    time.sleep(0.5)
    again = store.claim_job("w", 60)
    assert again is not None and again.attempts == 2
    with pytest.raises(InvalidRequestError, match="only a dead job"):
        store.retry_job(job.id)
    store.fail_job(again, "boom again", retry_in_s=None)
    assert store.get_job(job.id).status == "dead"
    document = store.get_document(job.document_id)
    assert document.status == "failed" and document.error == "boom again"
    retried = store.retry_job(job.id)
    assert retried.status == "queued" and retried.attempts == 0


def test_a_worker_that_outlived_its_lease_cannot_write(store: Store) -> None:
    """A renewed lease holds; once it expires and another worker claims the job, the first
    worker can neither renew, complete nor fail it, and nothing it sent is written."""
    store.submit("c", "a.txt", b"x", 3)
    stalled = store.claim_job("w1", lease_s=0.4)
    assert stalled is not None and stalled.locked_by == "w1"
    time.sleep(0.25)
    assert store.renew_lease(stalled, 0.4)  # renewed: still ours past the first lease
    time.sleep(0.25)
    assert store.claim_job("w2", lease_s=60) is None
    time.sleep(0.3)
    owner = store.claim_job("w2", lease_s=60)
    assert owner is not None and owner.id == stalled.id and owner.locked_by == "w2"
    assert not store.renew_lease(stalled, 60)
    with pytest.raises(LeaseLostError):
        store.complete_job(stalled, [chunk(stalled.document_id, 0)], None, "text/plain")
    with pytest.raises(LeaseLostError):
        store.fail_job(stalled, "late", retry_in_s=None)
    assert store.chunks_of_document(stalled.document_id) == []
    assert store.get_job(owner.id).status == "running"
    assert store.complete_job(owner, [chunk(owner.document_id, 0)], None, "text/plain")
    assert store.get_document(owner.document_id).status == "ready"


def test_a_job_that_keeps_killing_its_worker_is_dead_lettered(store: Store) -> None:
    """Each worker vanishes mid-job (its lease expires); after max_attempts the next claim
    buries the job instead of handing it to a fourth victim."""
    submission = store.submit("c", "poison.pdf", b"x", 2)
    assert submission.job is not None
    for worker in ("w1", "w2"):
        assert store.claim_job(worker, lease_s=0.2) is not None
        time.sleep(0.3)
    assert store.claim_job("w3", lease_s=60) is None
    document = store.get_document(submission.document.id)
    job = store.get_job(submission.job.id)
    assert job.status == "dead" and job.attempts == 2
    assert "stopped without finishing it on each of 2 attempts (last: w2)" in (job.error or "")
    assert document.status == "failed" and document.error == job.error


def test_complete_swaps_chunks_and_bumps_the_collection_version(store: Store) -> None:
    submission = store.submit("c", "a.txt", b"x", 3)
    version = store.collection_version("c")
    job = store.claim_job("w", 60)
    assert job is not None
    assert store.complete_job(
        job, [chunk(job.document_id, 0), chunk(job.document_id, 1)], "T", "text/plain"
    )
    document = store.get_document(submission.document.id)
    assert (document.status, document.chunk_count, document.title) == ("ready", 2, "T")
    assert store.collection_version("c") == version + 1
    assert set(store.chunks_by_point_ids("c", [10_000, 10_001, 99])) == {10_000, 10_001}
    assert store.term_count_totals("c") == (2, 2)
    indexable = store.indexable_chunks(job.document_id, job.content_hash)
    assert [c.vector.tolist() for c in indexable] == [[0.0] * 4, [1.0] * 4]
    (entry,) = store.log_after(0)
    assert (entry.document_id, entry.content_hash) == (job.document_id, job.content_hash)


def test_a_reused_version_follows_this_stores_changes_at_once_and_others_within_max_age(
    store: Store,
) -> None:
    """Cache keys reuse a recently read version. A change through this store is seen at once;
    one through another store (another process) once the reused version is `max_age_s` old."""
    first = store.submit("c", "a.txt", b"x", 3)
    version = store.collection_version("c", max_age_s=60)
    job = store.claim_job("w", 60)
    assert job is not None
    store.complete_job(job, [chunk(job.document_id, 0)], None, "text/plain")
    assert store.collection_version("c", max_age_s=60) == version + 1
    store.delete_document(first.document.id)
    assert store.collection_version("c", max_age_s=60) == version + 2

    other = Store(store.engine)  # another process, as far as the reused versions go
    second = other.submit("c", "b.txt", b"y", 3)
    claimed = other.claim_job("w", 60)
    assert claimed is not None
    other.complete_job(claimed, [], None, "text/plain")
    assert store.collection_version("c", max_age_s=60) == version + 2  # reused
    assert store.collection_version("c") == version + 3  # exact
    time.sleep(0.25)
    other.delete_document(second.document.id)
    assert store.collection_version("c", max_age_s=0.2) == version + 4


def test_a_superseded_job_changes_no_chunks(store: Store) -> None:
    """When a newer version arrived meanwhile, the old job's chunks are not written."""
    store.submit("c", "a.txt", b"v1", 3)
    old = store.claim_job("w", 60)
    assert old is not None
    store.submit("c", "a.txt", b"v2", 3)
    assert not store.is_current(old)
    assert not store.complete_job(old, [chunk(old.document_id, 0)], None, "text/plain")
    assert store.chunks_of_document(old.document_id) == []


def test_delete_removes_document_chunks_jobs_and_unshared_content(store: Store) -> None:
    submission = store.submit("c", "a.txt", b"x", 3)
    job = store.claim_job("w", 60)
    assert job is not None
    store.complete_job(job, [chunk(job.document_id, 0)], None, "text/plain")
    store.delete_document(submission.document.id)
    with pytest.raises(NotFoundError):
        store.get_document(submission.document.id)
    with pytest.raises(NotFoundError):
        store.content(submission.document.content_hash)
    assert store.chunks_by_point_ids("c", [10_000]) == {}
    assert [c.documents for c in store.list_collections()] == [0]
    assert store.log_after(0)[-1].content_hash is None  # the index is told to remove it


def test_what_an_index_at_a_cursor_has_applied_per_collection_and_document(store: Store) -> None:
    """`applied_seq` is a collection's last log entry at or below the index's cursor (what
    cache keys hold), and `unindexed` the documents with an entry past it (what shows as
    `indexing`): a committed document is pending until the cursor passes its entry."""
    first = store.submit("c", "a.txt", b"one", 3)
    job = store.claim_job("w", 60)
    assert job is not None and store.complete_job(
        job, [chunk(job.document_id, 0)], None, "text/plain"
    )
    seq = store.last_log_seq()
    assert store.applied_seq("c", 0) == 0 and store.applied_seq("c", seq) == seq
    assert store.unindexed(0) == {first.document.id} and store.unindexed(seq) == set()
    store.submit("other", "b.txt", b"two", 3)
    other = store.claim_job("w", 60)
    assert other is not None
    store.complete_job(other, [chunk(other.document_id, 1)], None, "text/plain")
    assert store.applied_seq("c", store.last_log_seq()) == seq  # another collection's change
    assert store.unindexed(seq) == {other.document_id}
    store.delete_document(first.document.id)
    assert store.applied_seq("c", store.last_log_seq()) > seq  # the deletion is a change too
