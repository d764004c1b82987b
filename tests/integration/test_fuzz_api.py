"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis), in process, with auth on.

Every operation gets schema-valid and schema-violating requests carrying a real API key, so the
routes run past authentication against a real store, index, embedder and the session's
llama.cpp server. The default collection holds one document, so questions that name no
collection run retrieval and generation end to end. No request may answer 5xx; every status
must be documented and every body must fit the schema. Uploads, whose multipart body the
schema does not describe, are fuzzed with hypothesis: any names, any bytes.

Bounds (docs/reliability.md, "Fuzzing"): 20 generated requests per operation plus
schemathesis' deterministic coverage cases (boundary values, wrong types, missing fields,
unexpected methods); the two operations that call the LLM get no coverage cases, since each of
its ~160 cases would be a generation. RAGLINE_FUZZ_EXAMPLES raises the count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from ragline.api.app import build_app
from ragline.config import Settings
from ragline.factory import Runtime
from ragline.ingestion.parsers import SUPPORTED_EXTENSIONS
from ragline.store.keys import KeyStore
from tests.fuzzing import fuzz
from tests.helpers import ingest

# The app's background threads (ingestion worker, index sync) make spans while hypothesis draws
# examples, and OpenTelemetry's RandomIdGenerator takes span ids from the global `random`
# module; hypothesis sees that state change and warns as if a strategy had used `random`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
SEED_DOCUMENT = DOCS / "markdown" / "markitdown_SECURITY.md"
LLM_PATHS = ["/v1/query", "/v1/chat/completions"]

# The schema does not depend on settings, and building an app opens nothing (its lifespan
# does), so the schema is read at import. (schemathesis.pytest.from_fixture would read it from a
# fixture, but it fails on pytest 9: it writes `Item._nodeid`, which pytest 9 removed.)
SPEC = build_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(SPEC).exclude(path=LLM_PATHS)
llm_schema = schemathesis.openapi.from_dict(SPEC).include(path=LLM_PATHS)
llm_schema.config.phases.update(phases=["examples", "fuzzing"])  # no coverage phase


@dataclass
class FuzzTarget:
    """The app under test, the headers of a valid key, and the upload jobs made so far."""

    app: FastAPI
    headers: dict[str, str]
    job_ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, llm_base_url: str) -> Iterator[FuzzTarget]:
    """One app for every operation: auth on, one unlimited key, the default collection seeded.
    Generations are kept small to bound each question's time: a 128-token context (two
    64-token chunks) and short answers, multi-step plans and summaries. The LLM timeout is
    long, so that cores busy with other work slow a generation down instead of turning it into
    a 504 reported as a bug."""
    settings = Settings(
        home=tmp_path_factory.mktemp("fuzz") / "home",
        llm={"base_url": llm_base_url, "max_tokens": 16, "temperature": 0.0, "timeout_s": 300},
        chunking={"chunk_size": 64, "chunk_overlap": 8},
        generation={"max_context_tokens": 128},
        multistep={"plan_max_tokens": 32, "summary_max_tokens": 16, "max_sub_questions": 2},
        server={"auth": True, "token_budget": "100000000/minute"},
    )
    with Runtime(settings) as runtime:
        _, secret = KeyStore(runtime.store.engine).create("fuzz", None, "1000000/minute")
        ingest(runtime, settings.default_collection, SEED_DOCUMENT)
    yield FuzzTarget(build_app(settings), {"Authorization": f"Bearer {secret}"})
    shutdown_lifespans()  # schemathesis keeps an app's lifespan running until exit otherwise


# Statuses any route may answer besides those its operation documents: docs/api.md's table;
# 400 for a body that cannot be parsed at all (JSON that is not UTF-8, multipart without a
# boundary); 405 for a method the path does not have (schemathesis probes them). No 5xx:
# 502/503/504 mean a backend is down, and none is here.
ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 415, 422, 429})


def documented_status(ctx: CheckContext, response: Response, case: Case) -> None:
    """The status is one the operation documents or one of the error statuses above."""
    documented = {
        int(code) for code in case.operation.definition.raw["responses"] if code.isdigit()
    }
    assert response.status_code in documented | ERROR_STATUSES, (
        f"{response.status_code} is neither documented for {case.operation.label} "
        f"({sorted(documented)}) nor a docs/api.md error status"
    )


def error_body(ctx: CheckContext, response: Response, case: Case) -> None:
    """An error is JSON `{"error": {"code": str, "message": str}}` (docs/api.md)."""
    if response.status_code >= 400:
        assert_error_body(response.json())


