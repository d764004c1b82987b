"""Span processors: tail sampling (with trace-level attributes on every span), bounded batching.

request thread │ background threads
spans ─> TailSampler ─queue─> assemble, decide ─(kept traces)─> BoundedBatch(local store)
                                                             └─> BoundedBatch(OTLP: Langfuse, …)

Everything but one queue append happens off the request thread (docs/tracing.md, overhead).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from ragline.tracing import attributes as attr

log = logging.getLogger(__name__)


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


def is_root(span: ReadableSpan) -> bool:
    """The local root of a trace: no parent, or a parent in another process (traceparent)."""
    return span.parent is None or span.parent.is_remote


def with_trace_level(spans: list[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    """Copies the root's trace-level attributes (session, user, trace name, environment…) to
    every span of the trace, as Langfuse v4 expects for per-observation filtering."""
    root_attributes = root.attributes or {}
    shared = {k: root_attributes[k] for k in attr.TRACE_LEVEL if k in root_attributes}
    if not shared:
        return spans
    return [
        span
        if span is root
        else ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes={**shared, **(span.attributes or {})},
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        for span in spans
    ]


@dataclass
class _Held:
    spans: list[ReadableSpan] = field(default_factory=list)
    dropped_at: float | None = None
    keep: bool = False  # negative feedback arrived before the root span ended


@dataclass
class _Keep:
    trace_id: int
    export: bool = True  # False: only ask whether the trace is held or was seen
    done: threading.Event = field(default_factory=threading.Event)
    found: bool = False  # a dropped trace, exported now
    seen: bool = False  # open, dropped, or kept within the feedback window


class TailSampler(SpanProcessor):
    """Assembles traces and samples them, off the request thread.

    `on_end` only appends the span to an in-process queue (bounded; when full the span is
    dropped and counted). A background thread groups spans by trace and decides when the root
    ends: errors, empty retrievals and truncated answers are always kept, other traces at
    `ratio`. Kept traces get the trace-level attributes and go to the `downstream` processors.
    Dropped traces stay in memory for `feedback_window_s` (bounded) so that negative feedback
    can still keep them (`keep`); the ids of kept ones are remembered as long (`seen`), so
    feedback on a trace the exporters have not written yet finds it.
    """

    def __init__(
        self,
        downstream: Sequence[SpanProcessor],
        ratio: float,
        feedback_window_s: float = 600.0,
        max_held: int = 2_000,
        max_queue: int = 8_192,
        interval_s: float = 0.1,
    ) -> None:
        self.downstream = list(downstream)
        self.interval_s = interval_s
        self.ratio = ratio
        self.feedback_window_s = feedback_window_s
        self.max_held = max_held
        self.max_queue = max_queue
        self.kept = 0
        self.sampled_out = 0
        self.dropped = 0
        self._inbox: queue.SimpleQueue[ReadableSpan | _Keep | threading.Event] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._open: OrderedDict[int, _Held] = OrderedDict()
        self._dropped: OrderedDict[int, _Held] = OrderedDict()
        self._kept: OrderedDict[int, float] = OrderedDict()  # trace id -> when it was forwarded
        self._thread = threading.Thread(target=self._run, name="ragline-trace-sampler", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        # the request thread's only cost: no lock, no copy (SimpleQueue.put is one C call)
        if self._inbox.qsize() >= self.max_queue:
            self.dropped += 1
            return
        self._inbox.put(span)

    def keep(self, trace_id: int, timeout_s: float = 5.0) -> bool:
        """Export a trace that sampling dropped (negative feedback), or mark one still being
        assembled to be kept. False if it is gone (or was kept anyway). Travels through the
        queue, so a trace whose spans are still queued is found too."""
        request = _Keep(trace_id)
        self._inbox.put(request)
        self._wake.set()
        request.done.wait(timeout_s)
        return request.found

    def seen(self, trace_id: int, timeout_s: float = 5.0) -> bool:
        """Whether this trace is being assembled, was sampled out, or was kept, within the
        feedback window (bounded by `max_held` each). Like `keep`, travels through the
        queue, so spans still queued count."""
        request = _Keep(trace_id, export=False)
        self._inbox.put(request)
        self._wake.set()
        request.done.wait(timeout_s)
        return request.seen

    def settle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every span queued so far has been assembled and handed downstream."""
        marker = threading.Event()
        self._inbox.put(marker)
        self._wake.set()
        return marker.wait(timeout_s)

    def _run(self) -> None:
        # woken by a timer, not by each span: a span costs the request thread no thread switch
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            while not self._inbox.empty():
                self._handle(self._inbox.get_nowait())

    def _handle(self, item: ReadableSpan | _Keep | threading.Event) -> None:
        try:
            if isinstance(item, threading.Event):
                item.set()
            elif isinstance(item, _Keep):
                self._lookup(item)
            else:
                self._assemble(item)
        except Exception:  # a bad span must never stop the thread
            log.exception("trace assembly failed")

    def _lookup(self, request: _Keep) -> None:
        trace_id = request.trace_id
        try:
            self._expire()
            request.seen = (
                trace_id in self._open or trace_id in self._dropped or trace_id in self._kept
            )
            if request.export and trace_id in self._dropped:
                self._forward(self._dropped.pop(trace_id).spans, trace_id)
                request.found = True
            elif request.export and trace_id in self._open:  # kept whatever the ratio says
                self._open[trace_id].keep = request.found = True
        finally:
            request.done.set()

    def _assemble(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        held = self._open.setdefault(trace_id, _Held())
        held.spans.append(span)
        if not is_root(span):
            self._evict(self._open)
            return
        del self._open[trace_id]
        held.spans = with_trace_level(held.spans, span)
        reason = (
            keep_reason(held.spans)
            or ("feedback" if held.keep else None)
            or ("sampled" if sampled_by_ratio(trace_id, self.ratio) else None)
        )
        if reason is None:
            held.dropped_at = time.monotonic()
            self._dropped[trace_id] = held
            self.sampled_out += 1
            self._expire()
            return
        self.kept += 1
        self._forward(held.spans, trace_id)

    def _forward(self, spans: list[ReadableSpan], trace_id: int) -> None:
        self._kept[trace_id] = time.monotonic()
        self._kept.move_to_end(trace_id)
        while len(self._kept) > self.max_held:
            self._kept.popitem(last=False)
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
        while self._kept and next(iter(self._kept.values())) < cutoff:
            self._kept.popitem(last=False)

    def shutdown(self) -> None:
        self.settle()
        for processor in self.downstream:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        settled = self.settle(timeout_millis / 1000)
        return settled and all(p.force_flush(timeout_millis) for p in self.downstream)


@dataclass
class ExportStats:
    exported: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_export_at: float | None = None


class BoundedBatch(SpanProcessor):
    """Exports spans in batches from a background thread that wakes every `interval_s` (or on
    a flush). `on_end` never blocks: when the bounded queue is full the span is dropped and
    counted (telemetry must not slow requests)."""

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
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.stats = ExportStats()
        self._queue: queue.SimpleQueue[ReadableSpan | threading.Event] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"ragline-export-{name}", daemon=True
        )
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        if self._queue.qsize() >= self.max_queue:
            self.stats.dropped += 1
            return
        self._queue.put(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything queued so far (a marker travels behind it through the queue)."""
        done = threading.Event()
        self._queue.put(done)
        self._wake.set()
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.force_flush(timeout_millis=10_000)
        self.exporter.shutdown()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            batch: list[ReadableSpan] = []
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, threading.Event):
                    if batch:
                        self._export(batch)
                        batch = []
                    item.set()
                    continue
                batch.append(item)
                if len(batch) >= self.batch_size:
                    self._export(batch)
                    batch = []
            if batch:
                self._export(batch)

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
