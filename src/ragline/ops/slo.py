"""SLO figures from the local trace store (`ragline metrics`): the same thresholds as
`deploy/prometheus/alerts.yml`, for a laptop or an incident without Prometheus.

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


def _check(value: float | None, limit: float, above_is_bad: bool = True) -> bool | None:
    if value is None:
        return None
    return value <= limit if above_is_bad else value >= limit


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
    p50, p99 = percentile(retrieval, 0.5), percentile(retrieval, 0.99)
    ttft_p95 = percentile(ttft, 0.95)
    mean_utilisation = statistics.fmean(utilisation) if utilisation else None
    mean_chunks = statistics.fmean(chunks) if chunks else None
    hit_rate = cited / returned if returned else None
    error_rate = errors / len(roots) if roots else None
    figures = [
        Figure("retrieval P50", p50, "≤ 100 ms", _check(p50, 100), "ms", len(retrieval)),
        Figure("retrieval P99", p99, "≤ 500 ms", _check(p99, 500), "ms", len(retrieval)),
        Figure(
            "time to first token P95",
            ttft_p95,
            "≤ 1000 ms",
            _check(ttft_p95, 1000),
            "ms",
            len(ttft),
        ),
        Figure(
            "context-window utilisation (mean)",
            mean_utilisation,
            "≤ 0.8",
            _check(mean_utilisation, 0.8),
            "",
            len(utilisation),
        ),
        Figure(
            "top-k hit rate (cited / returned)",
            hit_rate,
            "≥ 0.9",
            _check(hit_rate, 0.9, above_is_bad=False),
            "",
            int(returned),
        ),
        Figure("error rate", error_rate, "≤ 0.01", _check(error_rate, 0.01), "", len(roots)),
        Figure(
            "chunks per request (mean)",
            mean_chunks,
            "3 – 5",
            None if mean_chunks is None else 3 <= mean_chunks <= 5,
            "",
            len(chunks),
        ),
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
