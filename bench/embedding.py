"""Embedding backends compared in one run: speed and retrieval quality on SciFact.

For each `embedding.backend` (torch fp32 is the reference), this builds ragline's embedder and
measures:
- chunks/s on chunks of exactly 256 word pieces (SciFact abstracts cut by the model's limit);
- chunks/s over the whole corpus (title + abstract, one chunk per document, the usual BEIR setup);
- single-query embedding latency, P50 and P99;
- nDCG@10 of the train queries, dense alone and hybrid with BM25 (RRF, k=60), through
  ragline's own index (Qdrant Edge, HNSW + BM25), each leg 100 deep.
It prints a table with ratios against torch fp32 and writes bench/results/embedding.json.

    python bench/embedding.py --data ../shared/data/scifact
    python bench/embedding.py --data ../shared/data/scifact --backends onnx,static --limit-docs 500
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
from ir_measures import nDCG
from rich.console import Console
from rich.progress import track
from rich.table import Table

from ragline.config import IndexSettings, Settings
from ragline.factory import Runtime
from ragline.index.base import IndexPoint
from ragline.index.qdrant_edge import QdrantEdgeIndex
from ragline.models.embedders import Embedder, TokenCounter, default_model_dir
from ragline.retrieval.fusion import reciprocal_rank_fusion
from retrieval_quality import doc_ranking, load_beir

BACKENDS = ["torch", "torch-bf16", "onnx", "onnx-int8", "static"]
CPU_FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"]
console = Console(width=150)


def cpu_features() -> dict[str, Any]:
    """The CPU's vector instruction sets that the runtimes can use (Linux /proc/cpuinfo)."""
    flags: set[str] = set()
    name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
    return {"model": name, **{flag: flag in flags for flag in CPU_FLAGS}}


def throughput(embedder: Embedder, texts: list[str]) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), 256):  # as the pipeline feeds it: a few batches at a time
        embedder.embed_documents(texts[start : start + 256])
    return len(texts) / (time.perf_counter() - started)


