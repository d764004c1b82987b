"""Span processors: trace-level attributes on every span, tail sampling, bounded batching.

spans ─> TraceAttributes ─> TailSampler ─(kept traces)─> BoundedBatch(local store)
                                                     └─> BoundedBatch(OTLP: Langfuse, …)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from ragline.tracing import attributes as attr

log = logging.getLogger(__name__)


class TraceAttributes(SpanProcessor):
    """Copies the root's trace-level attributes (session, user, trace name, environment…) to
    every span of the trace, as Langfuse v4 expects for per-observation filtering."""

    def __init__(self, max_traces: int = 10_000) -> None:
        self._by_trace: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_traces

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        trace_id = span.context.trace_id
        with self._lock:
            if span.parent is None:
                values = {
                    k: v
                    for k in attr.TRACE_LEVEL
                    if (v := (span.attributes or {}).get(k)) is not None
                }
                self._by_trace[trace_id] = values
                while len(self._by_trace) > self._max:
                    self._by_trace.popitem(last=False)
                return
            values = self._by_trace.get(trace_id, {})
        span.set_attributes(values)

    def on_end(self, span: ReadableSpan) -> None:
        if span.parent is None:
            with self._lock:
                self._by_trace.pop(span.context.trace_id, None)


def keep_reason(spans: Sequence[ReadableSpan]) -> str | None:
    """Why a trace must be kept whatever the sample rate: an error, an empty retrieval, a
    truncated answer. None when it is an ordinary trace."""
    for span in spans:
        if span.status.status_code is StatusCode.ERROR:
            return "error"
        attributes = span.attributes or {}
        if attributes.get(attr.FORCE_KEEP) is True:
            return "forced"
        if attributes.get(attr.EMPTY_RETRIEVAL) is True:
            return "empty_retrieval"
        if attributes.get(attr.FINISH_REASON) == "length":
            return "truncated"
    return None


def sampled_by_ratio(trace_id: int, ratio: float) -> bool:
    """Deterministic by trace id, like OpenTelemetry's TraceIdRatioBased."""
    return (trace_id & 0xFFFF_FFFF_FFFF_FFFF) < ratio * 2**64


@dataclass
class _Held:
    spans: list[ReadableSpan] = field(default_factory=list)
    dropped_at: float | None = None


class TailSampler(SpanProcessor):
    """Decides per trace when its root span ends: keep errors, empty retrievals and truncated
    answers always, other traces at `ratio`. Dropped traces stay in memory for
    `feedback_window_s` (bounded) so that negative feedback can still keep them (`keep`)."""

    def __init__(
        self,
        downstream: Sequence[SpanProcessor],
        ratio: float,
        feedback_window_s: float = 600.0,
        max_held: int = 2_000,
    ) -> None:
        self.downstream = list(downstream)
        self.ratio = ratio
        self.feedback_window_s = feedback_window_s
        self.max_held = max_held
        self._open: OrderedDict[int, _Held] = OrderedDict()
        self._dropped: OrderedDict[int, _Held] = OrderedDict()
        self._lock = threading.Lock()
        self.kept = 0
        self.sampled_out = 0

    def on_end(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        with self._lock:
            held = self._open.setdefault(trace_id, _Held())
            held.spans.append(span)
            if span.parent is not None:
                self._evict(self._open)
                return
            del self._open[trace_id]
            reason = keep_reason(held.spans) or (
                "sampled" if sampled_by_ratio(trace_id, self.ratio) else None
            )
            if reason is None:
                held.dropped_at = time.monotonic()
                self._dropped[trace_id] = held
                self.sampled_out += 1
                self._expire()
                return
            self.kept += 1
        self._forward(held.spans)

    def keep(self, trace_id: int) -> bool:
        """Export a trace that sampling dropped (negative feedback). False if it is gone."""
        with self._lock:
            held = self._dropped.pop(trace_id, None)
        if held is None:
            return False
        self._forward(held.spans)
        return True

    def _forward(self, spans: list[ReadableSpan]) -> None:
        for span in spans:
            for processor in self.downstream:
                processor.on_end(span)

    def _evict(self, table: OrderedDict[int, _Held]) -> None:
        while len(table) > self.max_held:
            table.popitem(last=False)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.feedback_window_s
        while self._dropped:
            oldest = next(iter(self._dropped.values()))
            if (oldest.dropped_at or 0) >= cutoff and len(self._dropped) <= self.max_held:
                break
            self._dropped.popitem(last=False)

    def shutdown(self) -> None:
        for processor in self.downstream:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.downstream)


@dataclass
class ExportStats:
    exported: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_export_at: float | None = None


class BoundedBatch(SpanProcessor):
    """Exports spans in batches from a background thread. `on_end` never blocks: when the
    bounded queue is full the span is dropped and counted (telemetry must not slow requests)."""

    def __init__(
        self,
        exporter: SpanExporter,
        name: str,
        max_queue: int = 2048,
        batch_size: int = 64,
        interval_s: float = 0.5,
    ) -> None:
        self.exporter = exporter
        self.name = name
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.stats = ExportStats()
        self._queue: queue.Queue[ReadableSpan | threading.Event] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(
            target=self._run, name=f"ragline-export-{name}", daemon=True
        )
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._queue.put_nowait(span)
        except queue.Full:
            self.stats.dropped += 1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything queued so far (a marker travels behind it through the queue)."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout_millis / 1000)
        except queue.Full:
            return False
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.force_flush(timeout_millis=10_000)
        self.exporter.shutdown()

    def _run(self) -> None:
        while True:
            batch: list[ReadableSpan] = []
            marker: threading.Event | None = None
            deadline = time.monotonic() + self.interval_s
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(item, threading.Event):
                    marker = item
                    break
                batch.append(item)
            if batch:
                self._export(batch)
            if marker is not None:
                marker.set()

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # an exporter must never kill the export thread
            result = SpanExportResult.FAILURE
            self.stats.last_error = str(exc)[:300]
        if result is SpanExportResult.SUCCESS:
            self.stats.exported += len(batch)
            self.stats.last_export_at = time.time()
        else:
            self.stats.failed += len(batch)
            if self.stats.failed == len(batch) or self.stats.failed % (100 * self.batch_size) < len(
                batch
            ):
                log.warning(
                    "span export failing exporter=%s failed_spans=%d", self.name, self.stats.failed
                )
