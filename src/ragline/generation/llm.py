"""OpenAI-compatible chat client (vLLM, TGI, Ollama, llama.cpp, OpenAI), streaming over httpx.

Retries with exponential backoff on connection errors, 429 and 5xx, but only before the first
token: once text has reached the caller, a failure ends the stream with an error instead of
repeating text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from ragline import jsonbody
from ragline.config import LLMSettings
from ragline.domain import Usage
from ragline.errors import LLMError, LLMTimeoutError

log = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Delta:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True)
class Completion:
    """The end of a stream: why it stopped and what it cost."""

    finish_reason: str | None
    usage: Usage
    model: str
    time_to_first_token_ms: float | None
    attempts: int


def structured_output(dialect: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `response_format` that asks a server for JSON matching `schema`, in its dialect:
    `json_schema` (OpenAI, vLLM, Ollama, llama.cpp's own server), `json_object` with a
    `schema` (llama-cpp-python compiles it to a grammar), or `none` (no structured output)."""
    if dialect == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if dialect == "json_object":
        return {"type": "json_object", "schema": schema}
    if dialect == "none":
        return None
    raise ValueError(f"unknown structured-output dialect {dialect!r}")


class ChatClient:
    """Streams chat completions from one OpenAI-compatible server."""

    def __init__(
        self, settings: LLMSettings, base_url: str, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    @property
    def base_url(self) -> str:
        return str(self._client.base_url).rstrip("/")

    def close(self) -> None:
        self._client.close()

    def stream(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        response_format: dict[str, Any] | None = None,
    ) -> Iterator[Delta | Completion]:
        """Yield `Delta`s as text arrives, then one `Completion`. `response_format` is passed
        through as is (structured output: its dialect differs between servers)."""
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if response_format is not None:
            body["response_format"] = response_format
        for attempt in range(1, self.settings.max_retries + 2):
            started = time.perf_counter()
            emitted = False
            try:
                for event in self._stream_once(body, started, attempt):
                    emitted = emitted or isinstance(event, Delta)
                    yield event
                return
            except _Retryable as exc:
                if emitted or attempt > self.settings.max_retries:
                    raise LLMError(f"LLM server {self.base_url} failed: {exc}") from exc
                delay = min(0.5 * 2 ** (attempt - 1), 8.0)
                log.warning("llm retry attempt=%d delay_s=%.1f error=%s", attempt, delay, exc)
                time.sleep(delay)

    def _stream_once(
        self, body: dict[str, Any], started: float, attempt: int
    ) -> Iterator[Delta | Completion]:
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        model = self.settings.model
        first_token_ms: float | None = None
        deltas = 0
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code in RETRYABLE_STATUS:
                    raise _Retryable(f"HTTP {response.status_code}")
                if response.status_code >= 400:
                    response.read()
                    raise LLMError(
                        f"LLM server {self.base_url} refused the request: HTTP {response.status_code} "
                        f"{response.text[:300]}"
                    )
                for payload in _sse_payloads(response.iter_lines()):
                    if time.perf_counter() - started > self.settings.answer_timeout_s:
                        # the read timeout is per read: a server that drips tokens slowly
                        # would never trip it, so the whole answer has a deadline too
                        raise LLMTimeoutError(
                            f"LLM server {self.base_url} did not finish the answer within "
                            f"{self.settings.answer_timeout_s:g} s"
                        )
                    model = payload.get("model") or model
                    usage = (
                        payload.get("usage") if isinstance(payload.get("usage"), dict) else usage
                    )
                    for text, finish in _choices(payload):
                        if text:
                            if first_token_ms is None:
                                first_token_ms = (time.perf_counter() - started) * 1000
                            deltas += 1
                            yield Delta(text)
                        finish_reason = finish or finish_reason
        except httpx.TimeoutException as exc:
            raise LLMTimeoutError(f"LLM server {self.base_url} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise _Retryable(str(exc) or type(exc).__name__) from exc
        if finish_reason is None:  # cut off: e.g. a server that drops a stream for another
            raise _Retryable("the stream ended without a finish_reason")
        yield Completion(finish_reason, _usage(usage, deltas), model, first_token_ms, attempt)


class _Retryable(Exception):
    pass


def _sse_payloads(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            payload = jsonbody.loads(data)
        except ValueError as exc:
            raise LLMError(f"malformed stream event from LLM server: {data[:200]!r}") from exc
        if isinstance(payload, dict) and "error" in payload:
            raise LLMError(f"LLM server reported an error: {payload['error']}")
        if isinstance(payload, dict):
            yield payload


def _choices(payload: dict[str, Any]) -> Iterator[tuple[str | None, str | None]]:
    """(text delta, finish reason) of each choice of a stream event; LLMError (a 502, not a
    crash) when the event does not have the OpenAI shape."""
    try:
        for choice in payload.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            finish = choice.get("finish_reason")
            if not isinstance(text, str | None) or not isinstance(finish, str | None):
                raise TypeError("content and finish_reason must be strings")
            yield text, finish
    except (AttributeError, TypeError) as exc:
        raise LLMError(
            f"malformed stream event from LLM server ({exc}): {json.dumps(payload)[:200]}"
        ) from exc


def _usage(reported: dict[str, Any] | None, deltas: int) -> Usage:
    if reported:
        return Usage(
            reported.get("prompt_tokens"),
            reported.get("completion_tokens"),
            reported.get("total_tokens"),
        )
    # llama.cpp's server streams one token per delta and reports no usage while streaming.
    return Usage(None, deltas, None, estimated=True)
