"""The index contract on both backends (Qdrant Edge embedded; a Qdrant server through
qdrant-client, whose local mode stands in for the server here), their congruence on the fixture
corpus, and `ragline reindex`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from typer.testing import CliRunner

from ragline.cli import app
from ragline.config import IndexSettings, Settings
from ragline.errors import InvalidRequestError
from ragline.factory import Runtime
from ragline.index.base import IndexPoint, VectorIndex
from ragline.index.qdrant_edge import QdrantEdgeIndex
from ragline.index.qdrant_server import QdrantServerIndex
from tests.helpers import ingest, updated

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
QUESTIONS = [
    "How do I report a security vulnerability?",
    "What is the capital of Normandy?",
    "Which file formats can be converted to Markdown?",
    "How are embeddings computed?",
]
TEXTS = [
    "Report security vulnerabilities by email to the security team.",
    "Normandy is a region in northern France; Rouen is its capital.",
    "Markdown conversion supports PDF, DOCX and HTML files.",
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(params=["edge", "server"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    settings = IndexSettings(url=":memory:" if request.param == "server" else None)
    built: VectorIndex = (
        QdrantServerIndex(settings, 4)
        if request.param == "server"
        else QdrantEdgeIndex(tmp_path / "index", 4, settings)
    )
    yield built
    built.close()


def points(document: str, content_hash: str, start: int) -> list[IndexPoint]:
    rng = np.random.default_rng(start)
    made = []
    for i, text in enumerate(TEXTS):
        vector = rng.normal(size=4).astype(np.float32)
        made.append(
            IndexPoint(
                start + i,
                vector / np.linalg.norm(vector),
                text,
                {"document_id": document, "content_hash": content_hash, "chunk_id": f"c{i}"},
            )
        )
    return made


def test_the_index_contract(index: VectorIndex) -> None:
    assert index.count("kb") == 0 and index.search_sparse("kb", "security", 5) == []
    v1 = points("doc", "h1", 100)
    index.upsert("kb", v1, avg_len=6.0)
    assert index.count("kb") == 4
    dense = index.search_dense("kb", v1[1].vector, 2)
    assert dense[0].point_id == 101 and dense[0].rank == 1
    assert dense[0].score == pytest.approx(1.0, abs=1e-5)
    sparse = index.search_sparse("kb", "security vulnerabilities report", 3)
    assert sparse[0].point_id == 100 and [h.rank for h in sparse] == list(range(1, len(sparse) + 1))
    assert index.search_sparse("kb", "the of and", 3) == []  # stop words only
    vectors = index.vectors("kb", [100, 103, 999])
    assert set(vectors) == {100, 103} and np.allclose(vectors[103], v1[3].vector, atol=1e-6)
    # a new version of the document: upsert it, then drop the other versions' points
    index.upsert("kb", points("doc", "h2", 200), avg_len=6.0)
    index.delete_document("kb", "doc", keep_hash="h2")
    assert index.count("kb") == 4 and index.vectors("kb", [100]) == {}
    index.delete_document("kb", "doc")
    assert index.count("kb") == 0
    assert index.term_counts(["Report security vulnerabilities by email."]) == [4]  # "by": stop
    index.set_cursor(42)
    assert index.cursor() == 42
    index.upsert("kb", v1, avg_len=6.0)
    index.drop("kb")
    assert index.count("kb") == 0


def test_both_backends_return_the_same_top_k_on_the_fixture_corpus(settings: Settings) -> None:
    """Same store, two indexes: the embedded one and the server one (replayed from the log)."""
    with Runtime(settings) as edge:
        ingest(edge, "kb", *sorted((DOCS / "markdown").glob("*.md"))[:6])
        server_settings = settings.model_copy(
            update={"index": settings.index.model_copy(update={"url": ":memory:"})}
        )
        with Runtime(server_settings) as server:
            assert server.sync_index() > 0  # the log replayed into an empty Qdrant
            assert server.index.count("kb") == edge.index.count("kb") > 20
            for question in QUESTIONS:
                vector = edge.embedder.embed_query(question)
                e_dense = edge.index.search_dense("kb", vector, 10)
                s_dense = server.index.search_dense("kb", vector, 10)
                assert [h.point_id for h in e_dense] == [h.point_id for h in s_dense], question
                assert [h.score for h in e_dense] == pytest.approx([h.score for h in s_dense])
                e_sparse = edge.index.search_sparse("kb", question, 10)
                s_sparse = server.index.search_sparse("kb", question, 10)
                assert [h.point_id for h in e_sparse] == [h.point_id for h in s_sparse], question
                assert [h.score for h in e_sparse] == pytest.approx(
                    [h.score for h in s_sparse], rel=1e-4
                )
                e_chunks = edge.retriever.retrieve(question, "kb").chunks
                s_chunks = server.retriever.retrieve(question, "kb").chunks
                assert [c.chunk.id for c in e_chunks] == [c.chunk.id for c in s_chunks]


def test_reindex_repairs_an_index_out_of_step_with_the_store(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with Runtime(settings) as rt:
        files = sorted((DOCS / "markdown").glob("*.md"))[:3]
        ingest(rt, "kb", *files)
        ingest(rt, "other", *files)
        expected = {name: rt.index.count(name) for name in ("kb", "other")}
        # an index restored from an old copy: points missing, but the cursor says up to date
        document = rt.store.list_documents("kb")[0]
        rt.index.delete_document("kb", document.id)
        rt.index.drop("other")
        assert rt.sync_index() == 0 and rt.index.count("kb") < expected["kb"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    one = CliRunner().invoke(app, ["reindex", "-c", "kb"])
    assert one.exit_code == 0, one.output
    with Runtime(settings) as rt:
        assert rt.index.count("kb") == expected["kb"] and rt.index.count("other") == 0
    every = CliRunner().invoke(app, ["reindex"])
    assert every.exit_code == 0, every.output
    assert f"kb: {expected['kb']} points" in every.output
    with Runtime(settings) as rt:
        assert {name: rt.index.count(name) for name in expected} == expected
        assert rt.index.cursor() == rt.store.last_log_seq()


def test_optimizing_keeps_every_answer_and_follows_the_threshold(
    index: VectorIndex, settings: Settings
) -> None:
    """Building the search structures changes no result on either backend; the sync thread
    builds them only once `optimize_after_points` points were written (0: never by itself)."""
    index.upsert("kb", points("doc", "h1", 100), avg_len=6.0)
    query = points("doc", "h1", 100)[2].vector

    def answers() -> list[tuple[int, float]]:
        hits = index.search_dense("kb", query, 4) + index.search_sparse("kb", "security", 4)
        return [(h.point_id, round(h.score, 5)) for h in hits]

    before = answers()
    index.optimize()
    assert answers() == before
    with Runtime(updated(settings, index={"optimize_after_points": 3})) as rt:
        ingest(rt, "kb", *sorted((DOCS / "markdown").glob("*.md"))[:2])
        assert rt.index_sync.written >= 3
        rt.index_sync.optimize(force=False)
        assert rt.index_sync.written == 0
    with Runtime(updated(settings, index={"optimize_after_points": 0})) as rt:
        ingest(rt, "other", *sorted((DOCS / "markdown").glob("*.md"))[:1])
        written = rt.index_sync.written
        assert written > 0 and not rt.index_sync.optimize(force=False)
        assert rt.index_sync.written == written


# names that sat next to the index's own files (Edge: the cursor and its temporary file at the
# root) or collections (server: `<prefix>meta` held the cursor), or look like either
HOSTILE_NAMES = ["sync-cursor", "sync-cursor.tmp", "meta", "ragline_meta", "collections"]


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_collections_named_like_index_internals_ingest_retrieve_and_delete(
    settings: Settings, backend: str
) -> None:
    """A user's collection can never collide with the index's own files or collections: each
    hostile name ingests, retrieves and deletes, the cursor keeps moving, and `kb` keeps
    working beside them."""
    if backend == "server":
        settings = updated(settings, index={"url": ":memory:"})
    document = sorted((DOCS / "markdown").glob("*.md"))[0]
    question = "What is this document about?"
    with Runtime(settings) as rt:
        for name in ["kb", *HOSTILE_NAMES]:
            ingest(rt, name, document)
            assert rt.index.cursor() == rt.store.last_log_seq(), name
            assert rt.index.count(name) > 0, name
            assert rt.retriever.retrieve(question, name).chunks, name
        for name in HOSTILE_NAMES:
            (stored,) = rt.store.list_documents(name)
            rt.delete_document(stored.id)
            assert rt.index.count(name) == 0, name
            assert rt.index.cursor() == rt.store.last_log_seq(), name
        assert rt.retriever.retrieve(question, "kb").chunks
        kb_points = rt.index.count("kb")
    if backend == "edge":  # reopened from disk: the cursor and every shard are intact
        with Runtime(settings) as rt:
            assert rt.index.cursor() == rt.store.last_log_seq()
            assert rt.index.count("kb") == kb_points


def flatten(root: Path) -> None:
    """Turn an index into the layout of before: shard folders directly under the root."""
    folder = (root / "collections").rename(root / "folder-of-shards")
    for shard in folder.iterdir():
        shard.rename(root / shard.name)
    folder.rmdir()


def test_an_edge_index_of_the_flat_layout_is_moved_on_open(tmp_path: Path) -> None:
    """Shards that sat beside the cursor (one of them named `collections`, one named like the
    cursor's old temporary file) move under collections/ when the index opens: same points,
    same cursor, nothing replayed; an interrupted move resumes at the next open."""
    root, settings = tmp_path / "index", IndexSettings()
    names = ["kb", "collections", "sync-cursor.tmp"]
    index = QdrantEdgeIndex(root, 4, settings)
    for start, name in enumerate(names):
        index.upsert(name, points("doc", "h1", 100 * (start + 1)), avg_len=6.0)
    index.set_cursor(7)
    index.close()
    flatten(root)
    assert {p.name for p in root.iterdir()} == {*names, "sync-cursor"}
    (root / ".migrating-shards").mkdir()  # a move interrupted after its first step
    (root / "kb").rename(root / ".migrating-shards" / "kb")
    reopened = QdrantEdgeIndex(root, 4, settings)
    assert {p.name for p in root.iterdir()} == {"collections", "sync-cursor"}
    assert reopened.cursor() == 7
    for start, name in enumerate(names):
        assert reopened.count(name) == 4, name
        expected = points("doc", "h1", 100 * (start + 1))[1]
        assert reopened.search_dense(name, expected.vector, 1)[0].point_id == expected.point_id
    reopened.set_cursor(8)
    assert reopened.cursor() == 8 and not list(root.glob(".sync-cursor*"))
    reopened.close()


def test_two_copies_of_an_edge_collection_are_rebuilt_from_the_store(settings: Settings) -> None:
    """A shard both in the flat layout and under collections/ (an older ragline ran on a moved
    index): neither copy can be trusted, so both go and the cursor returns to 0; the next sync
    rebuilds every collection from the store."""
    files = sorted((DOCS / "markdown").glob("*.md"))[:2]
    with Runtime(settings) as rt:
        ingest(rt, "kb", *files)
        expected = rt.index.count("kb")
    root = settings.resolved_index_path
    shutil.copytree(root / "collections" / "kb", root / "kb")
    with Runtime(settings) as rt:
        assert rt.index.cursor() == 0 and rt.index.count("kb") == 0
        assert rt.sync_index() > 0
        assert rt.index.count("kb") == expected
        assert rt.index.cursor() == rt.store.last_log_seq()


def test_a_server_index_of_the_old_naming_keeps_its_cursor_and_frees_meta() -> None:
    """The cursor of a Qdrant index of the old naming (`<prefix>meta`) moves to `<prefix>_meta`
    on first use, nothing is replayed, and the user collection `meta` can then be written."""
    client = QdrantClient(location=":memory:")
    client.create_collection("ragline_meta", vectors_config={})
    client.upsert(
        "ragline_meta", [models.PointStruct(id=0, vector={}, payload={"cursor": 42})], wait=True
    )
    index = QdrantServerIndex(IndexSettings(url=":memory:"), 4, client=client)
    assert index.cursor() == 42
    index.upsert("meta", points("doc", "h1", 100), avg_len=6.0)
    assert index.count("meta") == 4 and index.cursor() == 42
    index.set_cursor(43)
    assert index.cursor() == 43
    assert sorted(c.name for c in client.get_collections().collections) == [
        "ragline__meta",
        "ragline_meta",
    ]
    index.close()


@pytest.mark.parametrize("name", [".hidden", "..", "a/b", "../index", "_meta", "x\n", ""])
def test_names_outside_the_pattern_are_refused_before_the_store(
    settings: Settings, name: str
) -> None:
    """A name that could leave the collections' namespace is refused where documents enter
    (the API's pattern, and the store for the CLI), never stored as a log entry the index
    could not apply."""
    with Runtime(settings) as rt:
        with pytest.raises(InvalidRequestError, match="invalid collection name"):
            rt.store.submit(name, "a.md", b"# hello", 3)
        assert rt.store.last_log_seq() == 0 and rt.store.list_collections() == []
