"""TailSampler: traces assembled off the request thread, trace-level keys on every span, tail
decisions, bounded queue."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from ragline.tracing import attributes as attr
from ragline.tracing.processors import TailSampler


def pipeline(
    ratio: float, **options: float
) -> tuple[TracerProvider, TailSampler, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    sampler = TailSampler([SimpleSpanProcessor(memory)], ratio, **options)  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(sampler)
    return provider, sampler, memory


def one_trace(provider: TracerProvider, error: bool = False) -> str:
    tracer = provider.get_tracer("test")
    root = tracer.start_span(attr.QUERY, attributes={attr.SESSION_ID: "s1", attr.USER_ID: "u1"})
    with (
        tracer.start_as_current_span(attr.RETRIEVE, set_span_in_context(root)),
        tracer.start_as_current_span(attr.RETRIEVE_DENSE) as leg,
    ):
        if error:
            leg.set_status(Status(StatusCode.ERROR, "boom"))
    root.end()
    return format(root.get_span_context().trace_id, "032x")


def spans_of(memory: InMemorySpanExporter, trace_id: str) -> dict[str, dict[str, object]]:
    return {
        s.name: dict(s.attributes or {})
        for s in memory.get_finished_spans()
        if format(s.context.trace_id, "032x") == trace_id
    }


def test_kept_traces_carry_the_trace_level_keys_on_every_span() -> None:
    provider, sampler, memory = pipeline(1.0)
    trace_id = one_trace(provider)
    assert spans_of(memory, trace_id) == {}  # nothing happens on the request thread
    assert sampler.settle()
    spans = spans_of(memory, trace_id)
    assert set(spans) == {attr.QUERY, attr.RETRIEVE, attr.RETRIEVE_DENSE}
    for attributes in spans.values():
        assert attributes[attr.SESSION_ID] == "s1"
        assert attributes[attr.USER_ID] == "u1"
    assert sampler.kept == 1


def test_ratio_zero_drops_ordinary_traces_keeps_errors_and_feedback_revives_a_dropped_one() -> None:
    provider, sampler, memory = pipeline(0.0)
    ordinary = one_trace(provider)
    failed = one_trace(provider, error=True)
    assert sampler.settle()
    assert spans_of(memory, ordinary) == {}
    assert len(spans_of(memory, failed)) == 3
    assert sampler.sampled_out == 1
    assert sampler.keep(int(ordinary, 16))  # negative feedback arrived within the window
    assert len(spans_of(memory, ordinary)) == 3
    assert not sampler.keep(int("ab" * 16, 16))  # never seen


def test_keep_finds_a_trace_whose_spans_are_still_queued() -> None:
    provider, sampler, memory = pipeline(0.0, interval_s=60.0)  # the thread would sleep a minute
    trace_id = one_trace(provider)
    assert sampler.keep(int(trace_id, 16), timeout_s=5.0)
    assert len(spans_of(memory, trace_id)) == 3


def test_seen_answers_for_open_dropped_and_kept_traces_within_the_window_only() -> None:
    """Feedback's existence check: a trace the sampler holds (open or sampled out) or kept
    recently is seen, even before an exporter writes it; an unknown id is not, and a kept id
    is forgotten once the feedback window has passed."""
    provider, sampler, _ = pipeline(0.0, interval_s=60.0)
    dropped = one_trace(provider)
    kept = one_trace(provider, error=True)
    tracer = provider.get_tracer("test")
    root = tracer.start_span(attr.QUERY)  # still running
    tracer.start_span(attr.RETRIEVE, set_span_in_context(root)).end()
    running = format(root.get_span_context().trace_id, "032x")
    for trace_id in (dropped, kept, running):
        assert sampler.seen(int(trace_id, 16)), trace_id
    assert not sampler.seen(int("ab" * 16, 16))
    sampler.feedback_window_s = 0.0
    assert not sampler.seen(int(kept, 16))


def test_negative_feedback_on_a_running_trace_keeps_it_when_it_ends() -> None:
    """A rating can arrive before the root span ends (a stream's trace id is sent first):
    the trace is then kept whatever the ratio says."""
    provider, sampler, memory = pipeline(0.0)
    tracer = provider.get_tracer("test")
    root = tracer.start_span(attr.QUERY)
    tracer.start_span(attr.RETRIEVE, set_span_in_context(root)).end()
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert sampler.keep(int(trace_id, 16))
    root.end()
    assert sampler.settle()
    assert set(spans_of(memory, trace_id)) == {attr.QUERY, attr.RETRIEVE}


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    provider, sampler, _ = pipeline(1.0, interval_s=60.0, max_queue=4)
    for _ in range(3):
        one_trace(provider)
    assert sampler.dropped == 3 * 3 - 4
