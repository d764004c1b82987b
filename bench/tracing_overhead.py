"""Per-request cost of tracing on the retrieval path (what `/v1/retrieve` runs), same run:
tracing off, on (local span store), and on with an OTLP exporter pointed at a dead endpoint.

Query embeddings are served from the embedding cache (warmed first) so the ~10 ms of MiniLM
does not drown a sub-millisecond difference; configurations are interleaved in rounds so
machine noise spreads evenly. Prints median and P99 per configuration and the overhead.

    python bench/tracing_overhead.py --requests 1500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ragline.cache import MemoryCache
from ragline.cache.embedding import CachingEmbedder
from ragline.config import Settings, rag_config_hash
from ragline.factory import Runtime
from ragline.ingestion.parsers import SUPPORTED_EXTENSIONS
from ragline.retrieval.retriever import HybridRetriever
from ragline.service import QueryService
from ragline.tracing.setup import Tracing
from ragline.tracing.store import LocalSpanExporter

COLLECTION = "bench"
QUESTIONS = [f"How do I report security issue number {n}?" for n in range(50)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=Path, default=Path("samples"), help="folder to ingest [samples]"
    )
    parser.add_argument(
        "--requests", type=int, default=1500, help="requests per configuration [1500]"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/tracing_overhead.json"))
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ragline-trace-bench-"))
    base = Settings(home=home, tracing={"enabled": False})
    with Runtime(base) as rt:
        for path in sorted(args.docs.rglob("*")):
            if path.is_file() and path.suffix in SUPPORTED_EXTENSIONS:
                rt.store.submit(COLLECTION, path.name, path.read_bytes(), 3)
        worker = rt.worker()
        while worker.run_once() is not None:
            pass
        rt.sync_index()
        embedder = CachingEmbedder(rt.embedder, MemoryCache("embedding", 3600))
        for question in QUESTIONS:
            embedder.embed_query(question)
        tracings = {
            "off": Tracing(base),
            "on_no_exporter": Tracing(Settings(home=home)),
            "on": Tracing(Settings(home=home), local_exporter=LocalSpanExporter(rt.store.engine)),
            "on_dead_otlp": Tracing(
                Settings(
                    home=home,
                    tracing={
                        "otlp_endpoint": "http://127.0.0.1:9/v1/traces",
                        "export_timeout_s": 2.0,
                    },
                ),
                local_exporter=LocalSpanExporter(rt.store.engine),
            ),
        }
        services = {}
        for name, tracing in tracings.items():
            retriever = HybridRetriever(embedder, rt.index, rt.store, base.retrieval, tracing)
            services[name] = QueryService(
                rt.store, retriever, rt.answerer, None, rag_config_hash(base), tracing
            )
        samples: dict[str, list[float]] = {name: [] for name in services}
        rounds = max(1, args.requests // 50)
        for round_number in range(rounds + 1):
            for name, service in services.items():
                for question in QUESTIONS:
                    started = time.perf_counter()
                    service.retrieve(question, COLLECTION)
                    if round_number:  # round 0 warms up
                        samples[name].append((time.perf_counter() - started) * 1000)
        health = {name: t.health() for name, t in tracings.items()}
        for tracing in tracings.values():
            tracing.shutdown()
    figures = {
        name: {
            "requests": len(v),
            "p50_ms": round(statistics.median(v), 4),
            "p99_ms": round(percentile(v, 0.99), 4),
        }
        for name, v in samples.items()
    }
    off = figures["off"]
    results = {
        "figures": figures,
        "overhead_p50_ms": round(figures["on"]["p50_ms"] - off["p50_ms"], 4),
        "overhead_p50_ratio": round(figures["on"]["p50_ms"] / off["p50_ms"], 3),
        "dead_exporter_overhead_p50_ms": round(
            figures["on_dead_otlp"]["p50_ms"] - off["p50_ms"], 4
        ),
        "dead_exporter_p99_ms_vs_on": round(
            figures["on_dead_otlp"]["p99_ms"] - figures["on"]["p99_ms"], 4
        ),
        "exporters": {name: h["exporters"] for name, h in health.items()},
    }
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
