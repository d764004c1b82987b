"""Gateway: API keys and scopes, rate limits in memory and on real Redis, Redis outages."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ragline.api.app import build_app
from ragline.config import Settings
from ragline.evals.datasets import EvalItem, EvalStore
from ragline.evals.runs import EvalRunner
from ragline.factory import Runtime
from ragline.store.keys import KeyStore
from ragline.store.schema import spans
from tests.helpers import REDIS_URL, updated
from tests.integration.test_token_budget import worst_case

DEAD_REDIS_URL = "redis://127.0.0.1:1/0"


def with_server(settings: Settings, **server: object) -> Settings:
    return settings.model_copy(update={"server": settings.server.model_copy(update=server)})


def with_cache(settings: Settings, **cache: object) -> Settings:
    return settings.model_copy(update={"cache": settings.cache.model_copy(update=cache)})


def create_key(
    settings: Settings, collections: list[str] | None = None, rate: str | None = None
) -> tuple[str, str]:
    with Runtime(settings) as rt:
        key, secret = KeyStore(rt.store.engine).create("test", collections, rate)
    return key.id, secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_every_v1_route_needs_a_valid_key_when_auth_is_on(settings: Settings) -> None:
    """Missing, malformed, unknown and revoked keys get 401; health checks stay open."""
    secure = with_server(settings, auth=True)
    key_id, secret = create_key(secure)
    with TestClient(build_app(secure)) as client:
        assert client.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Basic abc"}, bearer("rl_wrong")):
            response = client.get("/v1/collections", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
        assert client.get("/v1/collections", headers=bearer(secret)).status_code == 200
        KeyStore(client.app.state.ragline.runtime.store.engine).revoke(key_id)  # type: ignore[attr-defined]
        assert client.get("/v1/collections", headers=bearer(secret)).status_code == 401


def test_a_key_scoped_to_a_collection_cannot_touch_another_on_any_route(
    settings: Settings,
) -> None:
    """Scoped to 'a': every /v1 route that names, lists or reads collection b's data is
    refused or filtered, and a route added later without a case here fails this test. A route
    naming collection b is a 403 (checked before any lookup); a document, job, trace or eval
    run of b addressed by id or name is a 404 exactly like one that does not exist."""
    secure = with_server(settings, auth=True)
    _, admin = create_key(secure)
    _, scoped = create_key(secure, collections=["a"])
    with TestClient(build_app(secure)) as client:
        runtime = client.app.state.ragline.runtime  # type: ignore[attr-defined]
        b_doc = client.post(
            "/v1/collections/b/documents",
            json={"text": "Secret B.", "source": "b.txt"},
            headers=bearer(admin),
        ).json()["documents"][0]
        a_doc = client.post(
            "/v1/collections/a/documents",
            json={"text": "Public A.", "source": "a.txt"},
            headers=bearer(scoped),
        )
        assert a_doc.status_code == 202
        while runtime.store.pending_jobs():
            time.sleep(0.1)
        runtime.sync_index()
        b_trace = client.post(
            "/v1/retrieve", json={"question": "secret?", "collection": "b"}, headers=bearer(admin)
        ).json()["trace_id"]
        both_trace = client.post(
            "/v1/query",
            json={"question": "secret?", "collections": [{"name": "a"}, {"name": "b"}]},
            headers=bearer(admin),
        ).json()["trace_id"]
        EvalStore(runtime.store.engine).save("d", [EvalItem("1", "secret?")])
        EvalRunner(runtime).run("d", "b", "b-run", mode="retrieval")
        EvalRunner(runtime).run("d", "a", "a-run", mode="retrieval")
        headers = bearer(scoped)
        refused = {
            ("post", "/v1/collections/{collection}/documents"): client.post(
                "/v1/collections/b/documents",
                json={"text": "x", "source": "x.txt"},
                headers=headers,
            ),
            ("get", "/v1/collections/{collection}/documents"): client.get(
                "/v1/collections/b/documents", headers=headers
            ),
            ("post", "/v1/query"): client.post(
                "/v1/query", json={"question": "secret?", "collection": "b"}, headers=headers
            ),
            ("post", "/v1/retrieve"): client.post(
                "/v1/retrieve", json={"question": "secret?", "collection": "b"}, headers=headers
            ),
            ("post", "/v1/chat/completions"): client.post(
                "/v1/chat/completions",
                json={"model": "b", "messages": [{"role": "user", "content": "x"}]},
                headers=headers,
            ),
        }
        missing = "0" * 32
        hidden = {  # (route): (b's response, the response for an id that does not exist)
            ("get", "/v1/documents/{document_id}"): (
                client.get(f"/v1/documents/{b_doc['document_id']}", headers=headers),
                client.get(f"/v1/documents/{missing}", headers=headers),
            ),
            ("delete", "/v1/documents/{document_id}"): (
                client.delete(f"/v1/documents/{b_doc['document_id']}", headers=headers),
                client.delete(f"/v1/documents/{missing}", headers=headers),
            ),
            ("get", "/v1/jobs/{job_id}"): (
                client.get(f"/v1/jobs/{b_doc['job_id']}", headers=headers),
                client.get(f"/v1/jobs/{missing}", headers=headers),
            ),
            ("get", "/v1/traces/{trace_id}"): (
                client.get(f"/v1/traces/{b_trace}", headers=headers),
                client.get(f"/v1/traces/{missing}", headers=headers),
            ),
            ("get", "/v1/traces/{trace_id}/diagnosis"): (
                client.get(f"/v1/traces/{b_trace}/diagnosis", headers=headers),
                client.get(f"/v1/traces/{missing}/diagnosis", headers=headers),
            ),
            ("post", "/v1/feedback"): (
                client.post(
                    "/v1/feedback", json={"trace_id": b_trace, "value": 0}, headers=headers
                ),
                client.post(
                    "/v1/feedback", json={"trace_id": missing, "value": 0}, headers=headers
                ),
            ),
            ("get", "/v1/evals/compare"): (
                client.get("/v1/evals/compare?baseline=a-run&candidate=b-run", headers=headers),
                client.get("/v1/evals/compare?baseline=a-run&candidate=nope", headers=headers),
            ),
        }
        for route, (seen, absent) in hidden.items():
            assert (seen.status_code, absent.status_code) == (404, 404), route
            real = seen.json()["error"]
            for secret in (b_doc["document_id"], b_doc["job_id"], b_trace, "b-run"):
                real["message"] = real["message"].replace(secret, "?")
            fake = absent.json()["error"]
            for other in (missing, "nope"):
                fake["message"] = fake["message"].replace(other, "?")
            assert real == fake, route  # nothing tells b's ids from made-up ones
        assert {k: r.status_code for k, r in refused.items()} == {k: 403 for k in refused}
        multi = client.get(f"/v1/traces/{both_trace}", headers=headers)
        assert multi.status_code == 404  # it read b too
        assert client.get(f"/v1/traces/{both_trace}", headers=bearer(admin)).status_code == 200
        filtered = {
            ("get", "/v1/collections"): [
                c["name"] for c in client.get("/v1/collections", headers=headers).json()
            ],
            ("get", "/v1/models"): [
                m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]
            ],
            ("get", "/v1/traces"): [
                t["trace_id"] for t in client.get("/v1/traces?limit=500", headers=headers).json()
            ],
            ("get", "/v1/evals/runs"): [
                r["name"] for r in client.get("/v1/evals/runs", headers=headers).json()
            ],
        }
        assert filtered[("get", "/v1/collections")] == ["a"]
        assert filtered[("get", "/v1/models")] == ["a"]
        assert b_trace not in filtered[("get", "/v1/traces")]
        assert both_trace not in filtered[("get", "/v1/traces")]
        assert filtered[("get", "/v1/evals/runs")] == ["a-run"]
        (run,) = client.get("/v1/evals/runs", headers=headers).json()
        assert datetime.fromisoformat(run["created_at"]).utcoffset() == timedelta(0)
        assert client.get(f"/v1/documents/{b_doc['document_id']}", headers=bearer(admin)).is_success
        routes = {
            (method, path)
            for path, operations in client.app.openapi()["paths"].items()  # type: ignore[attr-defined]
            for method in operations
            if path.startswith("/v1/")
        }
        assert routes == set(refused) | set(hidden) | set(filtered), (
            "a /v1 route without a scope case"
        )


def test_rate_limit_in_memory_answers_429_with_retry_after(settings: Settings) -> None:
    secure = with_server(settings, auth=True)
    _, secret = create_key(secure, rate="2/minute")
    with TestClient(build_app(secure)) as client:
        codes = [
            client.get("/v1/collections", headers=bearer(secret)).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        limited = client.get("/v1/collections", headers=bearer(secret))
        assert int(limited.headers["Retry-After"]) >= 1
        assert "2/minute" in limited.json()["error"]["message"]


def test_anonymous_callers_are_limited_per_address(settings: Settings) -> None:
    open_server = with_server(settings, auth=False, anonymous_rate_limit="3/minute")
    with TestClient(build_app(open_server)) as client:
        codes = [client.get("/v1/collections").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert client.get("/healthz").status_code == 200  # health is never limited


def test_rate_limit_on_redis_is_shared_by_replicas(settings: Settings, redis_prefix: str) -> None:
    """Two app instances on one Redis share one budget: the limit holds across replicas."""
    shared = with_cache(
        with_server(settings, auth=True), redis_url=REDIS_URL, key_prefix=redis_prefix
    )
    _, secret = create_key(shared, rate="3/minute")
    with TestClient(build_app(shared)) as first, TestClient(build_app(shared)) as second:
        codes = [
            c.get("/v1/collections", headers=bearer(secret)).status_code
            for c in (first, second, first, second)
        ]
    assert codes == [200, 200, 200, 429]


def test_redis_unreachable_degrades_caches_and_limits_but_requests_succeed(
    settings: Settings,
) -> None:
    """With Redis down, answers still come back (cache misses counted) and limits still hold."""
    down = with_cache(
        with_server(settings, anonymous_rate_limit="5/minute"), redis_url=DEAD_REDIS_URL
    )
    with TestClient(build_app(down)) as client:
        client.post(
            "/v1/collections/kb/documents",
            json={"text": "Llamas carry packs in the Andes.", "source": "l.txt"},
        )
        runtime = client.app.state.ragline.runtime  # type: ignore[attr-defined]
        worker = runtime.worker()
        while worker.run_once() is not None:
            pass
        runtime.sync_index()
        response = client.post(
            "/v1/retrieve", json={"question": "What do llamas carry?", "collection": "kb"}
        )
        assert response.status_code == 200
        assert response.json()["fused"][0]["source"] == "l.txt"
        assert (
            runtime.caches.retrieval.stats.errors >= 1
            and runtime.caches.embedding.stats.errors >= 1
        )
        codes = [client.get("/v1/collections").status_code for _ in range(5)]
        assert codes[-1] == 429  # in-process fallback limit
        assert client.app.state.ragline.limiter.errors >= 1  # type: ignore[attr-defined]


def test_a_scoped_key_cannot_read_or_rate_traces_of_other_collections(settings: Settings) -> None:
    secure = with_server(settings, auth=True)
    _, admin = create_key(secure)
    _, scoped = create_key(secure, collections=["a"])
    with TestClient(build_app(secure)) as client:
        client.post(
            "/v1/collections/b/documents",
            json={"text": "B facts.", "source": "b.txt"},
            headers=bearer(admin),
        )
        state = client.app.state.ragline  # type: ignore[attr-defined]
        worker = state.runtime.worker()
        while worker.run_once() is not None:
            pass
        state.runtime.sync_index()
        trace_id = client.post(
            "/v1/retrieve", json={"question": "facts", "collection": "b"}, headers=bearer(admin)
        ).json()["trace_id"]
        state.runtime.tracing.flush()
        assert client.get(f"/v1/traces/{trace_id}", headers=bearer(admin)).status_code == 200
        assert client.get(f"/v1/traces/{trace_id}", headers=bearer(scoped)).status_code == 404
        assert (
            client.post(
                "/v1/feedback", json={"trace_id": trace_id, "value": 1}, headers=bearer(scoped)
            ).status_code
            == 404
        )
        assert trace_id not in [
            t["trace_id"] for t in client.get("/v1/traces", headers=bearer(scoped)).json()
        ]


def test_keys_cli_creates_a_key_once_lists_it_and_revokes_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ragline keys create` prints the secret once; only its hash is stored; revoke works by prefix."""
    from typer.testing import CliRunner

    from ragline.cli import app
    from ragline.store.keys import hash_key

    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    runner = CliRunner()
    created = runner.invoke(
        app, ["keys", "create", "--name", "ci", "--collections", "a,b", "--rate", "5/second"]
    )
    assert created.exit_code == 0, created.output
    secret = next(line for line in created.stdout.splitlines() if line.startswith("rl_"))
    with Runtime(settings) as rt:
        (key,) = KeyStore(rt.store.engine).list()
        assert key.collections == ["a", "b"] and key.rate_limit == "5/second"
        with rt.store.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalar()
        assert stored == hash_key(secret) and secret not in str(stored)
    assert "ci" in runner.invoke(app, ["keys", "list"]).stdout
    assert runner.invoke(app, ["keys", "create", "--name", "bad", "--rate", "lots"]).exit_code != 0
    assert runner.invoke(app, ["keys", "revoke", key.id[:8]]).exit_code == 0
    with Runtime(settings) as rt:
        assert KeyStore(rt.store.engine).verify(secret) is None


