"""Token budgets (issue 19): reservations on memory and real Redis, concurrent questions on a
small budget, and streams cut by the client, against a real gateway and llama.cpp server."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from ragline.api.app import build_app
from ragline.api.budget import question_cost
from ragline.api.limits import RateLimiter
from ragline.config import Settings
from ragline.factory import Runtime
from tests.helpers import REDIS_URL, TcpProxy, ingest, live_server, updated
from tests.integration.test_api import SECURITY

QUESTION = "How do I report a security vulnerability?"
LONG_QUESTION = "Explain in a long, detailed essay how to report a security vulnerability."
BUDGET_KEY = "tokens:ip:127.0.0.1"  # anonymous callers are counted by address


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest, redis_prefix: str) -> RateLimiter:
    """The limiter on each store: in process, or on the real Redis under our own prefix."""
    if request.param == "memory":
        return RateLimiter()
    return RateLimiter(REDIS_URL, redis_prefix + "limits", timeout_s=2.0)


def spent(limiter: RateLimiter, budget: str, key: str = BUDGET_KEY) -> int:
    """Tokens counted in `key`'s current window (a hit of cost 0 counts nothing)."""
    decision = limiter.hit(budget, key, cost=0)
    return decision.limit - decision.remaining


def test_reservations_hold_and_settle_on_each_store(limiter: RateLimiter) -> None:
    """Held tokens count at once, one that does not fit counts nothing, a settlement keeps the
    used tokens and gives back the rest, and usage past the estimate is still charged."""
    held, first = limiter.reserve("100/hour", "tokens:a", 70)
    assert held.allowed and held.remaining == 30 and first is not None
    refused, none = limiter.reserve("100/hour", "tokens:a", 40)
    assert not refused.allowed and none is None and refused.retry_after_s > 3500
    assert spent(limiter, "100/hour", "tokens:a") == 70
    limiter.settle(first, 25)
    assert spent(limiter, "100/hour", "tokens:a") == 25
    _, second = limiter.reserve("100/hour", "tokens:a", 40)
    assert second is not None
    limiter.settle(second, 60)  # past its estimate of 40: charged in full
    assert spent(limiter, "100/hour", "tokens:a") == 85
    assert spent(limiter, "100/hour", "tokens:b") == 0


def test_concurrent_reservations_never_hold_more_than_the_budget(limiter: RateLimiter) -> None:
    """Forty threads reserve 10 tokens each from a budget of 100 at once: exactly ten hold,
    and once all have settled the window holds what they used."""

    def take(_: int) -> bool:
        _, reservation = limiter.reserve("100/hour", "tokens:race", 10)
        if reservation is None:
            return False
        time.sleep(0.05)  # hold it while the others try
        limiter.settle(reservation, 3)
        return True

    with ThreadPoolExecutor(40) as pool:
        held = sum(pool.map(take, range(40)))
    assert 10 <= held < 40  # settled ones free room; never more held at once than fit
    assert spent(limiter, "100/hour", "tokens:race") == 3 * held


def test_a_settlement_in_a_later_window_does_not_refund_into_it(redis_prefix: str) -> None:
    """On Redis: a reservation whose window ended is not given back to the next window (which
    never held it); usage past the reservation is charged there."""
    limiter = RateLimiter(REDIS_URL, redis_prefix + "limits", timeout_s=2.0)
    _, kept = limiter.reserve("100/second", "tokens:w", 60)
    _, overrun = limiter.reserve("100/second", "tokens:w", 10)
    assert kept is not None and overrun is not None
    time.sleep(1.1)
    assert limiter.reserve("100/second", "tokens:w", 50)[1] is not None  # a new window
    limiter.settle(kept, 5)
    limiter.settle(overrun, 25)
    assert spent(limiter, "100/second", "tokens:w") == 65


