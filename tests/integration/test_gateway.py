"""Gateway: API keys and scopes, rate limits in memory and on real Redis, Redis outages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from ragline.api.app import build_app
from ragline.config import Settings
from ragline.factory import Runtime
from ragline.store.keys import KeyStore

REDIS_URL = "redis://127.0.0.1:6379/0"
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


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of our own on the shared Redis, deleted afterwards."""
    prefix = f"ragline-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)
    client.close()


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


def test_a_key_scoped_to_a_collection_cannot_touch_another(settings: Settings) -> None:
    """Scoped to 'a': 403 on b for upload, list, query, retrieve, chat, document read and delete."""
    secure = with_server(settings, auth=True)
    _, admin = create_key(secure)
    _, scoped = create_key(secure, collections=["a"])
    with TestClient(build_app(secure)) as client:
        b_doc = client.post(
            "/v1/collections/b/documents",
            json={"text": "Secret B.", "source": "b.txt"},
            headers=bearer(admin),
        )
        b_id = b_doc.json()["documents"][0]["document_id"]
        b_job = b_doc.json()["documents"][0]["job_id"]
        a_doc = client.post(
            "/v1/collections/a/documents",
            json={"text": "Public A.", "source": "a.txt"},
            headers=bearer(scoped),
        )
        assert a_doc.status_code == 202
        headers = bearer(scoped)
        denied = [
            client.post(
                "/v1/collections/b/documents",
                json={"text": "x", "source": "x.txt"},
                headers=headers,
            ),
            client.get("/v1/collections/b/documents", headers=headers),
            client.post(
                "/v1/query", json={"question": "secret?", "collection": "b"}, headers=headers
            ),
            client.post(
                "/v1/retrieve", json={"question": "secret?", "collection": "b"}, headers=headers
            ),
            client.post(
                "/v1/chat/completions",
                json={"model": "b", "messages": [{"role": "user", "content": "x"}]},
                headers=headers,
            ),
            client.get(f"/v1/documents/{b_id}", headers=headers),
            client.get(f"/v1/jobs/{b_job}", headers=headers),
            client.delete(f"/v1/documents/{b_id}", headers=headers),
        ]
        assert [r.status_code for r in denied] == [403] * len(denied)
        assert [c["name"] for c in client.get("/v1/collections", headers=headers).json()] == ["a"]
        assert [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]] == ["a"]
        assert client.get(f"/v1/documents/{b_id}", headers=bearer(admin)).status_code == 200


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
        assert client.get(f"/v1/traces/{trace_id}", headers=bearer(scoped)).status_code == 403
        assert (
            client.post(
                "/v1/feedback", json={"trace_id": trace_id, "value": 1}, headers=bearer(scoped)
            ).status_code
            == 403
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