def test_a_key_that_spent_its_token_budget_gets_429_until_the_window_ends(
    settings: Settings,
) -> None:
    """OWASP LLM10: the budget holds one question's worst case and a few tokens more; the first
    answer spends more than those few, so the key's next question is a 429 naming the budget,
    while retrieval (no LLM) and another key still work."""
    question = {"question": "Where do I report vulnerabilities?", "collection": "kb"}
    budget = f"{worst_case(settings, question['question']) + 50}/hour"
    secure = with_server(settings, auth=True, token_budget=budget)
    _, spender = create_key(secure)
    _, other = create_key(secure)
    with TestClient(build_app(secure)) as client:
        client.post(
            "/v1/collections/kb/documents",
            json={"text": "Report vulnerabilities to secure@example.com.", "source": "s.md"},
            headers=bearer(spender),
        )
        runtime = client.app.state.ragline.runtime  # type: ignore[attr-defined]
        while runtime.store.pending_jobs():
            time.sleep(0.1)
        runtime.sync_index()
        first = client.post("/v1/query", json=question, headers=bearer(spender))
        assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 50
        refused = client.post(
            "/v1/query", json={**question, "stream": True}, headers=bearer(spender)
        )
        assert refused.status_code == 429
        assert f"token budget of {budget} spent" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) > 0
        chat = {"model": "kb", "messages": [{"role": "user", "content": "Where to report?"}]}
        assert (
            client.post("/v1/chat/completions", json=chat, headers=bearer(spender)).status_code
            == 429
        )
        assert client.post("/v1/retrieve", json=question, headers=bearer(spender)).is_success
        assert client.post("/v1/query", json=question, headers=bearer(other)).status_code == 200


