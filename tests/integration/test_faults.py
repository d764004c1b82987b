"""Faults with real services: the database cut off mid-ingestion, the LLM server down.

PostgreSQL is reached through a loopback TCP proxy (tests.helpers.TcpProxy) that the test cuts
and restores: every open connection is reset and new ones are refused, which is what a database
restart or a network partition looks like to ragline."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ragline.api.app import build_app
from ragline.config import Settings
from ragline.factory import Runtime
from ragline.store.schema import chunks
from tests.conftest import reset_postgres
from tests.helpers import TcpProxy, ingest, updated
from tests.integration.test_api import DOCS, QUESTION, SECURITY, upload, wait_ready
from tests.integration.test_metrics import samples, value

QUEUED = [
    DOCS / "markdown" / "clapnq_README.md",
    DOCS / "html" / "test_blog.html",
    DOCS / "docx" / "test.docx",
    DOCS / "pdf" / "004-pdflatex-4-pages_pdflatex-4-pages.pdf",
]
REFUSED = DOCS / "pdf" / "006-pdflatex-outline_pdflatex-outline.pdf"


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[str, TcpProxy]]:
    """The test database behind a proxy: (URL through the proxy, proxy)."""
    url = make_url(reset_postgres(postgres_url))
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    proxy.cut()


def test_the_database_cut_off_mid_ingestion_gives_503s_then_recovers_without_restart(
    settings: Settings, proxied_postgres: tuple[str, TcpProxy], tmp_path: Path
) -> None:
    """While PostgreSQL is unreachable: API calls that need it get a 503 with a message (never
    a 500 or a hang), readiness is 503, the worker and the index sync wait. Once it is back,
    the same process serves again, and every document queued before the cut ends ready once,
    with store and index in agreement."""
    url, proxy = proxied_postgres
    faulty = updated(
        settings.model_copy(update={"database_url": url}),
        ingestion={"lease_s": 3.0, "backoff_base_s": 0.2},
        cache={"enabled": False},
    )
    with TestClient(build_app(faulty), raise_server_exceptions=False) as client:
        first = upload(client, "kb", SECURITY).json()["documents"][0]
        wait_ready(client, [first["job_id"]])
        assert client.post(
            "/v1/retrieve", json={"question": QUESTION, "collection": "kb"}
        ).is_success

        queued = upload(client, "kb", *QUEUED).json()["documents"]
        time.sleep(0.3)  # the worker is mid-job
        proxy.cut()
        started = time.monotonic()
        for method, path, body in [
            ("GET", "/v1/collections", None),
            ("GET", f"/v1/documents/{first['document_id']}", None),
            ("POST", "/v1/retrieve", {"question": "How are vulnerabilities reported?"}),
        ]:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"]["code"] == "store_unavailable"
            assert "retry" in response.json()["error"]["message"]
            assert response.headers["retry-after"] == "5"
        assert upload(client, "kb", REFUSED).status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert not ready.json()["checks"]["store"]["ok"]
        assert time.monotonic() - started < 20  # refused fast, no minute-long hangs

        time.sleep(2)  # the worker and the sync thread meet the outage, back off, retry
        proxy.restore()
        wait_ready(client, [d["job_id"] for d in queued])
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/collections").status_code == 200
        documents = client.get("/v1/collections/kb/documents").json()
        assert sorted(d["status"] for d in documents) == ["ready"] * 5
        runtime = client.app.state.ragline.runtime  # type: ignore[attr-defined]
        with runtime.store.engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(chunks))
        assert stored == sum(d["chunk_count"] for d in documents)
        assert runtime.index.count("kb") == stored
        answer = client.post("/v1/retrieve", json={"question": QUESTION, "collection": "kb"})
        assert answer.is_success and answer.json()["fused"]


def test_a_dead_llm_server_fails_questions_clearly_and_leaves_retrieval_alone(
    settings: Settings,
) -> None:
    """No LLM server at the configured URL: /v1/query is a 502 `llm_error` whose trace is an
    error trace; retrieval and uploads work; readiness stays 200 but says `degraded`."""
    dead = updated(settings, llm={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0})
    with TestClient(build_app(dead), raise_server_exceptions=False) as client:
        wait_ready(client, [upload(client, "kb", SECURITY).json()["documents"][0]["job_id"]])
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert client.post(
            "/v1/retrieve", json={"question": QUESTION, "collection": "kb"}
        ).is_success
        response = client.post("/v1/query", json={"question": QUESTION, "collection": "kb"})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "llm_error" and "LLM server" in error["message"]
        deadline = time.monotonic() + 10
        while (trace := client.get(f"/v1/traces/{error['trace_id']}")).status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        (root,) = trace.json()["spans"]
        assert root["status"] == "ERROR"


def poll_readiness(client: TestClient, status: int, timeout_s: float = 60) -> dict[str, Any]:
    """/readyz's body once it answers `status`."""
    deadline = time.monotonic() + timeout_s
    while (ready := client.get("/readyz")).status_code != status:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.2)
    body: dict[str, Any] = ready.json()
    return body


