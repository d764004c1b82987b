"""The HTTP API through the real app: uploads, jobs, answers (JSON, SSE, OpenAI), limits, caches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragline.api.app import build_app
from ragline.config import Settings

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
SECURITY = DOCS / "markdown" / "markitdown_SECURITY.md"
QUESTION = "How do I report a security vulnerability?"


def make_client(settings: Settings) -> TestClient:
    return TestClient(build_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with make_client(settings) as test_client:
        yield test_client


def upload(
    client: TestClient, collection: str, *paths: Path, headers: dict[str, str] | None = None
) -> Any:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    return client.post(
        f"/v1/collections/{collection}/documents", files=files, headers=headers or {}
    )


def wait_ready(
    client: TestClient, job_ids: list[str], headers: dict[str, str] | None = None
) -> None:
    """Poll the jobs until done, then until the index has caught up (sync runs every 200 ms)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        statuses = [
            client.get(f"/v1/jobs/{j}", headers=headers or {}).json()["status"] for j in job_ids
        ]
        if all(s in ("done", "dead") for s in statuses):
            break
        time.sleep(0.2)
    while (
        time.monotonic() < deadline
        and client.get("/readyz").json()["checks"]["index"]["pending"] is not False
    ):
        time.sleep(0.1)
    time.sleep(0.3)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_upload_then_duplicate_then_json_text(client: TestClient) -> None:
    """Multipart upload queues a job (202); the same bytes again are a 200 duplicate; JSON works."""
    first = upload(client, "kb", SECURITY)
    assert first.status_code == 202
    (document,) = first.json()["documents"]
    assert document["job_id"] and not document["duplicate"]
    wait_ready(client, [document["job_id"]])
    assert client.get(f"/v1/documents/{document['document_id']}").json()["status"] == "ready"
    again = upload(client, "kb", SECURITY)
    assert again.status_code == 200
    assert again.json()["documents"][0] == {
        **document,
        "job_id": None,
        "status": "ready",
        "duplicate": True,
    }
    text = client.post(
        "/v1/collections/kb/documents",
        json={"text": "Alpacas hum.", "source": "../../etc/alpaca.txt"},
    )
    assert text.status_code == 202
    assert text.json()["documents"][0]["source"] == "alpaca.txt"  # no path traversal
    listed = client.get("/v1/collections/kb/documents").json()
    assert {d["source"] for d in listed} == {"markitdown_SECURITY.md", "alpaca.txt"}
    assert client.get("/v1/collections").json()[0]["name"] == "kb"


def test_query_json_and_sse_and_retrieve(client: TestClient) -> None:
    """The answer object; the same as SSE (retrieval first, tokens, done); retrieval only."""
    wait_ready(client, [upload(client, "kb", SECURITY).json()["documents"][0]["job_id"]])
    answer = client.post(
        "/v1/query", json={"question": QUESTION, "collection": "kb", "session_id": "s1"}
    ).json()
    assert answer["answer"] and answer["context"] and answer["retrieval"]["fused"]
    assert answer["session_id"] == "s1" and answer["cache"] == {"answer": False, "retrieval": False}
    streamed = client.post(
        "/v1/query",
        json={"question": "Who handles security reports?", "collection": "kb", "stream": True},
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[0][0] == "retrieval" and events[0][1]["context"]
    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] in ("stop", "length")
    tokens = "".join(data["text"] for name, data in events if name == "token")
    assert tokens.strip() == events[-1][1]["answer"]
    retrieved = client.post(
        "/v1/retrieve", json={"question": QUESTION, "collection": "kb", "top_k": 2}
    ).json()
    assert len(retrieved["fused"]) == 2 and retrieved["dense"] and retrieved["sparse"]


