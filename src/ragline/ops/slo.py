"""SLO figures from the local trace store (`ragline metrics`): the same thresholds as
`deploy/prometheus/alerts.yml`, for a laptop or an incident without Prometheus.

`THRESHOLDS` is the one table of those thresholds; tests/deploy/test_alerts.py reads every alert
in alerts.yml and fails when its threshold (or quantile) is not the one written here.

Computed over the traces kept by sampling: with `tracing.sample_rate` < 1, errors, empty
retrievals and truncations are kept always and so are over-represented; the report says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from ragline.store.schema import spans
from ragline.tracing import attributes as attr

QUERY_ROOTS = (attr.QUERY, attr.RETRIEVE_ROOT)


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | None
    threshold: str
    ok: bool | None  # None: no data
    unit: str = ""
    samples: int = 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None without data."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


@dataclass(frozen=True)
class Threshold:
    """One SLO: the report's figure, the alert that pages on it, and its bounds in the figure's
    unit. Prometheus measures latency in seconds: `prometheus_scale` turns a bound into the
    number the alert's expression compares with."""

    figure: str
    alert: str
    low: float | None = None  # the figure is bad below this
    high: float | None = None  # the figure is bad above this
    unit: str = ""
    quantile: float | None = None  # latency percentiles: the q of the figure and the alert
    prometheus_scale: float = 1.0

    def label(self) -> str:
        """The bounds as the report shows them: "≤ 100 ms", "≥ 0.9", "3 – 5"."""
        if self.low is not None and self.high is not None:
            return f"{self.low:g} – {self.high:g}"
        if self.high is not None:
            return f"≤ {self.high:g} {self.unit}".rstrip()
        return f"≥ {self.low:g} {self.unit}".rstrip()

    def percentile(self, values: Sequence[float]) -> float | None:
        """The figure of a latency SLO: its quantile of `values` (ms)."""
        if self.quantile is None:
            raise ValueError(f"{self.figure} is not a percentile")
        return percentile(values, self.quantile)

    def check(self, value: float | None) -> bool | None:
        """Whether `value` meets the SLO; None without data."""
        if value is None:
            return None
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


RETRIEVAL_P50 = Threshold(
    "retrieval P50", "RaglineRetrievalLatencyP50High", high=100, unit="ms", quantile=0.5,
    prometheus_scale=0.001,
)  # fmt: skip
RETRIEVAL_P99 = Threshold(
    "retrieval P99", "RaglineRetrievalLatencyP99High", high=500, unit="ms", quantile=0.99,
    prometheus_scale=0.001,
)  # fmt: skip
TTFT_P95 = Threshold(
    "time to first token P95", "RaglineTimeToFirstTokenHigh", high=1000, unit="ms",
    quantile=0.95, prometheus_scale=0.001,
)  # fmt: skip
CONTEXT_UTILISATION = Threshold(
    "context-window utilisation (mean)", "RaglineContextUtilisationHigh", high=0.8
)
HIT_RATE = Threshold("top-k hit rate (cited / returned)", "RaglineTopKHitRateLow", low=0.9)
ERROR_RATE = Threshold("error rate", "RaglineErrorRateHigh", high=0.01)
CHUNKS_PER_REQUEST = Threshold(
    "chunks per request (mean)", "RaglineChunksPerRequestOutOfRange", low=3, high=5
)
THRESHOLDS = (
    RETRIEVAL_P50,
    RETRIEVAL_P99,
    TTFT_P95,
    CONTEXT_UTILISATION,
    HIT_RATE,
    ERROR_RATE,
    CHUNKS_PER_REQUEST,
)


def _figure(slo: Threshold, value: float | None, samples: int) -> Figure:
    return Figure(slo.figure, value, slo.label(), slo.check(value), slo.unit, samples)


def slo_report(engine: Engine, since: datetime) -> dict[str, Any]:
    query = select(
        spans.c.trace_id,
        spans.c.name,
        spans.c.parent_span_id,
        spans.c.duration_ms,
        spans.c.status,
        spans.c.attributes,
    ).where(spans.c.start_time >= since)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    by_name: dict[str, list[Any]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    roots = [r for r in rows if r.parent_span_id is None and r.name in QUERY_ROOTS]
    answers = [r for r in roots if r.name == attr.QUERY]

    def durations(name: str) -> list[float]:
        return [float(r.duration_ms) for r in by_name.get(name, [])]

    def values(name: str, key: str) -> list[float]:
        found = []
        for row in by_name.get(name, []):
            value = (row.attributes or {}).get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                found.append(float(value))
        return found

    retrieval = durations(attr.RETRIEVE)
    embedding = durations(attr.EMBEDDING)
    ttft = values(attr.LLM, attr.TIME_TO_FIRST_TOKEN_MS)
    end_to_end = [float(r.duration_ms) for r in answers]
    utilisation = values(attr.PROMPT, attr.CONTEXT_UTILISATION)
    chunks = [
        float(v)
        for r in answers
        if isinstance(v := (r.attributes or {}).get(attr.CONTEXT_CHUNKS), int)
    ]
    cited = sum(
        int((r.attributes or {}).get(attr.CITATIONS) or 0)
        for r in answers
        if (r.attributes or {}).get(attr.CONTEXT_CHUNKS)
    )
    returned = sum(chunks)
    errors = sum(1 for r in roots if r.status == "ERROR")
    empty = sum(1 for r in roots if (r.attributes or {}).get(attr.EMPTY_RETRIEVAL) is True)
    truncated = sum(1 for r in answers if (r.attributes or {}).get(attr.FINISH_REASON) == "length")
    p50, p99 = RETRIEVAL_P50.percentile(retrieval), RETRIEVAL_P99.percentile(retrieval)
    ttft_p95 = TTFT_P95.percentile(ttft)
    mean_utilisation = statistics.fmean(utilisation) if utilisation else None
    mean_chunks = statistics.fmean(chunks) if chunks else None
    hit_rate = cited / returned if returned else None
    error_rate = errors / len(roots) if roots else None
    figures = [
        _figure(RETRIEVAL_P50, p50, len(retrieval)),
        _figure(RETRIEVAL_P99, p99, len(retrieval)),
        _figure(TTFT_P95, ttft_p95, len(ttft)),
        _figure(CONTEXT_UTILISATION, mean_utilisation, len(utilisation)),
        _figure(HIT_RATE, hit_rate, int(returned)),
        _figure(ERROR_RATE, error_rate, len(roots)),
        _figure(CHUNKS_PER_REQUEST, mean_chunks, len(chunks)),
    ]
    stages = {
        name: {
            "count": len(values_),
            "p50_ms": percentile(values_, 0.5),
            "p95_ms": percentile(values_, 0.95),
            "p99_ms": percentile(values_, 0.99),
        }
        for name, values_ in (
            ("embedding", embedding),
            ("retrieve", retrieval),
            ("time to first token", ttft),
            ("llm", durations(attr.LLM)),
            ("end to end (rag.query)", end_to_end),
        )
    }
    return {
        "since": since.isoformat(),
        "traces": len(roots),
        "answers": len(answers),
        "rates": {
            "errors": errors,
            "empty_retrievals": empty,
            "truncated_answers": truncated,
        },
        "figures": [asdict(f) for f in figures],
        "stages": stages,
        "note": "computed over the traces kept by sampling; errors, empty retrievals and "
        "truncations are always kept, so with sample_rate < 1 they are over-represented",
    }
