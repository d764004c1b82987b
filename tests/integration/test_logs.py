"""Logs an operator can aggregate: JSON lines of real requests joined to their traces, the
access log, and the local LLM warmed at start-up."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ragline import logs
from ragline.api.app import build_app
from ragline.config import LogSettings, Settings
from ragline.factory import Runtime
from ragline.models.llm_server import free_port
from ragline.store.keys import KeyStore
from tests.helpers import ingest, updated

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
SECURITY = DOCS / "markdown" / "markitdown_SECURITY.md"
QUESTION = "How do I report a security vulnerability?"
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """ragline's JSON-lines handler at INFO, writing to a buffer (root level restored after)."""
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    handler = logs.configure(LogSettings(format="json"), logging.INFO, buffer)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


def records(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every line must be one JSON object."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def access_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [r for r in records(buffer) if r["logger"] == "ragline.access"]


def secured(settings: Settings) -> tuple[Settings, str, str]:
    """Auth on, a dead Redis behind the caches (its warnings are logged inside the request's
    threads), collection `kb` ingested; returns the settings, a key id and its secret."""
    secure = updated(settings, server={"auth": True}, cache={"redis_url": DEAD_REDIS_URL})
    with Runtime(secure) as runtime:
        ingest(runtime, "kb", SECURITY)
        key, secret = KeyStore(runtime.store.engine).create("logs", None, None)
    return secure, key.id, secret


def test_json_records_of_a_request_carry_its_ids_and_never_its_secret_or_question(
    settings: Settings, json_log: io.StringIO
) -> None:
    """A real question through the app: every record logged while it ran (the dead Redis's
    warning from a threadpool thread, the access line) carries the request id returned as
    `X-Request-ID`, the trace id returned in the body, a span id, the key id and the
    collection; the API key's secret and the question appear in no record."""
    secure, key_id, secret = secured(settings)
    with TestClient(build_app(secure)) as client:
        json_log.seek(0)
        json_log.truncate()
        response = client.post(
            "/v1/query",
            json={"question": QUESTION, "collection": "kb"},
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "req-42.a_b"},
        )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-42.a_b"
    trace_id = response.json()["trace_id"]
    during = [r for r in records(json_log) if r.get("request_id") == "req-42.a_b"]
    redis = [r for r in during if r["logger"] == "ragline.cache.base"]
    assert redis, "the dead Redis was logged during the request"
    (access,) = [r for r in during if r["logger"] == "ragline.access"]
    for record in [*redis, access]:
        assert record["trace_id"] == trace_id
        assert len(record["span_id"]) == 16
        assert record["key_id"] == key_id
        assert record["collection"] == "kb"
        assert record["ts"].endswith("Z") and record["level"] in ("INFO", "WARNING")
    assert access["method"] == "POST" and access["path"] == "/v1/query"
    assert access["status"] == 200 and access["bytes"] == len(response.content)
    assert access["duration_ms"] > 0 and access["client"]
    text = json_log.getvalue()
    assert secret not in text and QUESTION not in text


def test_each_request_has_one_access_line_with_its_own_request_id(
    settings: Settings, json_log: io.StringIO
) -> None:
    """One access line per request, streams and refusals included: a stream's line carries
    the stream's trace id; a request id with spaces or control characters is replaced by a
    new one (returned in the header); ids never carry over from one request to the next."""
    secure, _, secret = secured(settings)
    auth = {"Authorization": f"Bearer {secret}"}
    with TestClient(build_app(secure)) as client:
        json_log.seek(0)
        json_log.truncate()
        stream = client.post(
            "/v1/query",
            json={"question": QUESTION, "collection": "kb", "stream": True},
            headers={**auth, "X-Request-ID": "forged id\r\nlevel=ERROR"},
        )
        refused = client.get("/v1/collections", headers={"Authorization": "Bearer rl_wrong"})
        listed = client.get("/v1/collections", headers=auth)
    done = json.loads(stream.text.strip().split("\n\n")[-1].split("data: ", 1)[1])
    stream_id = stream.headers["X-Request-ID"]
    assert len(stream_id) == 32 and "forged" not in stream_id
    lines = access_lines(json_log)
    assert [line["request_id"] for line in lines] == [
        stream_id,
        refused.headers["X-Request-ID"],
        listed.headers["X-Request-ID"],
    ]
    assert len({line["request_id"] for line in lines}) == 3
    assert lines[0]["trace_id"] == done["trace_id"] and lines[0]["bytes"] == len(stream.content)
    assert lines[1]["status"] == 401 and "key_id" not in lines[1]
    assert "trace_id" not in lines[2] and "collection" not in lines[2]