def assert_error_body(body: Any) -> None:
    assert isinstance(body["error"]["code"], str), body
    assert isinstance(body["error"]["message"], str), body


def documented_or_requested_stream(ctx: CheckContext, response: Response, case: Case) -> None:
    """Server-Sent Events when the request asked for `stream: true`, else as documented.
    (The schema documents only the JSON answer of the question operations.)"""
    asked_stream = isinstance(case.body, dict) and case.body.get("stream") is True
    if asked_stream and response.status_code == 200:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("text/event-stream"), content_type
    else:
        content_type_conformance(ctx, response, case)


# Not checked: schemathesis' status_code_conformance (the schema documents no error statuses;
# `documented_status` holds them to docs/api.md instead), positive_data_acceptance (limits the
# schema cannot state, such as top_k ≤ server.max_top_k, turn schema-valid requests into 422s)
# and negative_data_rejection (pydantic's lax mode accepts e.g. `false` for a number).
CHECKS = [
    not_a_server_error,
    documented_status,
    error_body,
    response_schema_conformance,
    content_type_conformance,
]
QUESTION_CHECKS = [*CHECKS[:-1], documented_or_requested_stream]


@schema.parametrize()
@fuzz(20)
def test_no_operation_answers_a_server_error(case: Case, target: FuzzTarget) -> None:
    """Any request, valid or not, gets a documented non-5xx status and a body that fits."""
    case.call_and_validate(app=target.app, headers=target.headers, checks=CHECKS)


@llm_schema.parametrize()
@fuzz(20)
def test_questions_of_any_shape_get_no_server_error(case: Case, target: FuzzTarget) -> None:
    """Questions and chat requests, valid or not: the same checks (a stream when asked for),
    retrieval and generation included."""
    case.call_and_validate(app=target.app, headers=target.headers, checks=QUESTION_CHECKS)


FILE_NAMES = st.one_of(
    st.sampled_from(["../../etc/passwd.md", "..", "a\\b\\c.txt", "x" * 600 + ".md", "CON.txt"]),
    st.builds(
        str.__add__,
        st.text(max_size=30),
        st.sampled_from([*sorted(SUPPORTED_EXTENSIONS), ".PDF", ".exe", ""]),
    ),
)
FILE_CONTENTS = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=300).map(str.encode),
    st.sampled_from([b"%PDF-1.7\n", b"PK\x03\x04"]).flatmap(
        lambda magic: st.binary(max_size=512).map(magic.__add__)
    ),
)


@fuzz(25)
@given(files=st.lists(st.tuples(FILE_NAMES, FILE_CONTENTS), min_size=1, max_size=3))
def test_uploads_of_any_names_and_bytes_are_accepted_or_refused_cleanly(
    target: FuzzTarget, files: list[tuple[str, bytes]]
) -> None:
    """202/200 with one safe name per file, or a documented 4xx with ragline's error body."""
    with get_client(target.app) as client:
        response = client.post(
            "/v1/collections/uploads/documents",
            files=[("files", (name, data)) for name, data in files],
            headers=target.headers,
            timeout=60,
        )
    assert response.status_code in {200, 202} | ERROR_STATUSES, response.text
    if response.status_code >= 400:
        assert_error_body(response.json())
        return
    documents = response.json()["documents"]
    assert len(documents) == len(files)
    for document in documents:
        assert not {"/", "\\"} & set(document["source"]) and document["source"] not in (".", "..")
        if document["job_id"]:
            target.job_ids.append(document["job_id"])