def rank(
    embedder: Embedder,
    corpus: list[dict[str, str]],
    texts: list[str],
    queries: dict[str, str],
    folder: Path,
) -> dict[str, Any]:
    """Embed the corpus, index it with BM25, run the queries; nDCG@10 and latencies."""
    started = time.perf_counter()
    batches = range(0, len(texts), 256)
    vectors = np.vstack(
        [
            embedder.embed_documents(texts[i : i + 256])
            for i in track(batches, description="embedding the corpus", transient=True)
        ]
    )
    corpus_rate = len(texts) / (time.perf_counter() - started)
    index = QdrantEdgeIndex(folder, embedder.dimensions, IndexSettings())
    terms = index.term_counts(texts)
    avg_len = sum(terms) / len(terms)
    points = [
        IndexPoint(i, vector, text, {"doc": doc["_id"]})
        for i, (doc, vector, text) in enumerate(zip(corpus, vectors, texts, strict=True))
    ]
    for start in range(0, len(points), 1000):
        index.upsert("scifact", points[start : start + 1000], avg_len)
    point_to_doc = {i: doc["_id"] for i, doc in enumerate(corpus)}
    runs: dict[str, dict[str, dict[str, float]]] = {"dense": {}, "hybrid": {}}
    latencies = []
    for qid, text in queries.items():
        t0 = time.perf_counter()
        vector = embedder.embed_query(text)
        latencies.append((time.perf_counter() - t0) * 1000)
        dense = [h.point_id for h in index.search_dense("scifact", vector, 100)]
        sparse = [h.point_id for h in index.search_sparse("scifact", text, 100)]
        fused = [p for p, _ in reciprocal_rank_fusion([dense, sparse], k=60)]
        runs["dense"][qid] = doc_ranking(dense, point_to_doc)
        runs["hybrid"][qid] = doc_ranking(fused, point_to_doc)
    index.close()
    latencies.sort()
    return {
        "corpus_chunks_per_s": round(corpus_rate, 1),
        "query_p50_ms": round(statistics.median(latencies), 2),
        "query_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="BEIR SciFact folder")
    parser.add_argument("--split", default="train", help="qrels split [train]")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="threads per call [every core]")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per model call [32]")
    parser.add_argument(
        "--sample", type=int, default=512, help="256-word-piece chunks timed for chunks/s [512]"
    )
    parser.add_argument("--limit-docs", type=int, help="first N documents only (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/embedding.json"))
    args = parser.parse_args()

    corpus, queries, qrels = load_beir(args.data, args.split)
    corpus = corpus[: args.limit_docs] if args.limit_docs else corpus
    texts = [f"{d.get('title', '')}\n\n{d['text']}".strip() for d in corpus]
    counts = TokenCounter(default_model_dir() / "tokenizer.json")(texts)
    long_texts = [t for t, n in zip(texts, counts, strict=True) if n >= 254][: args.sample]
    mean_pieces = statistics.mean(min(n, 254) + 2 for n in counts)
    home = Path(tempfile.mkdtemp(prefix="ragline-bench-embedding-"))
    judged = [ir_measures.Qrel(q, d, s) for q, docs in qrels.items() for d, s in docs.items()]
    results: dict[str, dict[str, Any]] = {}
    for backend in args.backends.split(","):
        settings = Settings(
            home=home,
            embedding={"backend": backend, "threads": args.threads, "batch_size": args.batch_size},
        )
        started = time.perf_counter()
        embedder = Runtime(settings).build_embedder()  # first use exports or distills (cached)
        load_s = time.perf_counter() - started
        embedder.embed_documents(long_texts[:64])  # warm up
        console.print(f"[bold]{backend}[/bold]: loaded in {load_s:.1f} s, timing")
        rate = throughput(embedder, long_texts)
        ranked = rank(embedder, corpus, texts, queries, home / f"index-{backend}")
        scores = {
            leg: ir_measures.calc_aggregate([nDCG @ 10], judged, ranked["runs"][leg])[nDCG @ 10]
            for leg in ("dense", "hybrid")
        }
        results[backend] = {
            "fingerprint": embedder.fingerprint,
            "dimensions": embedder.dimensions,
            "load_s": round(load_s, 1),
            "chunks_per_s_256": round(rate, 1),
            "corpus_chunks_per_s": ranked["corpus_chunks_per_s"],
            "query_p50_ms": ranked["query_p50_ms"],
            "query_p99_ms": ranked["query_p99_ms"],
            "ndcg10_dense": round(scores["dense"], 4),
            "ndcg10_hybrid": round(scores["hybrid"], 4),
        }
        console.print(results[backend])
        del embedder
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_features(),
        "threads": args.threads or "all cores",
        "batch_size": args.batch_size,
        "documents": len(corpus),
        "queries": len(queries),
        "corpus_mean_word_pieces": round(mean_pieces, 1),
        "sample_256": len(long_texts),
        "results": results,
    }
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


def print_table(report: dict[str, Any]) -> None:
    results = report["results"]
    base = results.get("torch")
    table = Table(
        "backend",
        "chunks/s (256 wp)",
        "× torch",
        "corpus chunks/s",
        "query P50 ms",
        "nDCG@10 dense",
        "Δ",
        "nDCG@10 hybrid",
        "Δ",
        title=f"{report['documents']} docs, {report['queries']} queries; CPU {report['cpu']}",
    )
    for backend, r in results.items():
        ratio = f"{r['chunks_per_s_256'] / base['chunks_per_s_256']:.2f}" if base else ""
        delta = {
            leg: f"{(r[f'ndcg10_{leg}'] - base[f'ndcg10_{leg}']) * 100:+.2f}" if base else ""
            for leg in ("dense", "hybrid")
        }
        table.add_row(
            backend,
            f"{r['chunks_per_s_256']:.1f}",
            ratio,
            f"{r['corpus_chunks_per_s']:.1f}",
            f"{r['query_p50_ms']:.1f}",
            f"{r['ndcg10_dense']:.4f}",
            delta["dense"],
            f"{r['ndcg10_hybrid']:.4f}",
            delta["hybrid"],
        )
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
