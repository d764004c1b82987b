"""Ingestion workers as real processes on PostgreSQL: exclusive claims, a killed worker's job
resumed by another after its lease, exactly one version of every document, a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.store.schema import chunks, jobs
from tests.conftest import reset_postgres

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"


def long_document(n: int) -> bytes:
    """A ~25 KB text: enough chunks that embedding it takes a few seconds."""
    base = (DOCS / "markdown" / "clapnq_README.md").read_text()
    return f"# Document {n}\n\n{base}\n\n{base}".encode()


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ragline.cli", "worker"], env=env, stderr=subprocess.DEVNULL
    )


def test_two_worker_processes_share_the_queue_and_survive_a_kill(
    settings: Settings, postgres_url: str, tmp_path: Path
) -> None:
    url = reset_postgres(postgres_url)
    shared = settings.model_copy(update={"database_url": url})
    env = {**os.environ, "RAGLINE_HOME": str(tmp_path / "workers"), "RAGLINE_DATABASE_URL": url,
           "RAGLINE_INGESTION__LEASE_S": "4", "RAGLINE_INGESTION__BACKOFF_BASE_S": "0"}  # fmt: skip
    with Runtime(shared) as rt:
        submitted = [rt.store.submit("shared", f"doc{n}.md", long_document(n), 3) for n in range(6)]
        victim, survivor = start_worker(env), start_worker(env)
        try:
            killed_job = None
            deadline = time.monotonic() + 120
            while killed_job is None and time.monotonic() < deadline:
                with rt.store.engine.connect() as conn:
                    killed_job = conn.scalar(
                        select(jobs.c.id).where(
                            jobs.c.status == "running", jobs.c.locked_by.contains(f":{victim.pid}:")
                        )
                    )
                time.sleep(0.05)
            assert killed_job is not None, "the first worker never claimed a job"
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            while time.monotonic() < deadline and rt.store.pending_jobs():
                time.sleep(0.5)
            assert rt.store.pending_jobs() == 0
            resumed = rt.store.get_job(killed_job)
            assert resumed.status == "done" and resumed.attempts == 2
            documents = rt.store.list_documents("shared")
            assert [d.status for d in documents] == ["ready"] * len(submitted)
            with rt.store.engine.connect() as conn:
                per_document = dict(
                    conn.execute(
                        select(chunks.c.document_id, func.count()).group_by(chunks.c.document_id)
                    ).all()
                )
            assert per_document == {d.id: d.chunk_count for d in documents}
            rt.sync_index()
            assert rt.index.count("shared") == sum(per_document.values())
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(timeout=60) == 0
        finally:
            for process in (victim, survivor):
                if process.poll() is None:
                    process.kill()
