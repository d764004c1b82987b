"""Overload: API requests past `server.max_in_flight` are refused at once, and the probes and
metrics still answer while every request thread is busy (they queued behind them before)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import anyio
import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from ragline.api.app import build_app
from ragline.config import Settings


@contextmanager
def request_threads_all_busy(client: TestClient) -> Iterator[anyio.CapacityLimiter]:
    """The app's AnyIO thread pool shrunk to one token, held by a blocked thread."""
    portal = client.portal
    assert portal is not None
    limiter: anyio.CapacityLimiter = portal.call(anyio.to_thread.current_default_thread_limiter)
    tokens = limiter.total_tokens
    portal.call(setattr, limiter, "total_tokens", 1)
    release = threading.Event()
    holder = portal.start_task_soon(anyio.to_thread.run_sync, release.wait)
    while portal.call(lambda: limiter.borrowed_tokens) < 1:
        release.wait(0.01)
    try:
        yield limiter
    finally:
        release.set()
        holder.result(timeout=10)
        portal.call(setattr, limiter, "total_tokens", tokens)


@pytest.mark.timeout(120)  # a regression blocks until the test's timeout
def test_probes_and_metrics_answer_while_every_request_thread_is_busy(
    settings: Settings,
) -> None:
    with (  # the pool outermost: it waits for its threads, which the busy pool blocks
        ThreadPoolExecutor(3) as pool,
        TestClient(build_app(settings)) as client,
        request_threads_all_busy(client),
    ):
        probes = [pool.submit(client.get, path) for path in ("/healthz", "/readyz", "/metrics")]
        responses = [probe.result(timeout=20) for probe in probes]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert responses[1].json()["checks"]["store"]["ok"]
        assert "ragline_requests_shed_total" in responses[2].text


@pytest.mark.timeout(120)
def test_api_requests_past_max_in_flight_get_503_overloaded_at_once(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"max_in_flight": 1})}
    )
    with ThreadPoolExecutor(3) as pool, TestClient(build_app(settings)) as client:
        with request_threads_all_busy(client) as limiter:
            # admitted, then waits for a request thread: it holds the one in-flight slot
            first = pool.submit(client.get, "/v1/collections")
            portal = client.portal
            assert portal is not None
            for _ in range(1000):
                if portal.call(lambda: limiter.statistics().tasks_waiting) >= 1:
                    break
                threading.Event().wait(0.01)
            refused = pool.submit(client.get, "/v1/collections").result(timeout=20)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "overloaded"
            assert refused.headers["retry-after"] == "1"
            assert client.get("/healthz").status_code == 200  # probes are never refused
        assert first.result(timeout=20).status_code == 200
        assert client.get("/v1/collections").status_code == 200  # the slot was given back
        shed = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("ragline_requests_shed_total")
        ]
        assert shed and float(shed[0].split()[-1]) >= 1
