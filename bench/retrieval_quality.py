"""Retrieval quality on a BEIR dataset (SciFact by default) through ragline's real pipeline.

Ingests the corpus (one text document per BEIR doc, through the job queue: parse, chunk,
embed, index), then ranks documents for every query with qrels by BM25 only, dense only and
hybrid RRF, and prints nDCG@10 and Recall@100 (ir-measures / pytrec_eval) with ingest figures.

    python bench/retrieval_quality.py --data ../shared/data/scifact --split train
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ir_measures
from ir_measures import R, nDCG
from rich.progress import track

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.retrieval.fusion import reciprocal_rank_fusion

COLLECTION = "beir"


def load_beir(
    data: Path, split: str
) -> tuple[list[dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    corpus = [json.loads(line) for line in (data / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (data / "queries.jsonl").open())}
    qrels: dict[str, dict[str, int]] = {}
    for line in (data / "qrels" / f"{split}.tsv").open():
        qid, did, score = line.rstrip("\n").split("\t")
        if qid == "query-id":
            continue
        qrels.setdefault(qid, {})[did] = int(score)
    return corpus, {q: queries[q] for q in qrels if q in queries}, qrels


def ingest(rt: Runtime, corpus: list[dict[str, str]]) -> dict[str, float]:
    job_ids = []
    for doc in corpus:
        text = f"{doc.get('title', '')}\n\n{doc['text']}".strip()
        submission = rt.store.submit(COLLECTION, f"{doc['_id']}.txt", text.encode(), max_attempts=3)
        if submission.job is not None:
            job_ids.append(submission.job.id)
    worker = rt.worker()
    worker.pipeline  # load the model before the clock starts  # noqa: B018
    started = time.perf_counter()
    chunks = 0
    pending = set(job_ids)
    for _ in track(range(len(job_ids)), description="ingesting", transient=True):
        result = worker.run_once(pending)
        if result is None:
            break
        job, outcome = result
        pending.discard(job.id)
        chunks += outcome.chunks if outcome else 0
    rt.sync_index()  # the index write is part of ingestion
    seconds = time.perf_counter() - started
    return {
        "documents": len(job_ids),
        "chunks": chunks,
        "seconds": round(seconds, 1),
        "docs_per_s": round(len(job_ids) / seconds, 2) if seconds else 0.0,
        "chunks_per_s": round(chunks / seconds, 2) if seconds else 0.0,
    }


def doc_ranking(point_ids: list[int], point_to_doc: dict[int, str]) -> dict[str, float]:
    """Documents in order of their best chunk; scores decrease with rank."""
    ranking: dict[str, float] = {}
    for point_id in point_ids:
        doc = point_to_doc.get(point_id)
        if doc is not None and doc not in ranking:
            ranking[doc] = 1.0 / (len(ranking) + 1)
    return ranking


def run_queries(
    rt: Runtime, queries: dict[str, str], depth: int
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, float]]:
    point_to_doc = {}
    for document in rt.store.list_documents(COLLECTION):
        for chunk in rt.store.chunks_of_document(document.id):
            point_to_doc[chunk.point_id] = document.source.removesuffix(".txt")
    runs: dict[str, dict[str, dict[str, float]]] = {"bm25": {}, "dense": {}, "hybrid": {}}
    latencies: dict[str, list[float]] = {"embed": [], "bm25": [], "dense": [], "fusion": []}
    k = rt.settings.retrieval.rrf_k
    for qid, text in track(queries.items(), description="querying", transient=True):
        t0 = time.perf_counter()
        vector = rt.embedder.embed_query(text)
        t1 = time.perf_counter()
        dense = [h.point_id for h in rt.index.search_dense(COLLECTION, vector, depth)]
        t2 = time.perf_counter()
        sparse = [h.point_id for h in rt.index.search_sparse(COLLECTION, text, depth)]
        t3 = time.perf_counter()
        fused = [p for p, _ in reciprocal_rank_fusion([dense, sparse], k=k)]
        t4 = time.perf_counter()
        for name, ids in (("dense", dense), ("bm25", sparse), ("hybrid", fused)):
            runs[name][qid] = doc_ranking(ids, point_to_doc)
        for name, seconds in (
            ("embed", t1 - t0),
            ("dense", t2 - t1),
            ("bm25", t3 - t2),
            ("fusion", t4 - t3),
        ):
            latencies[name].append(seconds * 1000)
    medians = {f"{name}_p50_ms": round(statistics.median(v), 3) for name, v in latencies.items()}
    return runs, medians


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("--split", default="train", help="qrels split [train]")
    parser.add_argument("--home", type=Path, help="ragline home to (re)use [a temporary folder]")
    parser.add_argument("--depth", type=int, default=100, help="chunks retrieved per leg [100]")
    parser.add_argument(
        "--limit-docs", type=int, help="ingest only the first N documents (smoke runs)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/retrieval_quality.json"))
    args = parser.parse_args()

    corpus, queries, qrels = load_beir(args.data, args.split)
    if args.limit_docs:
        corpus = corpus[: args.limit_docs]
    home = args.home or Path(tempfile.mkdtemp(prefix="ragline-bench-"))
    settings = Settings(home=home, database_url=None)
    with Runtime(settings) as rt:
        ingest_figures = ingest(rt, corpus)
        runs, latency = run_queries(rt, queries, args.depth)
    qrels_list = [ir_measures.Qrel(q, d, s) for q, docs in qrels.items() for d, s in docs.items()]
    results = {
        "dataset": str(args.data),
        "split": args.split,
        "queries": len(queries),
        "settings": {
            "chunk_size": settings.chunking.chunk_size,
            "chunk_overlap": settings.chunking.chunk_overlap,
            "rrf_k": settings.retrieval.rrf_k,
            "depth": args.depth,
        },
        "ingest": ingest_figures,
        "latency": latency,
        "quality": {},
    }
    print(f"\n{'run':8} {'nDCG@10':>8} {'R@100':>8}")
    for name, run in runs.items():
        scored = ir_measures.calc_aggregate(
            [nDCG @ 10, R @ 100],
            qrels_list,
            [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()],
        )
        figures = {"ndcg@10": round(scored[nDCG @ 10], 4), "recall@100": round(scored[R @ 100], 4)}
        results["quality"][name] = figures
        print(f"{name:8} {figures['ndcg@10']:8.4f} {figures['recall@100']:8.4f}")
    print(f"\ningest: {ingest_figures}\nlatency (median ms): {latency}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