def test_a_token_budget_smaller_than_one_question_is_refused_at_start(settings: Settings) -> None:
    """Every question reserves at least its context budget and max_tokens: a budget below that
    could never answer anything, so the gateway refuses it when built, saying why."""
    with pytest.raises(ValueError, match=r"cannot hold one question.*= 1596 tokens"):
        build_app(with_server(settings, token_budget="150/hour"))


def test_no_secret_reaches_the_logs_the_traces_or_an_error_body(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller's API key and the LLM's API key appear in no log record (DEBUG included), no
    stored span, and no response, across a good request, an LLM failure and a bad key."""
    llm_secret = "sk-llm-" + uuid.uuid4().hex
    secure = updated(
        with_server(settings, auth=True), llm={"api_key": llm_secret, "max_retries": 0}
    )
    _, secret = create_key(secure)
    caplog.set_level(logging.DEBUG)
    with TestClient(build_app(secure), raise_server_exceptions=False) as client:
        runtime = client.app.state.ragline.runtime  # type: ignore[attr-defined]
        bodies = [
            client.post(
                "/v1/collections/kb/documents",
                json={"text": "Report issues to secure@example.com.", "source": "s.md"},
                headers=bearer(secret),
            ).text
        ]
        while runtime.store.pending_jobs():
            time.sleep(0.1)
        runtime.sync_index()
        question = {"question": "Where do I report issues?", "collection": "kb"}
        bodies.append(client.post("/v1/query", json=question, headers=bearer(secret)).text)
        bodies.append(client.post("/v1/query", json=question, headers=bearer(secret + "x")).text)
        bodies.append(client.get("/readyz").text)
        runtime.tracing.flush()
        with runtime.store.engine.connect() as conn:
            stored = [
                json.dumps(dict(r._mapping), default=str) for r in conn.execute(select(spans))
            ]
    assert stored, "the requests were traced"
    texts = {"logs": [r.getMessage() for r in caplog.records], "spans": stored, "bodies": bodies}
    for where, items in texts.items():
        for text in items:
            for leaked in (secret, llm_secret):
                assert leaked not in text, f"a secret in the {where}: {text[:200]}"


def test_a_key_with_no_collections_is_listed_as_none_not_as_all(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys list` showed a key scoped to no collection as `*` (all) though it may use none;
    `--collections ""` made a key for every collection."""
    from typer.testing import CliRunner

    from ragline.cli import app

    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    runner = CliRunner()
    for name, scope in (("no", ""), ("all", None), ("ab", "a,b")):  # short: the table is 80 wide
        options = ["--collections", scope] if scope is not None else []
        assert runner.invoke(app, ["keys", "create", "--name", name, *options]).exit_code == 0
    with Runtime(settings) as rt:
        scopes = {k.name: k.collections for k in KeyStore(rt.store.engine).list()}
    assert scopes == {"no": [], "all": None, "ab": ["a", "b"]}
    listed = {
        line.split("│")[2].strip(): line.split("│")[4].strip()
        for line in runner.invoke(app, ["keys", "list"]).stdout.splitlines()
        if line.count("│") > 4
    }
    assert {n: listed[n] for n in scopes} == {"no": "none", "all": "*", "ab": "a,b"}


def test_two_keys_rating_one_trace_each_keep_their_score_and_made_up_traces_are_404(
    settings: Settings,
) -> None:
    """POST /v1/feedback: a second key's score no longer replaces the first's, and each row
    names the key that gave it; an all-collections key rating a trace id that never existed
    gets 404 (it got 201) and nothing is stored."""
    secure = with_server(settings, auth=True)
    first_id, first = create_key(secure)
    second_id, second = create_key(secure)
    with TestClient(build_app(secure)) as client:
        runtime = client.app.state.ragline.runtime  # type: ignore[attr-defined]
        with runtime.tracing.tracer.start_as_current_span("rag.query") as root:
            trace_id = format(root.get_span_context().trace_id, "032x")
        for secret, value in ((first, 1), (second, 0)):
            response = client.post(
                "/v1/feedback", json={"trace_id": trace_id, "value": value}, headers=bearer(secret)
            )
            assert response.status_code == 201, response.text
        given = client.get(f"/v1/traces/{trace_id}", headers=bearer(first)).json()["feedback"]
        assert sorted((f["key_id"], f["value"]) for f in given) == sorted(
            [(first_id, 1.0), (second_id, 0.0)]
        )
        made_up = uuid.uuid4().hex
        refused = client.post(
            "/v1/feedback", json={"trace_id": made_up, "value": 1}, headers=bearer(first)
        )
        assert refused.status_code == 404
        assert runtime.traces.feedback(made_up) == []


def test_failed_keys_from_one_address_are_limited_before_the_lookup(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `auth_failure_limit` bad keys an address gets 429 with Retry-After without a key
    lookup, even with a good key; successes never count, so a valid key is not slowed."""
    secure = with_server(settings, auth=True, auth_failure_limit="3/minute")
    _, secret = create_key(secure)
    with TestClient(build_app(secure)) as client:
        keys = client.app.state.ragline.keys  # type: ignore[attr-defined]
        lookups = []
        verify = keys.verify
        monkeypatch.setattr(keys, "verify", lambda s: lookups.append(s) or verify(s))
        good = [client.get("/v1/collections", headers=bearer(secret)) for _ in range(10)]
        assert [r.status_code for r in good] == [200] * 10
        bad = [client.get("/v1/collections", headers=bearer(f"rl_bad{i}")) for i in range(3)]
        assert [r.status_code for r in bad] == [401] * 3
        assert len(lookups) == 13
        for headers in (bearer("rl_bad"), bearer(secret)):
            limited = client.get("/v1/collections", headers=headers)
            assert limited.status_code == 429
            assert int(limited.headers["Retry-After"]) >= 1
        assert len(lookups) == 13  # refused before the database was asked


def test_every_response_carries_the_security_headers(settings: Settings) -> None:
    """nosniff, no framing, no referrer and a strict CSP on the UI, the API, errors and the
    413/404 answers; /docs gets its own policy that allows its CDN and its one inline script
    by hash (not 'unsafe-inline')."""
    import base64
    import hashlib
    import re

    small = with_server(settings, max_request_bytes=1024)
    with TestClient(build_app(small)) as client:
        responses = {
            "ui": client.get("/"),
            "ui script": client.get("/ui/app.js"),
            "api": client.get("/v1/collections"),
            "health": client.get("/healthz"),
            "missing": client.get("/v1/documents/nope"),
            "unknown route": client.get("/nowhere"),
            "too large": client.post("/v1/query", content=b"x" * 2048),
        }
        for name, response in responses.items():
            headers = response.headers
            assert headers["x-content-type-options"] == "nosniff", name
            assert headers["x-frame-options"] == "DENY", name
            assert headers["referrer-policy"] == "no-referrer", name
            policy = headers["content-security-policy"]
            assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy, name
            assert "unsafe" not in policy, name
        docs = client.get("/docs")
        (inline,) = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        policy = docs.headers["content-security-policy"]
        script_src = next(p for p in policy.split(";") if p.strip().startswith("script-src"))
        assert f"'sha256-{digest}'" in script_src and "unsafe" not in script_src
        assert "https://cdn.jsdelivr.net" in script_src
        assert docs.headers["x-frame-options"] == "DENY"
        assert int(docs.headers["content-length"]) == len(docs.content)


def test_a_scoped_key_lists_its_traces_however_many_newer_ones_it_may_not_read(
    settings: Settings,
) -> None:
    """GET /v1/traces applied its limit before the scope: 20 newer traces of b left a key
    scoped to a with [] although it had traces."""
    secure = with_server(settings, auth=True)
    _, scoped = create_key(secure, collections=["a"])
    with TestClient(build_app(secure)) as client:
        tracing = client.app.state.ragline.runtime.tracing  # type: ignore[attr-defined]
        made = {}
        for collection in ["a"] * 3 + ["b"] * 20:
            attributes = {"ragline.collection": collection}
            with tracing.tracer.start_as_current_span("rag.query", attributes=attributes) as root:
                made[format(root.get_span_context().trace_id, "032x")] = collection
            time.sleep(0.002)  # distinct start times
        tracing.flush()
        listed = client.get("/v1/traces?limit=2", headers=bearer(scoped)).json()
        assert [made[t["trace_id"]] for t in listed] == ["a", "a"]