def test_reservations_use_the_counter_the_limits_library_keeps(redis_prefix: str) -> None:
    """The budget's Redis key is the `limits` library's own for that window, with its expiry,
    so its window statistics and the reservation scripts agree."""
    limiter = RateLimiter(REDIS_URL, redis_prefix + "limits", timeout_s=2.0)
    limiter.reserve("500/hour", "tokens:k", 120)
    client = redis.Redis.from_url(REDIS_URL)
    (key,) = client.keys(f"*{redis_prefix}limits/tokens:k*")
    assert key.decode().startswith("LIMITS:LIMITER/") and int(client.get(key) or 0) == 120
    assert 3590 < client.ttl(key) <= 3600
    client.close()
    assert spent(limiter, "500/hour", "tokens:k") == 120


def worst_case(settings: Settings, question: str) -> int:
    """One plain answer's reservation, worked out here from its parts: the prompt template (and
    a token per message for the question's edges), the question, the context budget, and the
    completion's max_tokens."""
    with Runtime(settings) as runtime:
        messages = runtime.answerer.prompt_source().messages("", "")
        template = sum(runtime.token_counter([m["content"] for m in messages])) + len(messages)
        asked = sum(runtime.token_counter([question]))
    return template + asked + settings.generation.max_context_tokens + settings.llm.max_tokens


def served(settings: Settings, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings for a served home holding the security policy, with `sections` changed."""
    result = updated(settings.model_copy(update={"home": tmp_path / "served"}), **sections)
    with Runtime(result) as runtime:
        ingest(runtime, "kb", SECURITY)
    return result


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_five_concurrent_questions_cannot_together_spend_past_a_small_budget(
    settings: Settings, tmp_path: Path, store: str, redis_prefix: str
) -> None:
    """Five questions at once on a budget that holds two and a half worst cases: those that do
    not fit get 429 with Retry-After before any LLM work, and what the answered ones spent stays
    within the budget (checked before and charged after, all five passed and spent past it)."""
    cache: dict[str, Any] = {"enabled": False}
    if store == "redis":
        cache |= {"redis_url": REDIS_URL, "key_prefix": redis_prefix}
    small = served(
        settings,
        tmp_path,
        llm={"max_tokens": 32},
        generation={"max_context_tokens": 200},
        cache=cache,
    )
    amount = worst_case(small, QUESTION) * 5 // 2
    budget = f"{amount}/hour"
    budgeted = updated(small, server={"token_budget": budget})
    app = build_app(budgeted)
    with live_server(app) as base:

        def ask(_: int) -> httpx.Response:
            body = {"question": QUESTION, "collection": "kb"}
            return httpx.post(f"{base}/v1/query", json=body, timeout=300)

        with ThreadPoolExecutor(5) as pool:
            responses = list(pool.map(ask, range(5)))
        answered = [r.json() for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(answered) + len(refused) == 5, [r.text for r in responses]
        assert answered and refused
        for response in refused:
            assert int(response.headers["retry-after"]) > 0
            assert f"token budget of {budget} spent" in response.json()["error"]["message"]
        used = sum(a["usage"]["total_tokens"] for a in answered)
        assert used <= amount
        assert spent(app.state.ragline.limiter, budget) == used  # reservations all settled


def stream_tokens(base: str, route: str, question: str, count: int) -> dict[str, Any]:
    """Read a streamed answer until `count` tokens arrived, then close the connection: the
    `retrieval` event (for /v1/query), and when the cut happened."""
    if route == "query":
        path, body = "/v1/query", {"question": question, "collection": "kb", "stream": True}
    else:
        messages = [{"role": "user", "content": question}]
        path, body = "/v1/chat/completions", {"model": "kb", "messages": messages, "stream": True}
    seen, tokens, event = {}, 0, ""
    with httpx.stream("POST", base + path, json=body, timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: {"):
                data = json.loads(line.removeprefix("data: "))
                if event == "retrieval":
                    seen = data
                chunk = (data.get("choices") or [{}])[0].get("delta", {}).get("content")
                tokens += event == "token" or bool(chunk)
                if tokens == count:
                    break
    return {"retrieval": seen, "cut_at": time.monotonic()}


def wait_for(condition: Any, timeout_s: float) -> float:
    """Seconds until `condition()` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def probe_llm(llm_base_url: str) -> float:
    """Seconds a one-token completion takes on the (single-slot) llama.cpp server: it waits
    for any generation still running there."""
    started = time.monotonic()
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    httpx.post(f"{llm_base_url}/chat/completions", json=body, timeout=600).raise_for_status()
    return time.monotonic() - started


@pytest.mark.parametrize("route", ["query", "chat"])
def test_a_stream_cut_by_the_client_is_charged_and_stops_the_llm(
    settings: Settings, tmp_path: Path, llm_base_url: str, route: str
) -> None:
    """A client reads three tokens of a long answer (up to 1,500) and hangs up: within seconds
    the gateway closes its stream to llama.cpp (a proxy sees the connection close), the
    single-slot server is free for the next request instead of generating on, the budget is
    charged the prompt and the tokens generated (not nothing, not the whole reservation), and
    the trace says the client went away."""
    upstream = urlsplit(llm_base_url)
    proxy = TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 80))
    budget = "100000/hour"
    long = served(
        settings,
        tmp_path,
        llm={"base_url": f"http://127.0.0.1:{proxy.port}/v1", "max_tokens": 1500},
        cache={"enabled": False},
        server={"token_budget": budget},
    )
    reserved = worst_case(long, LONG_QUESTION)
    probe_llm(llm_base_url)  # warm
    app = build_app(long)
    try:
        with live_server(app) as base:
            limiter = app.state.ragline.limiter
            cut = stream_tokens(base, route, LONG_QUESTION, 3)
            closed_after = wait_for(lambda: proxy.open == 0, timeout_s=15)
            waited = probe_llm(llm_base_url)
            wait_for(lambda: 0 < spent(limiter, budget) < reserved, timeout_s=10)
            charged = spent(limiter, budget)
    finally:
        proxy.cut()
    assert waited < 30, f"llama.cpp was still busy {waited:.1f} s after the cut"
    print(f"upstream closed {closed_after:.2f} s after the cut; next request took {waited:.2f} s")
    with Runtime(long) as runtime:
        (summary,) = runtime.traces.recent(limit=1)
        spans = runtime.traces.spans(summary.trace_id)
    root = next(s for s in spans if s["parent_span_id"] is None)
    prompt = next(s for s in spans if s["name"] == "prompt")
    assert root["attributes"]["ragline.cancelled"] is True and root["status"] != "ERROR"
    prompt_tokens = prompt["attributes"]["ragline.prompt.tokens"]
    if route == "query":
        assert cut["retrieval"]["prompt_tokens"] == prompt_tokens
    assert prompt_tokens + 3 <= charged <= prompt_tokens + 100  # the few generated after the cut