def test_after_the_fuzzing_every_job_ends_and_a_good_document_still_ingests(
    target: FuzzTarget,
) -> None:
    """No fuzzed upload leaves its job running or the worker stuck: each job ends done or
    dead, and a good document uploaded last becomes ready (retrievable), in an ordinary
    collection and in each collection named like the index's own files (audit finding 2)."""
    with get_client(target.app) as client:
        good = [
            client.post(
                f"/v1/collections/{name}/documents",
                files=[("files", (SEED_DOCUMENT.name, SEED_DOCUMENT.read_bytes()))],
                headers=target.headers,
                timeout=60,
            ).json()["documents"][0]
            for name in ["uploads", *RESERVED_NAMES]
        ]
        statuses = wait_for_jobs(client, target, [*target.job_ids, *(g["job_id"] for g in good)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            documents = [
                client.get(f"/v1/documents/{g['document_id']}", headers=target.headers).json()
                for g in good
            ]
            if all(d["status"] == "ready" for d in documents):
                break
            time.sleep(0.2)
    assert set(statuses.values()) <= {"done", "dead"}, statuses
    assert [d["status"] for d in documents] == ["ready"] * len(good), documents


def wait_for_jobs(
    client: requests.Session, target: FuzzTarget, job_ids: list[str], timeout_s: float = 120
) -> dict[str, str]:
    """Poll the jobs until each is done or dead, or the time is up; their last statuses."""
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        for job_id in job_ids:
            response = client.get(f"/v1/jobs/{job_id}", headers=target.headers)
            statuses[job_id] = response.json()["status"]
        if set(statuses.values()) <= {"done", "dead"}:
            break
        time.sleep(0.2)
    return statuses


# The outside audit's probes (issue 19): strings that are valid JSON but not text, control and
# bidi characters, names of the index's own files and collections, absurd nesting. Each is put in
# one string field of a valid body (or a header); `DEEP` stands for 20,000 nested arrays.
DEEP = "\x00deep\x00"
HOSTILE = [
    "\ud800", "x\udfffy", "\ud83d", "\x00", "\x1b[31mred", "line\nbreak", "\u202eevil",
    "sync-cursor", "sync-cursor.tmp", "meta", "ragline_meta", "collections", "..", "CON",
    "default/../x", "x" * 5000, DEEP,
]  # fmt: skip
RESERVED_NAMES = ["sync-cursor", "sync-cursor.tmp", "meta", "ragline_meta", "collections"]
TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/retrieve", {"question": "how to report a vulnerability", "collection": "default"}),
    ("/v1/query", {"question": "report a bug", "collection": "default", "user_id": "u", "session_id": "s"}),
    ("/v1/chat/completions", {"model": "ragline", "user": "u", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "report a bug"}]}]}),
    ("/v1/feedback", {"trace_id": "0" * 32, "value": 1, "comment": "ok", "name": "user_feedback"}),
    ("/v1/collections/{name}/documents", {"text": "a note about releases", "source": "note.txt"}),
]  # fmt: skip


def string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths of every string in a JSON value."""
    if isinstance(value, str):
        return [path]
    if not isinstance(value, (dict, list)):
        return []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return [p for key, item in items for p in string_paths(item, (*path, key))]


def with_value(body: Any, path: tuple[Any, ...], value: str) -> Any:
    if not path:
        return value
    copy = dict(body) if isinstance(body, dict) else list(body)
    copy[path[0]] = with_value(body[path[0]], path[1:], value)
    return copy


def raw_json(body: Any) -> bytes:
    """`json.dumps` keeps lone surrogates as `\\udXXX` escapes, as an attacker's client would."""
    encoded = json.dumps(body).encode()
    return encoded.replace(json.dumps(DEEP).encode(), b"[" * 20_000 + b"]" * 20_000)


@fuzz(60)
@given(
    template=st.sampled_from(TEMPLATES),
    hostile=st.sampled_from(HOSTILE),
    where=st.integers(min_value=0),
    collection=st.sampled_from(["default", *RESERVED_NAMES]),
    header=st.sampled_from([None, "X-Session-Id", "X-User-Id", "X-Request-Id"]),
)
def test_the_audits_hostile_strings_in_any_field_get_no_server_error(
    target: FuzzTarget,
    template: tuple[str, dict[str, Any]],
    hostile: str,
    where: int,
    collection: str,
    header: str | None,
) -> None:
    """Any of the audit's hostile strings in any string field of a valid body (or in a header),
    any reserved name as the collection: a documented status, never a 5xx, and the trace
    listing still answers afterwards (a lone surrogate once broke it for good)."""
    path, body = template
    paths = string_paths(body)
    body = with_value(body, paths[where % len(paths)], hostile)
    headers = {**target.headers, "content-type": "application/json"}
    if header and hostile.isascii() and hostile.isprintable():
        headers[header] = hostile[:200]
    with get_client(target.app) as client:
        response = client.post(
            path.format(name=collection), data=raw_json(body), headers=headers, timeout=120
        )
        assert response.status_code in {200, 201, 202} | ERROR_STATUSES, response.text[:300]
        if response.status_code >= 400:
            assert_error_body(response.json())
        elif path.endswith("/documents"):
            target.job_ids += [d["job_id"] for d in response.json()["documents"] if d["job_id"]]
        listing = client.get("/v1/traces", headers=target.headers)
        assert listing.status_code == 200, listing.text[:300]
