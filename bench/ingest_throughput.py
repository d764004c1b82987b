"""Ingestion throughput against the embedder's own, on SciFact documents.

Submits N SciFact abstracts as text documents and runs them through the real job queue (parse,
chunk, embed, store, then the index sync) with 1 and 2 worker threads. The reference, in the
same run, is the embedder alone on the very chunks the pipeline produced, in batches of 256.
The ratio says how much of the embedder's speed ingestion keeps: the rest is parsing,
chunking, the store and the index. With --repeat N, the thread counts alternate for N rounds
and the summary is the median ratio per thread count (one run's ratio moves by ±0.06 here).

    python bench/ingest_throughput.py --data ../shared/data/scifact --docs 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ragline.config import Settings
from ragline.factory import Runtime

console = Console(width=150)


def ingest(settings: Settings, corpus: list[dict[str, str]], threads: int) -> dict[str, Any]:
    with Runtime(settings) as rt:
        for doc in corpus:
            text = f"{doc.get('title', '')}\n\n{doc['text']}".strip()
            rt.store.submit("beir", f"{doc['_id']}.txt", text.encode(), 3)
        workers = [rt.worker() for _ in range(threads)]
        workers[0].pipeline.embedder.embed_query("warm up")  # load before the clock starts
        stop = threading.Event()
        started = time.perf_counter()
        running = [threading.Thread(target=w.run_forever, args=(stop, 0.01)) for w in workers]
        for thread in running:
            thread.start()
        while rt.store.pending_jobs():
            time.sleep(0.05)
        stop.set()
        for thread in running:
            thread.join()
        jobs_done = time.perf_counter()
        rt.sync_index()  # `serve` runs it beside the workers; here it follows them, timed apart
        seconds = time.perf_counter() - started
        sync_s = time.perf_counter() - jobs_done
        stats = rt.store.list_collections()[0]
        texts = [
            chunk.text
            for document in rt.store.list_documents("beir")
            for chunk in rt.store.chunks_of_document(document.id)
        ]
        embedder = rt.build_embedder()
    started = time.perf_counter()
    for start in range(0, len(texts), 256):
        embedder.embed_documents(texts[start : start + 256])
    alone = len(texts) / (time.perf_counter() - started)
    rate = stats.chunks / seconds
    return {
        "threads": threads,
        "documents": stats.documents,
        "chunks": stats.chunks,
        "seconds": round(seconds, 1),
        "jobs_s": round(seconds - sync_s, 1),
        "index_sync_s": round(sync_s, 1),
        "chunks_per_s": round(rate, 1),
        "embedder_alone_chunks_per_s": round(alone, 1),
        "ratio": round(rate / alone, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="BEIR SciFact folder")
    parser.add_argument("--docs", type=int, default=1000, help="documents ingested [1000]")
    parser.add_argument("--backend", default=None, help="embedding.backend [the default]")
    parser.add_argument("--threads", default="1,2", help="worker threads to try [1,2]")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the thread counts [1]")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest_throughput.json"))
    args = parser.parse_args()

    lines = (args.data / "corpus.jsonl").open()
    corpus = [json.loads(line) for _, line in zip(range(args.docs), lines, strict=False)]
    runs = []
    thread_counts = [int(t) for t in args.threads.split(",")]
    embedding = {"backend": args.backend} if args.backend else {}
    backend = Settings(embedding=embedding).embedding.backend
    for _ in range(args.repeat):
        for threads in thread_counts:
            home = Path(tempfile.mkdtemp(prefix="ragline-bench-ingest-"))
            settings = Settings(home=home, embedding=embedding)
            runs.append(ingest(settings, corpus, threads))
            console.print(runs[-1])
    medians = {
        threads: {
            key: statistics.median(r[key] for r in runs if r["threads"] == threads)
            for key in ("chunks_per_s", "embedder_alone_chunks_per_s", "ratio")
        }
        for threads in thread_counts
    }
    table = Table(
        "worker threads",
        "documents",
        "chunks",
        "seconds",
        "jobs s",
        "index sync s",
        "chunks/s",
        "embedder alone",
        "ratio",
        title=f"ingestion, backend {backend}",
    )
    for run in runs:
        table.add_row(
            *(
                str(run[k])
                for k in (
                    "threads",
                    "documents",
                    "chunks",
                    "seconds",
                    "jobs_s",
                    "index_sync_s",
                    "chunks_per_s",
                    "embedder_alone_chunks_per_s",
                    "ratio",
                )
            )
        )
    console.print(table)
    for threads, median in medians.items():
        console.print(
            f"{threads} thread(s), median of {args.repeat}: {median['chunks_per_s']:.1f} chunks/s,"
            f" embedder alone {median['embedder_alone_chunks_per_s']:.1f}, ratio {median['ratio']:.3f}"
        )
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "backend": backend,
        "repeat": args.repeat,
        "medians": {str(t): m for t, m in medians.items()},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