def test_multi_step_modes_reserve_every_llm_call_they_may_make(settings: Settings) -> None:
    """decompose adds its plan call; summarize adds one call per collection of up to the whole
    context window, but never more than the steps' own budget allows (it is checked before
    each step, so the last may overrun it by one call)."""
    with Runtime(settings) as runtime:
        answer = question_cost(runtime, QUESTION, "rag", 1)
        plan = runtime.multistep._plan_messages(QUESTION)
        plan_tokens = sum(runtime.token_counter([m["content"] for m in plan]))
        window, steps = settings.llm.context_window, settings.multistep.max_total_tokens
        assert answer == worst_case(settings, QUESTION)
        assert question_cost(runtime, QUESTION, "rag", 3) == answer
        assert question_cost(runtime, QUESTION, "decompose", 1) == answer + plan_tokens + 200
        assert question_cost(runtime, QUESTION, "summarize", 2) == answer + 2 * window
        assert question_cost(runtime, QUESTION, "summarize", 3) == answer + steps - 1 + window


def test_a_question_that_could_never_fit_the_budget_is_refused_with_a_reason(
    settings: Settings,
) -> None:
    """A summary over three collections may spend more than a whole 5,000-token window: a 422
    that says so (retrying later would not help), before any retrieval or LLM call."""
    small = updated(settings, server={"token_budget": "5000/hour"})
    body = {
        "question": QUESTION,
        "collections": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        "mode": "summarize",
    }
    with TestClient(build_app(small)) as client:
        response = client.post("/v1/query", json=body)
    assert response.status_code == 422
    assert "more than the whole token budget of 5000/hour" in response.json()["error"]["message"]
