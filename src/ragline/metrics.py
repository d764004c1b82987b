"""Prometheus metrics: the SLO figures of docs/operations.md, at `GET /metrics`.

Names and buckets are a contract with `deploy/prometheus/alerts.yml` and
`deploy/grafana/ragline.json` (tests/deploy checks both against `CATALOGUE`). Histogram buckets
resolve the alert thresholds: retrieval 100 ms (P50) and 500 ms (P99), TTFT 1 s.

Several processes (uvicorn workers, `ragline worker`s) share metrics the prometheus-client way:
set `PROMETHEUS_MULTIPROC_DIR` to an empty folder before they start, and each process writes its
values there; `/metrics` then aggregates them. Without it, each process serves its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # the index sync imports the store; only its type is needed here
    from ragline.index.sync import IndexSync

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RETRIEVAL = Histogram(
    "ragline_retrieval_duration_seconds",
    "Retrieval (both legs, fusion, store lookup, MMR), query embedding excluded",
    buckets=SECONDS,
)
EMBEDDING = Histogram(
    "ragline_embedding_duration_seconds",
    "Embedding one query, or one ingestion batch",
    ["source"],
    buckets=SECONDS,
)
TTFT = Histogram(
    "ragline_llm_time_to_first_token_seconds",
    "Time from the LLM request to its first token",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
REQUEST = Histogram(
    "ragline_request_duration_seconds",
    "End-to-end duration of query, retrieve and chat requests",
    ["route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CONTEXT_UTILISATION = Histogram(
    "ragline_context_utilisation_ratio",
    "Prompt tokens / the model's context window (llm.context_window), per answer",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
CHUNKS_PER_REQUEST = Histogram(
    "ragline_chunks_per_request",
    "Chunks given to the prompt per answered request",
    buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 20),
)
REQUESTS = Counter("ragline_requests", "Requests by route and outcome", ["route", "outcome"])
ERRORS = Counter("ragline_errors", "Failures by pipeline stage", ["stage"])
EMPTY_RETRIEVALS = Counter("ragline_empty_retrievals", "Retrievals that returned no chunk")
TRUNCATED = Counter("ragline_truncated_answers", "Answers cut by max_tokens (finish_reason=length)")
CHUNKS_RETURNED = Counter("ragline_chunks_returned", "Chunks given to the prompt")
CHUNKS_CITED = Counter("ragline_chunks_cited", "Chunks the answer cited")
SHED = Counter(
    "ragline_requests_shed",
    "API requests refused with 503 because server.max_in_flight were already in flight",
)
CACHE = Counter("ragline_cache_requests", "Cache lookups", ["cache", "result"])
JOBS = Counter("ragline_ingest_jobs", "Ingestion job attempts by outcome", ["outcome"])
INJECTION_SUSPECTED = Counter(
    "ragline_prompt_injection_suspected",
    "LLM calls (answers, multi-step summaries) given a passage flagged as a suspected prompt "
    "injection (generation/injection.py)",
)

CATALOGUE = (
    "ragline_retrieval_duration_seconds",
    "ragline_embedding_duration_seconds",
    "ragline_llm_time_to_first_token_seconds",
    "ragline_request_duration_seconds",
    "ragline_context_utilisation_ratio",
    "ragline_chunks_per_request",
    "ragline_requests_total",
    "ragline_requests_shed_total",
    "ragline_errors_total",
    "ragline_empty_retrievals_total",
    "ragline_truncated_answers_total",
    "ragline_chunks_returned_total",
    "ragline_chunks_cited_total",
    "ragline_cache_requests_total",
    "ragline_ingest_jobs_total",
    "ragline_prompt_injection_suspected_total",
    "ragline_spans_dropped_total",
    "ragline_ingest_jobs",
    "ragline_index_sync_lag_entries",
    "ragline_index_sync_lag_seconds",
    "ragline_index_sync_failures",
)


def error_stage(exc: BaseException) -> str:
    """The stage a failure belongs to, for `ragline_errors_total{stage}`."""
    from ragline.errors import BackendError, DocumentError, LLMError

    if isinstance(exc, LLMError):
        return "llm"
    if isinstance(exc, DocumentError):
        return "ingest"
    if isinstance(exc, BackendError):
        return "retrieve"
    return "other"


class RuntimeCollector(Collector):
    """Values read at scrape time: the job queue by state (from the store, so every replica
    reports the same shared queue), the spans each exporter dropped and, in a process that
    syncs an index (`serve`, not `worker`), how far that index is behind the store."""

    def __init__(
        self,
        job_counts: Callable[[], dict[str, int]],
        dropped: Callable[[], dict[str, int]],
        index_sync: IndexSync | None = None,
    ) -> None:
        self.job_counts = job_counts
        self.dropped = dropped
        self.index_sync = index_sync

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("ragline_ingest_jobs", "Ingestion jobs by state", labels=["state"])
        try:
            counts = self.job_counts()
        except Exception:  # the store is down: /readyz says so; /metrics still answers
            counts = {}
        for state in ("queued", "running", "failed", "dead"):
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        spans = CounterMetricFamily(
            "ragline_spans_dropped", "Spans dropped by a full queue", labels=["exporter"]
        )
        for exporter, count in self.dropped().items():
            spans.add_metric([exporter], count)
        yield spans
        if self.index_sync is not None:
            yield from _index_sync_metrics(self.index_sync)


def _index_sync_metrics(sync: IndexSync) -> Iterable[Metric]:
    """The lag /readyz judges (alert on the seconds), and the sync's failures in a row."""
    try:
        lag = sync.lag()
    except Exception:  # store or index down: /readyz says so; /metrics still answers
        lag = None
    if lag is not None:
        yield GaugeMetricFamily(
            "ragline_index_sync_lag_entries",
            "Index-log entries the index has not applied (store's last seq - index cursor)",
            value=lag.entries,
        )
        yield GaugeMetricFamily(
            "ragline_index_sync_lag_seconds",
            "Age of the oldest index-log entry the index has not applied (0: none)",
            value=lag.seconds,
        )
    yield GaugeMetricFamily(
        "ragline_index_sync_failures",
        "Background index sync attempts failed in a row (0: the last one worked)",
        value=sync.failures,
    )


def runtime_collector(runtime: Any, index: bool = False) -> RuntimeCollector:
    """With `index`, also the index sync's lag: only for a process that syncs the index (the
    API), as building the index elsewhere would open it (Qdrant Edge: one process only)."""
    sync = runtime.index_sync if index else None
    return RuntimeCollector(runtime.store.job_counts, runtime.tracing.dropped, sync)


def render(runtime_collector: Collector | None = None) -> tuple[bytes, str]:
    """The exposition text of this process, or of every process in the multiprocess folder,
    plus the runtime's scrape-time values."""
    registry: Any
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    body = generate_latest(registry)
    if runtime_collector is not None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(runtime_collector)
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST


def serve_metrics(runtime: Any, host: str, port: int) -> None:
    """`/metrics` on its own port in a daemon thread (for `ragline worker`, which has no API)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    collector = runtime_collector(runtime)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics here")
                return
            body, content_type = render(collector)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="ragline-metrics", daemon=True).start()
