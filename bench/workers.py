"""Ingestion throughput with 1, 2 and 4 `ragline worker` processes on the PostgreSQL queue.

Each run gets a fresh PostgreSQL database, submits the same SciFact abstracts, starts N worker
processes (`ragline worker` with its defaults: two job threads, document batches on one core
each, one per core at a time) and times until the queue is empty. One process already keeps
both cores of this machine busy, so more processes can only add contention: the curve is flat
from 1.

    python bench/workers.py --data ../shared/data/scifact --docs 400 --processes 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from ragline.config import Settings
from ragline.factory import Runtime

console = Console(width=150)
ADMIN = os.environ.get(
    "RAGLINE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def run(corpus: list[dict[str, str]], processes: int, cache: Path) -> dict[str, Any]:
    name = f"ragline_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    home = Path(tempfile.mkdtemp(prefix="ragline-bench-workers-"))
    env = {
        **os.environ,
        "RAGLINE_DATABASE_URL": url,
        "RAGLINE_HOME": str(home),
        "RAGLINE_EMBEDDING__CACHE_DIR": str(cache),
    }
    try:
        settings = Settings(home=home, database_url=url, embedding={"cache_dir": cache})
        with Runtime(settings) as rt:
            rt.build_embedder()  # export once, before the clock
            for doc in corpus:
                body = f"{doc.get('title', '')}\n\n{doc['text']}".strip()
                rt.store.submit("beir", f"{doc['_id']}.txt", body.encode(), 3)
            workers = [
                subprocess.Popen(
                    [str(Path(sys.executable).parent / "ragline"), "worker"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(processes)
            ]
            while rt.store.job_counts().get("running", 0) == 0 and rt.store.pending_jobs():
                time.sleep(0.05)  # the clock starts with the first claimed job
            started = time.perf_counter()
            while rt.store.pending_jobs():
                time.sleep(0.1)
            seconds = time.perf_counter() - started
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=60)
            stats = rt.store.list_collections()[0]
        return {
            "processes": processes,
            "documents": stats.documents,
            "chunks": stats.chunks,
            "seconds": round(seconds, 1),
            "chunks_per_s": round(stats.chunks / seconds, 1),
        }
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="BEIR SciFact folder")
    parser.add_argument("--docs", type=int, default=400, help="documents per run [400]")
    parser.add_argument("--processes", default="1,2,4", help="worker process counts [1,2,4]")
    parser.add_argument("--out", type=Path, default=Path("bench/results/workers.json"))
    args = parser.parse_args()
    lines = (args.data / "corpus.jsonl").open()
    corpus = [json.loads(line) for _, line in zip(range(args.docs), lines, strict=False)]
    cache = Path(tempfile.mkdtemp(prefix="ragline-bench-models-"))
    runs = []
    for processes in [int(p) for p in args.processes.split(",")]:
        runs.append(run(corpus, processes, cache))
        console.print(runs[-1])
    base = runs[0]["chunks_per_s"]
    table = Table("processes", "chunks", "seconds", "chunks/s", "× 1 process", title="workers")
    for r in runs:
        table.add_row(
            str(r["processes"]),
            str(r["chunks"]),
            str(r["seconds"]),
            str(r["chunks_per_s"]),
            f"{r['chunks_per_s'] / base:.2f}",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "runs": runs}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
