"""`Tracing`: our own TracerProvider (the host application's global provider is left alone),
its processors and exporters, and the content-capture policy."""

from __future__ import annotations

import base64
import importlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from ragline import __version__
from ragline.config import LangfuseSettings, Settings, TracingSettings
from ragline.errors import ConfigurationError, RaglineError
from ragline.tracing import attributes as attr
from ragline.tracing.processors import BoundedBatch, TailSampler

log = logging.getLogger(__name__)
Mask = Callable[[str], str]


def langfuse_headers(public_key: str, secret_key: str) -> dict[str, str]:
    """Langfuse's OTLP route: Basic auth (project keys) and ingestion version 4 (no 10-min lag)."""
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
    return {"Authorization": f"Basic {token}", "x-langfuse-ingestion-version": "4"}


def langfuse_client(
    settings: LangfuseSettings, timeout_s: float, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """An HTTP client for Langfuse's public API (scores, datasets, prompts): Basic auth."""
    assert settings.host and settings.public_key and settings.secret_key
    return httpx.Client(
        base_url=settings.host.rstrip("/"),
        headers=langfuse_headers(settings.public_key, settings.secret_key),
        timeout=timeout_s,
        transport=transport,
    )


def load_mask(path: str | None) -> Mask | None:
    """Import `module:function` (a str → str PII mask)."""
    if not path:
        return None
    module, _, name = path.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(
            f"tracing.mask={path!r} is not an importable module:function"
        ) from exc
    if not callable(function):
        raise ConfigurationError(f"tracing.mask={path!r} is not callable")
    return function  # type: ignore[no-any-return]


class Tracing:
    """Spans for one ragline process. With tracing off, the tracer is a no-op."""

    def __init__(
        self,
        settings: Settings,
        local_exporter: Any | None = None,
        extra: Sequence[SpanProcessor] = (),
    ) -> None:
        self.settings = settings.tracing
        self.capture = self.settings.capture_content
        self.mask = load_mask(self.settings.mask)
        self.batches: list[BoundedBatch] = []
        self.sampler: TailSampler | None = None
        self.provider: TracerProvider | None = None
        if not self.settings.enabled:
            self.tracer: Tracer = trace.NoOpTracer()
            return
        exporters: list[tuple[str, Any]] = []
        if local_exporter is not None:
            exporters.append(("local", local_exporter))
        exporters.extend(self._otlp_exporters(settings))
        self.batches = [
            BoundedBatch(e, name, max_queue=self.settings.queue_size) for name, e in exporters
        ]
        self.sampler = TailSampler(
            [*self.batches, *extra], self.settings.sample_rate, self.settings.feedback_window_s
        )
        resource = Resource.create(
            {
                attr.PROJECT_NAME: self.settings.project,
                "service.name": "ragline",
                "service.version": __version__,
                "deployment.environment.name": self.settings.environment,
            }
        )
        # every span is recorded: sampling is the tail sampler's decision, once a trace is whole
        # (the SDK's default parent-based head sampler only cost time on every span)
        self.provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        self.provider.add_span_processor(self.sampler)
        self.tracer = self.provider.get_tracer("ragline", __version__)

    def _otlp_exporters(self, settings: Settings) -> list[tuple[str, Any]]:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        timeout = self.settings.export_timeout_s
        # the OTLP exporter logs every retry; BoundedBatch counts and reports failures instead
        logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.CRITICAL)
        exporters: list[tuple[str, Any]] = []
        langfuse = settings.langfuse
        if langfuse.configured:
            assert langfuse.host and langfuse.public_key and langfuse.secret_key
            endpoint = f"{langfuse.host.rstrip('/')}/api/public/otel/v1/traces"
            headers = langfuse_headers(langfuse.public_key, langfuse.secret_key)
            exporters.append(
                (
                    "langfuse",
                    OTLPSpanExporter(
                        endpoint=endpoint,
                        headers=headers,
                        timeout=timeout,
                        compression=Compression.Gzip,
                    ),
                )
            )
        if self.settings.otlp_endpoint:
            exporters.append(
                (
                    "otlp",
                    OTLPSpanExporter(
                        endpoint=self.settings.otlp_endpoint,
                        headers=self.settings.otlp_headers,
                        timeout=timeout,
                    ),
                )
            )
        return exporters

    @classmethod
    def disabled(cls) -> Tracing:
        """A no-op tracing (components built without one, e.g. in unit tests)."""
        return cls(Settings(tracing=TracingSettings(enabled=False)))

    # content ---------------------------------------------------------------------------------

    def content(self, value: str) -> str | None:
        """User content as it may be recorded: None when capture is off, masked when a mask is set."""
        if not self.capture:
            return None
        return self.mask(value) if self.mask else value

    def set_content(self, span: Span, key: str, value: str | None) -> None:
        if value is not None and (recorded := self.content(value)) is not None:
            span.set_attribute(key, recorded)

    def set_json(self, span: Span, key: str, value: Any) -> None:
        """A JSON value holding content (e.g. retrieved documents as `output.value`)."""
        self.set_content(span, key, json.dumps(value, default=str))

    # lifecycle -------------------------------------------------------------------------------

    def keep(self, trace_id: str) -> bool:
        """Export a trace that sampling dropped (it received negative feedback)."""
        return self.sampler.keep(int(trace_id, 16)) if self.sampler else False

    def seen(self, trace_id: str) -> bool:
        """Whether the tail sampler holds this trace or saw it within the feedback window."""
        return self.sampler.seen(int(trace_id, 16)) if self.sampler else False

    def health(self) -> dict[str, Any]:
        return {
            "enabled": self.settings.enabled,
            "kept": self.sampler.kept if self.sampler else 0,
            "sampled_out": self.sampler.sampled_out if self.sampler else 0,
            "dropped": self.sampler.dropped if self.sampler else 0,
            "exporters": {b.name: vars(b.stats).copy() for b in self.batches},
        }

    def dropped(self) -> dict[str, int]:
        """Spans dropped by a full queue: the sampler's and each exporter's."""
        counts = {b.name: b.stats.dropped for b in self.batches}
        if self.sampler is not None:
            counts["sampler"] = self.sampler.dropped
        return counts

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000)) if self.provider else True

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def trace_id_of(span: Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def record_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))


@contextmanager
def errors_recorded(span: Span) -> Iterator[Span]:
    """Mark the span as failed (and re-raise) when the block raises."""
    try:
        yield span
    except GeneratorExit:  # the consumer stopped reading (a client went away): not a failure
        span.set_attribute(attr.CANCELLED, True)
        raise
    except BaseException as exc:
        record_error(span, exc)
        if isinstance(exc, RaglineError) and exc.trace_id is None:
            exc.trace_id = trace_id_of(span)  # an error response names the failed trace
        raise


def kind(value: str, langfuse_type: str) -> dict[str, str]:
    """Both the OpenInference kind and the Langfuse observation type of a span."""
    return {attr.SPAN_KIND: value, attr.LANGFUSE_OBSERVATION_TYPE: langfuse_type}
