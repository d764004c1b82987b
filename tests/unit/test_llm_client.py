"""The OpenAI-compatible streaming client: parsing, retries, errors.

The server side is httpx's MockTransport replaying the wire format recorded from the real
llama.cpp server (tests/integration checks the real server end to end).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from ragline.config import LLMSettings
from ragline.errors import LLMError, LLMTimeoutError
from ragline.generation.llm import ChatClient, Completion, Delta


def sse(*events: dict[str, object]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def chunk(content: str | None = None, finish: str | None = None) -> dict[str, object]:
    delta = {"content": content} if content is not None else {}
    return {
        "model": "m",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def client(handler: httpx.MockTransport, retries: int = 2) -> ChatClient:
    return ChatClient(LLMSettings(max_retries=retries), "http://llm/v1", transport=handler)


def test_stream_yields_deltas_then_completion_with_estimated_usage() -> None:
    """llama.cpp sends no usage when streaming: completion tokens are counted from deltas."""
    body = sse(chunk(None), chunk("Par"), chunk("is"), chunk(None, "stop"))
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    events = list(client(transport).stream([{"role": "user", "content": "q"}], 10, 0.0))
    assert [e.text for e in events if isinstance(e, Delta)] == ["Par", "is"]
    completion = events[-1]
    assert isinstance(completion, Completion)
    assert completion.finish_reason == "stop"
    assert completion.usage.completion_tokens == 2 and completion.usage.estimated
    assert completion.time_to_first_token_ms is not None


def test_reported_usage_is_used_as_is() -> None:
    """Servers that honour stream_options.include_usage report exact counts."""
    usage = {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
    body = sse(chunk("a", "length"), {"model": "m", "choices": [], "usage": usage})
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    completion = list(client(transport).stream([], 1, 0.0))[-1]
    assert isinstance(completion, Completion)
    assert completion.usage.prompt_tokens == 11 and not completion.usage.estimated
    assert completion.finish_reason == "length"


def test_503_is_retried_then_succeeds() -> None:
    """A 5xx before any token is retried with backoff."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(503)
        return httpx.Response(200, content=sse(chunk("ok", "stop")))

    events = list(client(httpx.MockTransport(handler)).stream([], 5, 0.0))
    assert len(calls) == 2
    assert isinstance(events[-1], Completion) and events[-1].attempts == 2


def test_retries_are_bounded() -> None:
    """After max_retries the error is raised with the server's address."""
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    with pytest.raises(LLMError, match="http://llm/v1"):
        list(client(transport, retries=1).stream([], 5, 0.0))


def test_client_error_is_not_retried_and_explains() -> None:
    """A 400 means the request is wrong: no retry, the server's message is kept."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, text="context length exceeded")

    with pytest.raises(LLMError, match="context length exceeded"):
        list(client(httpx.MockTransport(handler)).stream([], 5, 0.0))
    assert len(calls) == 1


def test_malformed_stream_is_an_llm_error() -> None:
    body = b"data: {not json\n\n"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    with pytest.raises(LLMError, match="malformed"):
        list(client(transport).stream([], 5, 0.0))


def test_a_stream_cut_off_without_finish_reason_is_an_error_not_a_short_answer() -> None:
    """Before any text it is retried; after text it fails loudly (never a silent truncation)."""
    calls = []

    def empty_then_ok(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(200, content=sse(chunk(None)))
        return httpx.Response(200, content=sse(chunk("ok", "stop")))

    events = list(client(httpx.MockTransport(empty_then_ok)).stream([], 5, 0.0))
    assert len(calls) == 2 and isinstance(events[-1], Completion)

    cut = httpx.MockTransport(lambda r: httpx.Response(200, content=sse(chunk("Par"), chunk("is"))))
    with pytest.raises(LLMError, match="finish_reason"):
        list(client(cut).stream([], 5, 0.0))


def test_response_format_is_sent_as_given() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=sse(chunk("{}", "stop")))

    fmt = {"type": "json_object", "schema": {"type": "object"}}
    list(client(httpx.MockTransport(handler)).stream([], 5, 0.0, fmt))
    list(client(httpx.MockTransport(handler)).stream([], 5, 0.0))
    assert seen[0]["response_format"] == fmt and "response_format" not in seen[1]


@pytest.mark.parametrize(
    "event",
    [
        {"choices": "not a list"},
        {"choices": [["a list, not an object"]]},
        {"choices": [{"delta": "text"}]},
        {"choices": [{"delta": {"content": 42}}]},
        {"choices": [{"delta": {}, "finish_reason": {"why": "stop"}}]},
    ],
)
def test_an_event_of_the_wrong_shape_is_an_llm_error_not_a_crash(event: dict[str, object]) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=sse(event)))
    with pytest.raises(LLMError, match="malformed stream event"):
        list(client(transport).stream([], 5, 0.0))


def test_a_server_that_stops_answering_is_a_timeout() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    with pytest.raises(LLMTimeoutError, match="timed out"):
        list(client(httpx.MockTransport(hang)).stream([], 5, 0.0))


def test_a_server_that_drips_tokens_hits_the_answer_deadline() -> None:
    """Each read arrives in time (no read timeout), but the answer as a whole takes longer than
    answer_timeout_s: it ends with LLMTimeoutError instead of holding the request for ever."""

    def drip() -> Iterator[bytes]:
        for n in range(100):
            time.sleep(0.05)
            yield f"data: {json.dumps(chunk(f't{n}'))}\n\n".encode()

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=drip()))
    slow = ChatClient(LLMSettings(answer_timeout_s=0.3), "http://llm/v1", transport=transport)
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError, match=r"within 0\.3 s"):
        list(slow.stream([], 5, 0.0))
    assert time.monotonic() - started < 2