def test_probes_are_logged_at_debug_only(settings: Settings, json_log: io.StringIO) -> None:
    """Health probes and scrapes every few seconds would drown the access log: DEBUG."""
    with TestClient(build_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/collections").status_code == 200
    assert [line["path"] for line in access_lines(json_log)] == ["/v1/collections"]


def llm_requests(log_file: Path) -> int:
    """Chat completions the llama.cpp server answered, from its own access log."""
    return log_file.read_text(errors="replace").count("POST /v1/chat/completions")


def test_serve_warms_the_local_llm_before_the_first_request(settings: Settings) -> None:
    """With the local llama.cpp server (no base_url), start-up asks it for a token: the server
    has answered a completion before any user request arrives."""
    local = updated(settings, llm={"base_url": None})
    with TestClient(build_app(local, warm=True)) as client:
        runtime = client.app.state.ragline.runtime  # type: ignore[attr-defined]
        assert runtime._llm_server is not None, "ragline started its own server"
        log_file = local.home / "llm-server.log"
        assert llm_requests(log_file) == 1


def test_a_dead_local_llm_fails_the_warm_up_without_raising(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The local server started, then died: the warm-up logs a warning and returns, quickly
    (no retries), so serve starts degraded instead of not at all."""
    local = updated(settings, llm={"base_url": None})
    local.home.mkdir(parents=True)  # serve's start-up makes it (the store) before the LLM
    with Runtime(local) as runtime:
        runtime.chat  # noqa: B018 (starts the local server, as serve's start-up does)
        assert runtime._llm_server is not None and runtime._llm_server.process is not None
        runtime._llm_server.process.kill()
        runtime._llm_server.process.wait()
        started = time.monotonic()
        assert runtime.warm_llm() is None
        assert time.monotonic() - started < 10
    assert any("llm warm-up failed" in r.getMessage() for r in caplog.records)


def test_a_dead_remote_llm_does_not_stop_start_up(settings: Settings) -> None:
    """A configured LLM server that is down: serve starts (no warm-up for a remote server),
    /healthz answers, /readyz says degraded."""
    dead = updated(settings, llm={"base_url": "http://127.0.0.1:1/v1"})
    with TestClient(build_app(dead, warm=True)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["status"] == "degraded"


def test_serve_writes_only_json_lines_uvicorns_included_when_stderr_is_a_pipe(
    tmp_path: Path,
) -> None:
    """`ragline serve` with its stderr on a pipe (as in a container): every line it writes is a
    JSON object: its status line, uvicorn's own records, and our access line (uvicorn's access
    log is off); a request's line carries the request id it was sent."""
    port = free_port()
    env = {
        **os.environ,
        "RAGLINE_HOME": str(tmp_path / "home"),
        "RAGLINE_LLM__BASE_URL": "http://127.0.0.1:1/v1",
        "RAGLINE_SERVER__PORT": str(port),
        "RAGLINE_SERVER__WORKER_THREADS": "0",
    }
    env.pop("RAGLINE_LOG__FORMAT", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "ragline.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not is_up(base):
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        response = httpx.get(f"{base}/v1/collections", headers={"X-Request-ID": "from-test"})
        assert response.headers["X-Request-ID"] == "from-test"
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    lines = [json.loads(line) for line in stderr.splitlines()]  # each line must be JSON
    loggers = {line["logger"] for line in lines}
    assert {"ragline.cli", "uvicorn.error", "ragline.access"} <= loggers
    assert "uvicorn.access" not in loggers
    (access,) = [line for line in lines if line.get("request_id") == "from-test"]
    assert access["logger"] == "ragline.access" and access["status"] == 200


def is_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_workers_job_records_carry_the_jobs_trace(
    settings: Settings, json_log: io.StringIO
) -> None:
    """Ingestion runs outside any request: a job's records carry the trace id of its `ingest`
    span (current while the job runs), which the trace store holds."""
    with Runtime(settings) as runtime:
        runtime.store.submit("kb", "broken.pdf", b"%PDF-1.4 not really a pdf", 1)
        assert runtime.worker().run_once() is not None
        runtime.tracing.flush()
        (dead,) = [r for r in records(json_log) if r["message"].startswith("job dead")]
        assert runtime.traces.spans(dead["trace_id"]), "the job's trace is stored"
    assert len(dead["span_id"]) == 16 and "request_id" not in dead
