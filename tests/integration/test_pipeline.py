"""End to end on the embedded default: real files, the real embedder, Qdrant Edge, llama.cpp."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.config import Settings
from ragline.errors import ConfigurationError
from ragline.factory import Runtime

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"


def ingest_all(rt: Runtime, collection: str, paths: list[Path]) -> dict[str, str]:
    """Submit files and run the worker until every job ends; returns source -> document status."""
    for path in paths:
        rt.store.submit(
            collection, path.name, path.read_bytes(), rt.settings.ingestion.max_attempts
        )
    worker = rt.worker()
    while worker.run_once() is not None:
        pass
    rt.sync_index()
    return {d.source: d.status for d in rt.store.list_documents(collection)}


def index_matches_store(rt: Runtime, collection: str) -> bool:
    chunks = sum(d.chunk_count for d in rt.store.list_documents(collection))
    return rt.index.count(collection) == chunks


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    with Runtime(settings) as rt:
        yield rt


def test_real_documents_ingest_and_bad_ones_fail_alone(runtime: Runtime, tmp_path: Path) -> None:
    """Every format ingests; encrypted, truncated, empty and unsupported files fail their own job."""
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes((DOCS / "pdf" / "001-trivial_minimal-document.pdf").read_bytes()[:600])
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    unsupported = tmp_path / "program.exe"
    unsupported.write_bytes(b"MZ\x90\x00")
    good = [
        DOCS / "markdown" / "markitdown_SECURITY.md",
        DOCS / "docx" / "test.docx",
        DOCS / "html" / "test_blog.html",
        DOCS / "pdf" / "006-pdflatex-outline_pdflatex-outline.pdf",
    ]
    encrypted = DOCS / "pdf" / "005-libreoffice-writer-password_libreoffice-writer-password.pdf"
    statuses = ingest_all(runtime, "docs", [*good, encrypted, truncated, empty, unsupported])
    assert {p.name: statuses[p.name] for p in good} == {p.name: "ready" for p in good}
    failed = {
        d.source: d.error for d in runtime.store.list_documents("docs") if d.status == "failed"
    }
    assert set(failed) == {encrypted.name, truncated.name, empty.name, unsupported.name}
    assert "password" in failed[encrypted.name]
    assert all(job_error for job_error in failed.values())
    assert index_matches_store(runtime, "docs")


def test_pdf_chunks_keep_page_and_outline_heading(runtime: Runtime) -> None:
    ingest_all(runtime, "docs", [DOCS / "pdf" / "006-pdflatex-outline_pdflatex-outline.pdf"])
    (document,) = runtime.store.list_documents("docs")
    chunks = runtime.store.chunks_of_document(document.id)
    assert {c.metadata.get("page") for c in chunks} >= {1, 2}
    assert any(c.metadata.get("heading") == "Foo" for c in chunks)
    assert all(c.token_count <= runtime.settings.chunking.chunk_size for c in chunks)


def test_reingest_is_a_no_op_and_changed_content_replaces_without_duplicates(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Same bytes: nothing happens. New bytes under the same name: old chunks are gone."""
    note = tmp_path / "note.md"
    note.write_text(
        "# Llamas\n\nLlamas are domesticated South American camelids used as pack animals."
    )
    ingest_all(runtime, "notes", [note])
    assert runtime.store.submit("notes", "note.md", note.read_bytes(), 3).duplicate
    note.write_text("# Alpacas\n\nAlpacas are bred for their soft fleece, not for carrying loads.")
    ingest_all(runtime, "notes", [note])
    (document,) = runtime.store.list_documents("notes")
    texts = [c.text for c in runtime.store.chunks_of_document(document.id)]
    assert texts and all("Alpacas" in t for t in texts)
    assert index_matches_store(runtime, "notes")
    hits = runtime.retriever.retrieve("llamas pack animals", "notes").chunks
    assert all("Llamas" not in c.chunk.text for c in hits)


def test_delete_removes_the_document_from_store_and_index(runtime: Runtime) -> None:
    ingest_all(runtime, "docs", [DOCS / "markdown" / "markitdown_SECURITY.md"])
    (document,) = runtime.store.list_documents("docs")
    runtime.delete_document(document.id)
    assert runtime.index.count("docs") == 0
    assert runtime.retriever.retrieve("security vulnerability", "docs").chunks == []


