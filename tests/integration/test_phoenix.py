"""ragline's spans in a real Arize Phoenix, run from its own virtualenv (`make phoenix`): a query
arrives as one tree with OpenInference kinds and attributes, and feedback becomes an annotation.
Read back through Phoenix's REST API: /v1/projects/{project}/spans, /v1/sessions/{id},
/v1/span_annotations and /v1/projects/{project}/span_annotations."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.tracing import attributes as attr
from tests.helpers import ingest

PHOENIX = Path(__file__).parents[2] / ".venv-phoenix" / "bin" / "phoenix"
SECURITY = (
    Path(__file__).parent.parent / "fixtures" / "docs" / "markdown" / "markitdown_SECURITY.md"
)
QUESTION = "How do I report a security vulnerability?"
SESSION = "phx-session"
PROJECT = "ragline"  # tracing.project → the resource's openinference.project.name
EXPECTED = {
    attr.QUERY,
    attr.EMBEDDING,
    attr.RETRIEVE,
    attr.RETRIEVE_DENSE,
    attr.RETRIEVE_SPARSE,
    attr.PROMPT,
    attr.LLM,
}
Span = dict[str, Any]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(fetch: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Call `fetch` until it returns something truthy (Phoenix inserts spans in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if result := fetch():
                return result
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def phoenix() -> Iterator[httpx.Client]:
    """`phoenix serve` on a free loopback port with a throwaway working dir (SQLite inside it)."""
    if not PHOENIX.exists():
        pytest.fail(
            f"Phoenix is not installed ({PHOENIX} is missing): run `make phoenix`", pytrace=False
        )
    workdir = Path(tempfile.mkdtemp(prefix="ragline-phoenix-"))
    port, log = free_port(), workdir / "phoenix.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT="0",  # gRPC can't be turned off; 0 lets the kernel pick a free port
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(PHOENIX), "serve"], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"phoenix serve exited with {process.returncode}")
        return client.get("/healthz").status_code == 200

    try:
        try:
            poll(ready, 120, f"Phoenix on port {port}")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; log:\n{log.read_text(errors='replace')[-3000:]}"
            ) from None
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def trace(settings: Settings, phoenix: httpx.Client) -> tuple[str, dict[str, Span]]:
    """Ingest and ask once with the OTLP exporter pointed at Phoenix; the trace id and its spans
    as Phoenix's REST API returns them, by name."""
    endpoint = str(phoenix.base_url.join("/v1/traces"))
    tracing = settings.tracing.model_copy(update={"otlp_endpoint": endpoint})
    with Runtime(settings.model_copy(update={"tracing": tracing})) as runtime:
        ingest(runtime, "kb", SECURITY)
        answer = runtime.query_service.query(QUESTION, "kb", session_id=SESSION)
        assert runtime.tracing.flush(timeout_s=30)
        otlp = runtime.tracing.health()["exporters"]["otlp"]
    assert otlp["exported"] > 0 and otlp["failed"] == 0 and otlp["dropped"] == 0, otlp
    trace_id: str = answer["trace_id"]

    def spans() -> dict[str, Span] | None:
        response = phoenix.get(
            f"/v1/projects/{PROJECT}/spans", params={"trace_id": trace_id, "limit": 100}
        )
        if response.status_code == 404:  # the project appears with its first span
            return None
        response.raise_for_status()
        found = {span["name"]: span for span in response.json()["data"]}
        return found if found.keys() >= EXPECTED else None

    return trace_id, poll(spans, 60, f"trace {trace_id} in Phoenix project {PROJECT!r}")


def test_a_query_arrives_in_phoenix_as_one_tree_of_kinded_spans(
    trace: tuple[str, dict[str, Span]], phoenix: httpx.Client
) -> None:
    """Phoenix stores rag.query → embedding, retrieve (→ dense, sparse), prompt, llm with the
    OpenInference kinds, the model and token counts, the retrieved documents and the session."""
    trace_id, spans = trace
    assert set(spans) == EXPECTED
    ids = {name: span["context"]["span_id"] for name, span in spans.items()}
    assert spans[attr.QUERY]["parent_id"] is None
    for name in (attr.EMBEDDING, attr.RETRIEVE, attr.PROMPT, attr.LLM):
        assert spans[name]["parent_id"] == ids[attr.QUERY], name
    for leg in (attr.RETRIEVE_DENSE, attr.RETRIEVE_SPARSE):
        assert spans[leg]["parent_id"] == ids[attr.RETRIEVE], leg
    kinds = {name: span["span_kind"] for name, span in spans.items()}
    assert kinds[attr.QUERY] == attr.KIND_CHAIN and kinds[attr.EMBEDDING] == attr.KIND_EMBEDDING
    assert kinds[attr.RETRIEVE] == attr.KIND_RETRIEVER and kinds[attr.LLM] == attr.KIND_LLM
    assert kinds[attr.RETRIEVE_DENSE] == kinds[attr.RETRIEVE_SPARSE] == attr.KIND_RETRIEVER
    assert kinds[attr.PROMPT] == attr.KIND_CHAIN
    assert all(span["status_code"] != "ERROR" for span in spans.values()), (
        "a normal answer has no error span"
    )
    assert spans[attr.QUERY]["attributes"][attr.INPUT_VALUE] == QUESTION
    llm = spans[attr.LLM]["attributes"]
    assert llm[attr.LLM_MODEL_NAME]
    assert llm[attr.LLM_TOKEN_COUNT_PROMPT] > 0 and llm[attr.LLM_TOKEN_COUNT_COMPLETION] > 0
    retrieve = spans[attr.RETRIEVE]["attributes"]
    assert retrieve[f"{attr.RETRIEVAL_DOCUMENTS}.0.document.content"].strip()
    assert retrieve[f"{attr.RETRIEVAL_DOCUMENTS}.0.document.id"]
    for name, span in spans.items():
        assert span["attributes"][attr.SESSION_ID] == SESSION, name
    session = phoenix.get(f"/v1/sessions/{SESSION}")  # Phoenix groups the trace into a session
    session.raise_for_status()
    assert trace_id in {t["trace_id"] for t in session.json()["data"]["traces"]}


def test_feedback_becomes_a_phoenix_annotation_on_the_root_span(
    trace: tuple[str, dict[str, Span]], phoenix: httpx.Client
) -> None:
    """POST /v1/span_annotations puts user_feedback (score 1) on rag.query; Phoenix returns it."""
    _, spans = trace
    span_id = spans[attr.QUERY]["context"]["span_id"]
    feedback = {
        "span_id": span_id,
        "name": "user_feedback",
        "annotator_kind": "HUMAN",
        "result": {"score": 1, "label": "helpful", "explanation": "spot on"},
        "identifier": "ragline",  # one annotation per span and name: repeated feedback updates it
    }
    created = phoenix.post(
        "/v1/span_annotations", params={"sync": "true"}, json={"data": [feedback]}
    )
    created.raise_for_status()
    assert created.json()["data"][0]["id"]

    def annotations() -> list[dict[str, Any]]:
        response = phoenix.get(
            f"/v1/projects/{PROJECT}/span_annotations", params={"span_ids": span_id}
        )
        response.raise_for_status()
        return [a for a in response.json()["data"] if a["name"] == "user_feedback"]

    (annotation,) = poll(annotations, 30, f"the annotation on span {span_id}")
    assert annotation["span_id"] == span_id and annotation["result"]["score"] == 1
    assert annotation["result"]["label"] == "helpful" and annotation["annotator_kind"] == "HUMAN"
    assert annotation["source"] == "API"