def test_answer_cache_hits_then_invalidates_on_ingest_and_delete(client: TestClient) -> None:
    """A repeated question is served from cache until the collection changes."""
    job = upload(client, "kb", SECURITY).json()["documents"][0]["job_id"]
    wait_ready(client, [job])
    body = {"question": QUESTION, "collection": "kb"}
    first = client.post("/v1/query", json=body).json()
    second = client.post(
        "/v1/query", json={**body, "question": "  how do I REPORT a security vulnerability? "}
    ).json()
    assert second["cache"]["answer"] is True and second["answer"] == first["answer"]
    added = client.post(
        "/v1/collections/kb/documents",
        json={"text": "Security reports go to the MSRC.", "source": "n.txt"},
    )
    wait_ready(client, [added.json()["documents"][0]["job_id"]])
    assert client.post("/v1/query", json=body).json()["cache"]["answer"] is False
    assert client.post("/v1/query", json=body).json()["cache"]["answer"] is True
    assert (
        client.delete(f"/v1/documents/{added.json()['documents'][0]['document_id']}").status_code
        == 204
    )
    after_delete = client.post("/v1/query", json=body).json()
    assert after_delete["cache"]["answer"] is False
    assert all(c["source"] != "n.txt" for c in after_delete["context"])


def test_openai_client_works_against_chat_completions(client: TestClient) -> None:
    """The official `openai` package, pointed at ragline: plain and streaming completions."""
    import openai

    wait_ready(client, [upload(client, "kb", SECURITY).json()["documents"][0]["job_id"]])
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    assert "kb" in [m.id for m in api.models.list().data]
    completion = api.chat.completions.create(
        model="kb", messages=[{"role": "user", "content": QUESTION}]
    )
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    chunks = list(
        api.chat.completions.create(
            model="kb", messages=[{"role": "user", "content": "Who runs MSRC?"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(
            model="no-such-collection", messages=[{"role": "user", "content": "hi"}]
        )


def test_errors_are_json_with_a_code_and_limits_are_enforced(
    client: TestClient, settings: Settings
) -> None:
    """404, 415, 422 (too long, top_k, bad name), 413 (body) all answer {error: {code, message}}."""
    missing = client.post("/v1/query", json={"question": "x", "collection": "nothing"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    long = client.post(
        "/v1/query",
        json={"question": "x" * (settings.server.max_question_chars + 1), "collection": "kb"},
    )
    assert long.status_code == 422 and "limit" in long.json()["error"]["message"]
    top = client.post("/v1/retrieve", json={"question": "x", "collection": "kb", "top_k": 10_000})
    assert top.status_code == 422
    bad_name = client.post("/v1/query", json={"question": "x", "collection": "../etc"})
    assert bad_name.status_code == 422 and bad_name.json()["error"]["code"] == "invalid_request"
    wrong_type = client.post(
        "/v1/collections/kb/documents", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    huge = client.post("/v1/query", content=b"{" + b" " * (settings.server.max_request_bytes + 10) + b"}",
                       headers={"content-type": "application/json"})  # fmt: skip
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
    malformed = client.post(
        "/v1/query", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422


def test_upload_over_the_file_limit_is_413(settings: Settings) -> None:
    small = settings.model_copy(
        update={"ingestion": settings.ingestion.model_copy(update={"max_file_bytes": 1000})}
    )
    with make_client(small) as client:
        response = client.post(
            "/v1/collections/kb/documents", files=[("files", ("big.txt", b"x" * 5000))]
        )
        assert response.status_code == 413
        assert client.get("/v1/collections/kb/documents").json() == []


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert {k for k, v in ready.json()["checks"].items() if v["ok"]} == {
        "store",
        "index",
        "llm",
        "tracing",
    }


def test_a_stream_over_its_time_limit_ends_with_an_error_event(settings: Settings) -> None:
    """The SSE stream is bounded: past stream_timeout_s it ends with a `timeout` error event."""
    hurried = settings.model_copy(
        update={"server": settings.server.model_copy(update={"stream_timeout_s": 0.001})}
    )
    with make_client(hurried) as client:
        wait_ready(client, [upload(client, "kb", SECURITY).json()["documents"][0]["job_id"]])
        response = client.post(
            "/v1/query", json={"question": QUESTION, "collection": "kb", "stream": True}
        )
        events = sse_events(response.text)
        name, error = events[-1]
        assert name == "error" and error["code"] == "timeout"
        assert error["message"] == "the answer exceeded the stream timeout"
        assert all(name != "done" for name, _ in events)
        # the trace records the timeout as an error (not as a client that went away)
        (root,) = client.get(f"/v1/traces/{error['trace_id']}").json()["spans"]
        assert root["status"] == "ERROR" and "stream timeout" in root["status_message"]


def test_responses_carry_a_trace_id_that_the_traces_api_and_feedback_use(
    client: TestClient,
) -> None:
    """trace_id in JSON, SSE done and retrieve; GET /v1/traces/{id} is the span tree; feedback."""
    wait_ready(client, [upload(client, "kb", SECURITY).json()["documents"][0]["job_id"]])
    answer = client.post(
        "/v1/query",
        json={"question": QUESTION, "collection": "kb"},
        headers={"X-Session-Id": "tab-1"},
    ).json()
    streamed = sse_events(
        client.post(
            "/v1/query", json={"question": "Who is MSRC?", "collection": "kb", "stream": True}
        ).text
    )
    retrieved = client.post("/v1/retrieve", json={"question": QUESTION, "collection": "kb"}).json()
    trace_ids = [answer["trace_id"], streamed[-1][1]["trace_id"], retrieved["trace_id"]]
    assert all(t and len(t) == 32 for t in trace_ids) and len(set(trace_ids)) == 3
    client.app.state.ragline.runtime.tracing.flush()  # type: ignore[attr-defined]
    trace = client.get(f"/v1/traces/{answer['trace_id']}").json()
    (root,) = trace["spans"]
    assert root["name"] == "rag.query" and root["session_id"] == "tab-1"
    assert {c["name"] for c in root["children"]} == {"embedding", "retrieve", "prompt", "llm"}
    given = client.post(
        "/v1/feedback", json={"trace_id": answer["trace_id"], "value": 0, "comment": "off topic"}
    )
    assert given.status_code == 201 and given.json()["trace_id"] == answer["trace_id"]
    listed = client.get("/v1/traces", params={"session_id": "tab-1"}).json()
    assert [t["trace_id"] for t in listed] == [answer["trace_id"]]
    assert listed[0]["feedback"] == 0
    # times carry their UTC offset on the wire (a naive time reads as the client's local time)
    (given_feedback,) = client.get(f"/v1/traces/{answer['trace_id']}").json()["feedback"]
    for stamp in (listed[0]["start_time"], root["start_time"], given_feedback["created_at"]):
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0), stamp
    assert (
        client.get(f"/v1/traces/{answer['trace_id']}").json()["feedback"][0]["comment"]
        == "off topic"
    )
    assert client.get("/v1/traces/" + "0" * 32).status_code == 404
    assert client.post("/v1/feedback", json={"trace_id": "nothex", "value": 1}).status_code == 422


def test_a_document_shown_ready_is_retrievable_at_once_and_never_cached_missing(
    client: TestClient,
) -> None:
    """Audit finding 4: a document showed `ready` once committed, before the index applied it,
    and a retrieval in that window was cached under the new version for an hour. Now it shows
    `indexing` until the index has applied it, and cache keys follow what the index applied.
    The window is held open by pausing the index sync (it is 0-200 ms otherwise)."""
    wait_ready(client, [upload(client, "kb", SECURITY).json()["documents"][0]["job_id"]])
    state = client.app.state.ragline  # type: ignore[attr-defined]
    state.sync_thread.stop()
    question = {"question": "What does the quokka zanzibar protocol require?", "collection": "kb"}
    added = client.post(
        "/v1/collections/kb/documents",
        json={
            "text": "The quokka zanzibar protocol requires two signatures on every release.",
            "source": "quokka.txt",
        },
    ).json()["documents"][0]
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{added['job_id']}").json()["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    document = f"/v1/documents/{added['document_id']}"
    assert client.get(document).json()["status"] == "indexing"  # committed, not retrievable
    window = client.post("/v1/retrieve", json=question).json()
    assert "quokka.txt" not in [c["source"] for c in window["fused"]]
    state.runtime.sync_index()
    assert client.get(document).json()["status"] == "ready"
    for attempt in range(2):  # at once, then from the cache
        fused = client.post("/v1/retrieve", json=question).json()["fused"]
        assert "quokka.txt" in [c["source"] for c in fused], attempt