def test_transient_failures_are_retried_then_the_job_is_dead(
    settings: Settings, tmp_path: Path
) -> None:
    """An embedding server that refuses connections: max_attempts tries, then dead with the error."""
    unreachable = settings.model_copy(
        update={
            "embedding": settings.embedding.model_copy(
                update={"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "timeout_s": 2.0}
            )
        }
    )
    note = tmp_path / "n.txt"
    note.write_text("Some text that will not be embedded.")
    with Runtime(unreachable) as rt:
        statuses = ingest_all(rt, "broken", [note])
        assert statuses == {"n.txt": "failed"}
        (document,) = rt.store.list_documents("broken")
        assert "BackendError" in (document.error or "")
        assert "127.0.0.1:9" in (document.error or "")
        assert rt.store.claim_job("w", 60) is None  # nothing left to run: the job is dead


def test_index_sync_is_idempotent_and_repairs_a_lost_cursor(runtime: Runtime) -> None:
    """Replaying the whole log (e.g. a cursor lost in a crash) leaves the index exactly right."""
    ingest_all(
        runtime, "docs", [DOCS / "markdown" / "markitdown_SECURITY.md", DOCS / "docx" / "test.docx"]
    )
    (security, _docx) = sorted(runtime.store.list_documents("docs"), key=lambda d: d.source)
    runtime.delete_document(security.id)
    runtime.index.set_cursor(0)
    assert runtime.sync_index() >= 3
    assert index_matches_store(runtime, "docs")


def test_chunk_size_above_the_embedder_limit_is_refused(tmp_path: Path, llm_base_url: str) -> None:
    settings = Settings(
        home=tmp_path, chunking={"chunk_size": 400}, generation={"max_context_tokens": 1500}
    )
    with Runtime(settings) as rt, pytest.raises(ConfigurationError, match="at most 254"):
        rt.ingestion_pipeline()


def test_retrieval_finds_the_right_document_and_survives_a_restart(settings: Settings) -> None:
    """Hybrid retrieval ranks the security policy first for a security question, after reopening."""
    with Runtime(settings) as rt:
        ingest_all(
            rt,
            "docs",
            [
                DOCS / "markdown" / "markitdown_SECURITY.md",
                DOCS / "markdown" / "clapnq_README.md",
                DOCS / "docx" / "test.docx",
            ],
        )
    with Runtime(settings) as rt:
        result = rt.retriever.retrieve("How do I report a security vulnerability?", "docs")
        assert result.chunks[0].chunk.source == "markitdown_SECURITY.md"
        assert result.dense and result.sparse
        assert len(result.chunks) == settings.retrieval.top_n


def test_ask_json_returns_a_cited_answer_from_the_real_model(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ragline ingest` then `ragline ask --json`: an answer, valid citations, each leg's hits."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS / "markdown", docs)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    monkeypatch.setenv("RAGLINE_LLM__BASE_URL", str(settings.llm.base_url))
    monkeypatch.setenv("RAGLINE_LLM__MAX_TOKENS", "96")
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest", str(docs), "--collection", "kb"])
    assert ingested.exit_code == 0, ingested.output
    assert "ready" in ingested.output
    asked = runner.invoke(
        app, ["ask", "How should I report a security issue?", "-c", "kb", "--json"]
    )
    assert asked.exit_code == 0, asked.output
    answer = json.loads(asked.stdout)
    assert answer["answer"].strip()
    assert answer["finish_reason"] in ("stop", "length")
    assert (
        answer["retrieval"]["dense"]
        and answer["retrieval"]["sparse"]
        and answer["retrieval"]["fused"]
    )
    assert answer["retrieval"]["fused"][0]["source"].endswith("markitdown_SECURITY.md")
    assert answer["citations"], "expected the model's citations or overlap attribution"
    fused_ids = {f["chunk_id"] for f in answer["retrieval"]["fused"]}
    for citation in answer["citations"]:
        assert citation["chunk_id"] in fused_ids and citation["text"]
    usage = answer["usage"]  # reported by the server, or completed by ragline and marked estimated
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    listed = runner.invoke(app, ["documents", "-c", "kb"])
    assert "ready" in listed.output


def test_empty_collection_answers_without_calling_the_model(runtime: Runtime) -> None:
    answer = runtime.answerer.ask("anything?", "nothing-here")
    assert answer.finish_reason == "no_context" and answer.context == []


def test_the_same_pipeline_runs_on_postgres(settings: Settings, postgres_url: str) -> None:
    """Ingest and retrieve with PostgreSQL as the store: same code, same results."""
    on_postgres = settings.model_copy(update={"database_url": postgres_url})
    with Runtime(on_postgres) as rt:
        statuses = ingest_all(
            rt, "pg", [DOCS / "markdown" / "markitdown_SECURITY.md", DOCS / "docx" / "test.docx"]
        )
        assert set(statuses.values()) == {"ready"}
        result = rt.retriever.retrieve("report a security vulnerability", "pg")
        assert result.chunks[0].chunk.source == "markitdown_SECURITY.md"
        for document in rt.store.list_documents("pg"):
            rt.delete_document(document.id)


def test_no_wait_ingest_is_finished_by_a_worker_process_that_stops_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    """`ingest --no-wait` only queues; a separate `ragline worker` process runs the jobs."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {
        **os.environ,
        "RAGLINE_HOME": str(settings.home),
        "RAGLINE_INGESTION__BACKOFF_BASE_S": "0",
    }
    command = [sys.executable, "-m", "ragline.cli"]
    source = DOCS / "markdown" / "markitdown_SECURITY.md"
    queued = subprocess.run(
        [*command, "ingest", str(source), "--no-wait", "-c", "bg"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    assert "queued" in queued.stdout
    worker = subprocess.Popen([*command, "worker"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        with Runtime(settings) as rt:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if [d.status for d in rt.store.list_documents("bg")] == ["ready"]:
                    break
                time.sleep(0.5)
            assert [d.status for d in rt.store.list_documents("bg")] == ["ready"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()


def test_semantic_chunking_splits_a_two_topic_text_between_the_topics(settings: Settings) -> None:
    """With semantic chunking, sentences about two unrelated topics land in different chunks."""
    cooking = " ".join(
        f"Simmer the tomato sauce with garlic and basil for {n} minutes." for n in range(3, 9)
    )
    astronomy = " ".join(
        f"The telescope observed galaxy cluster number {n} at high redshift." for n in range(3, 9)
    )
    semantic = settings.model_copy(
        update={
            "chunking": settings.chunking.model_copy(
                update={"semantic": True, "semantic_percentile": 10}
            )
        }
    )
    with Runtime(semantic) as rt:
        from ragline.ingestion.parsers import parse_document
        from ragline.ingestion.pipeline import draft_chunks

        parsed = parse_document(f"{cooking} {astronomy}".encode(), "mixed.txt")
        drafts = draft_chunks(parsed, rt.token_counter, semantic.chunking, rt.embedder)
    assert len(drafts) == 2
    assert "telescope" not in drafts[0].text and "tomato" not in drafts[1].text


def test_a_server_started_by_llm_serve_is_reused(settings: Settings, llm_base_url: str) -> None:
    """With no base_url, a live server recorded in the home is used instead of starting one."""
    from ragline.models.llm_server import STATE_FILE

    local = settings.model_copy(update={"llm": settings.llm.model_copy(update={"base_url": None})})
    local.home.mkdir(parents=True, exist_ok=True)
    (local.home / STATE_FILE).write_text(json.dumps({"base_url": llm_base_url}))
    with Runtime(local) as rt:
        assert rt.chat.base_url == llm_base_url
        assert rt._llm_server is None


def test_retrieval_looks_up_only_what_it_returns_and_skips_stale_points(
    runtime: Runtime,
) -> None:
    """Without threshold or MMR only the chunks the prompt needs are read from the store, in
    fused order, stepping over points of a replaced version the index still holds; the
    evaluation view (all_candidates) resolves every fused candidate, and agrees on the top."""
    security = DOCS / "markdown" / "markitdown_SECURITY.md"
    ingest_all(runtime, "docs", [security, DOCS / "markdown" / "clapnq_README.md"])
    question = "How do I report a security vulnerability?"
    before = runtime.retriever.retrieve(question, "docs", top_n=3)
    assert before.chunks and before.chunks[0].chunk.source == security.name
    # a new version of the file: the store swaps its chunks, the index is not synced yet
    runtime.store.submit("docs", security.name, security.read_bytes() + b"\n\nRevised.", 3)
    worker = runtime.worker()
    while worker.run_once() is not None:
        pass
    stale = runtime.retriever.retrieve(question, "docs", top_n=3)
    everything = runtime.retriever.all_candidates(stale)
    assert len(stale.candidates) < len(everything)
    assert [c.chunk.id for c in stale.candidates] == [c.chunk.id for c in everything][
        : len(stale.candidates)
    ]
    assert [c.chunk.id for c in stale.chunks] == [c.chunk.id for c in everything[:3]]
    live = {
        c.id
        for d in runtime.store.list_documents("docs")
        for c in runtime.store.chunks_of_document(d.id)
    }
    assert all(c.chunk.id in live for c in stale.chunks)
