"""Logs: text for a person at a terminal, JSON lines for an aggregator, and the request context
that ties every record of a request to its trace.

Each HTTP request gets a `RequestContext` (the gateway's `RequestLog` middleware makes it). It
is a mutable holder in a contextvar: AnyIO's threadpool copies contextvars into the threads
that run a request's work, so a record logged there sees the same holder; what is learnt there
(the caller's key id, the trace once the service started it) is set on the holder with `bind`,
never with `ContextVar.set`, whose value would stay in the thread and miss the access log line.

A JSON record is one line: `ts` (RFC 3339, UTC), `level`, `logger`, `message`, then the
request's `request_id`, `trace_id`, `span_id`, `key_id` and `collection` when known, then the
record's own fields (`log.info(message, extra={FIELDS: {...}})`). The trace and span ids are the
current OpenTelemetry span's when there is one (retrieval, ingestion), else the request's root
span's. Never an API key, a question or a document's text: only ids go into the context.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from ragline.config import LogSettings

FIELDS = "fields"  # the `extra` key of a record's own fields
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# whose INFO records are one line per HTTP call made (the LLM, Langfuse): DEBUG only
CHATTY = ("httpx", "httpcore")


@dataclass
class RequestContext:
    """What the log records of one HTTP request carry besides their own fields."""

    request_id: str
    trace_id: str | None = None
    span_id: str | None = None
    key_id: str | None = None
    collection: str | None = None


_request: ContextVar[RequestContext | None] = ContextVar("ragline_request", default=None)


def begin_request(context: RequestContext) -> Token[RequestContext | None]:
    return _request.set(context)


def end_request(token: Token[RequestContext | None]) -> None:
    _request.reset(token)


def bind(*, key_id: str | None = None, collection: str | None = None) -> None:
    """Record the caller's key id or the collection on the current request (outside a request,
    nothing)."""
    context = _request.get()
    if context is None:
        return
    if key_id is not None:
        context.key_id = key_id
    if collection is not None:
        context.collection = collection


def bind_trace(span: trace.Span) -> None:
    """Record a request's root span, so records logged outside any span (and the access log
    line) name the request's trace. The first root span of a request wins."""
    context = _request.get()
    span_context = span.get_span_context()
    if context is None or context.trace_id is not None or not span_context.is_valid:
        return
    context.trace_id = format(span_context.trace_id, "032x")
    context.span_id = format(span_context.span_id, "016x")


def context_fields() -> dict[str, str]:
    """The current request's fields and the current span's ids (those known only)."""
    context = _request.get()
    fields = {k: v for k, v in asdict(context).items() if v is not None} if context else {}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(context_fields())  # formatted in the logging thread: its context
        entry.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """ragline's text format, unchanged; a record's own fields follow as `key=value`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = getattr(record, FIELDS, None) or {}
        return " ".join([line, *(f"{k}={v}" for k, v in fields.items() if v is not None)])


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """ragline's handler: writes to the stream it was given, or to whatever `sys.stderr` is
    when a record is written (as `logging.lastResort` does), so a swapped stderr is followed."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO | None) -> None:  # StreamHandler.__init__ assigns it
        pass


def wants_json(format: str, stream: TextIO) -> bool:
    """`auto` is JSON unless `stream` is a terminal: a person reads a terminal, an aggregator
    reads everything else (a container's output, a systemd journal, a pipe)."""
    if format != "auto":
        return format == "json"
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # a closed or a bare stream
        return True


def level_of(settings: LogSettings, default: str, verbose: bool = False) -> int:
    """The root level: the setting, else the command's default; `verbose` means at least INFO."""
    level = logging.getLevelName(settings.level or default)
    return min(level, logging.INFO) if verbose else int(level)


def configure(settings: LogSettings, level: int, stream: TextIO | None = None) -> logging.Handler:
    """Log records at `level` and above to `stream` (default: stderr) in the configured format.

    Replaces the handler a previous call installed and leaves any other handler alone.
    uvicorn's loggers propagate here when serve passes it `log_config=None`."""
    handler = _Handler(stream)
    json_lines = wants_json(settings.format, stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(
            logging.NOTSET if level <= logging.DEBUG else logging.WARNING
        )
    return handler


def is_json() -> bool:
    """Whether ragline's handler writes JSON lines (then status lines go to the log too)."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, _Handler)]
    return bool(handlers) and isinstance(handlers[-1].formatter, JsonFormatter)