def test_a_stuck_index_sync_makes_readiness_503_with_its_lag_then_recovers(
    settings: Settings,
) -> None:
    """An index that refuses every write (a file holds the name of the shard folder of `kb`,
    so the shard cannot be created) keeps the sync failing in a loop. Once the oldest change
    not applied is older than index.max_sync_lag_s, /readyz is 503 with the lag in entries and
    seconds and the failures in a row (in /metrics too); when the index takes writes again, the same process
    catches up and is ready."""
    stuck = updated(settings, index={"max_sync_lag_s": 1.0})
    blocker = stuck.resolved_index_path / "collections" / "kb"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a shard")
    with TestClient(build_app(stuck), raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 200  # nothing to apply yet
        upload(client, "kb", SECURITY)
        body = poll_readiness(client, 503)
        index = body["checks"]["index"]
        assert body["status"] == "unavailable" and not index["ok"]
        assert index["lag_entries"] == 1 and index["lag_seconds"] >= 1.0
        assert index["sync_failures"] >= 1 and "cannot open the index" in index["last_error"]
        assert "index sync stuck: 1 store changes not applied" in index["error"]
        scrape = samples(client.get("/metrics").text)
        assert value(scrape, "ragline_index_sync_lag_entries") == 1
        assert value(scrape, "ragline_index_sync_lag_seconds") >= 1.0
        assert value(scrape, "ragline_index_sync_failures") >= 1
        blocker.unlink()
        index = poll_readiness(client, 200)["checks"]["index"]
        assert index["lag_entries"] == 0 and index["lag_seconds"] == 0
        assert index["sync_failures"] == 0 and "last_error" not in index
        scrape = samples(client.get("/metrics").text)
        assert ("ragline_index_sync_lag_seconds", ()) in scrape
        assert value(scrape, "ragline_index_sync_lag_seconds") == 0
        assert value(scrape, "ragline_index_sync_failures") == 0
        found = client.post("/v1/retrieve", json={"question": QUESTION, "collection": "kb"})
        assert found.is_success and found.json()["fused"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigterm_during_a_streamed_answer_ends_the_stream_cleanly_and_exports_its_trace(
    settings: Settings, llm_base_url: str, tmp_path: Path
) -> None:
    """A real `ragline serve` gets SIGTERM while it streams an answer: the stream ends with a
    `shutting_down` error event naming its trace (not a reset connection), the process exits,
    and that trace is in the local span store, marked as an error."""
    home, port = tmp_path / "served", free_port()
    with Runtime(settings.model_copy(update={"home": home})) as runtime:
        ingest(runtime, "kb", SECURITY)
    env = {**os.environ, "RAGLINE_HOME": str(home), "RAGLINE_LLM__BASE_URL": llm_base_url,
           "RAGLINE_LLM__MAX_TOKENS": "1500", "RAGLINE_SERVER__DRAIN_S": "0",
           "RAGLINE_CACHE__ENABLED": "false"}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "ragline.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            time.sleep(0.3)
        question = "Explain in a long, detailed essay how to report a security vulnerability."
        events, signalled = [], False
        with httpx.stream(
            "POST",
            f"{base}/v1/query",
            json={"question": question, "collection": "kb", "stream": True},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                if events and events[-1] == "token" and not signalled:
                    server.send_signal(signal.SIGTERM)
                    signalled = True
        assert signalled and events[-1] == "error", events[-5:]
        assert data["code"] == "shutting_down" and "retry" in data["message"]
        # uvicorn shuts down cleanly, then re-raises the signal it caught: exit by SIGTERM
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    with Runtime(settings.model_copy(update={"home": home})) as runtime:
        spans = runtime.traces.spans(data["trace_id"])
    root = next(s for s in spans if s["parent_span_id"] is None)
    assert root["status"] == "ERROR" and "shutting down" in root["status_message"]
