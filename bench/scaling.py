"""How retrieval latency and memory grow with the corpus: 10k, 100k, 1M chunks.

For each size, a synthetic corpus (bench/synthetic.py: SciFact sentences, structured vectors)
is built once in its own ragline home, then measured in a fresh process, so memory is that of
one process that opened this index and nothing else:
- Qdrant Edge's raw query time (the reference): the dense and the BM25 query, one after the
  other, straight on the index;
- ragline's hybrid retrieval as `/v1/retrieve` runs it, query embedding excluded: the dense
  and BM25 legs (one after the other on Qdrant Edge, whose searches hold the GIL), RRF, the
  store lookup of the chunks returned, caches off;
- the process's resident memory (RSS) after the queries, and the index and database sizes.
It prints a table, writes bench/results/scaling.json and plots docs/img/scaling.png.

    python bench/scaling.py --data ../shared/data/scifact --sizes 10000,100000,1000000 \\
        --homes /tmp/ragline-scaling
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ragline.config import Settings
from ragline.factory import Runtime

console = Console(width=150)
QUERIES = 300


def rss_mib() -> dict[str, float]:
    """This process's resident memory now and at its peak (Linux /proc), in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
    }


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def measure(home: Path) -> dict[str, Any]:
    """Latencies and memory on one built home (run in a fresh process)."""
    from synthetic import COLLECTION

    settings = Settings(home=home, cache={"enabled": False})
    with Runtime(settings) as rt:
        count = rt.index.count(COLLECTION)
        rng = np.random.default_rng(11)
        picks = rng.integers(1, count + 1, QUERIES)
        by_point = rt.store.chunks_by_point_ids(COLLECTION, [int(p) for p in picks])
        vectors = rt.index.vectors(COLLECTION, [int(p) for p in picks])
        queries = []
        for point in picks:
            words = by_point[int(point)].text.split()
            noise = rng.standard_normal(len(vectors[int(point)])).astype(np.float32)
            vector = vectors[int(point)] + 0.05 * noise
            queries.append((" ".join(words[:12]), vector / np.linalg.norm(vector)))
        retriever, depth = rt.retriever, settings.retrieval
        raw, hybrid = [], []
        for text, vector in queries[:20]:  # warm the caches of the OS and the engine
            retriever.retrieve(text, COLLECTION, query_vector=vector)
        for text, vector in queries:
            started = time.perf_counter()
            rt.index.search_dense(COLLECTION, vector, depth.dense_top_k)
            rt.index.search_sparse(COLLECTION, text, depth.sparse_top_k)
            raw.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            result = retriever.retrieve(text, COLLECTION, query_vector=vector)
            hybrid.append((time.perf_counter() - started) * 1000)
            assert result.chunks, "a synthetic query found nothing"
        memory = rss_mib()
    return {
        "chunks": count,
        "raw": percentiles(raw),
        "hybrid": percentiles(hybrid),
        "rss_mib": round(memory["VmRSS"], 1),
        "peak_rss_mib": round(memory["VmHWM"], 1),
        "index_mib": round(folder_mib(settings.resolved_index_path), 1),
        "database_mib": round((home / "ragline.db").stat().st_size / 2**20, 1),
    }


def plot(rows: list[dict[str, Any]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["chunks"] for r in rows]
    figure, (latency, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("hybrid", "ragline hybrid"), ("raw", "Qdrant Edge raw (2 legs)")):
        latency.plot(sizes, [r[key]["p50_ms"] for r in rows], "o-", label=f"{label} P50")
        latency.plot(sizes, [r[key]["p99_ms"] for r in rows], "o--", label=f"{label} P99")
    latency.set(xscale="log", yscale="log", xlabel="chunks", ylabel="ms", title="retrieval")
    latency.legend(fontsize=8)
    memory.plot(sizes, [r["rss_mib"] for r in rows], "o-", label="process RSS")
    memory.plot(sizes, [r["index_mib"] for r in rows], "o--", label="index on disk")
    memory.plot(sizes, [r["database_mib"] for r in rows], "o:", label="SQLite on disk")
    memory.set(xscale="log", yscale="log", xlabel="chunks", ylabel="MiB", title="memory")
    memory.legend(fontsize=8)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="BEIR SciFact folder (to build corpora)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="chunk counts")
    parser.add_argument("--homes", type=Path, required=True, help="folder of one home per size")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--out", type=Path, default=Path("bench/results/scaling.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/scaling.png"))
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    # the ONNX export happens once, here: the measured processes load it like `serve` does,
    # without importing PyTorch
    models = args.homes / "models"
    Runtime(Settings(home=args.homes, embedding={"cache_dir": models})).build_embedder()
    env = {**os.environ, "RAGLINE_EMBEDDING__CACHE_DIR": str(models)}
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        home = args.homes / f"chunks-{size}"
        if not (home / "ragline.db").exists():
            if args.data is None:
                parser.error(f"{home} does not exist: give --data to build it")
            from synthetic import build

            started = time.perf_counter()
            build(Settings(home=home), args.data, size)
            console.print(f"built {size:,} chunks in {time.perf_counter() - started:.0f} s")
        child = subprocess.run(
            [sys.executable, __file__, "--homes", str(args.homes), "--measure", str(home)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        console.print(rows[-1])
    table = Table(
        "chunks",
        "raw P50",
        "raw P99",
        "hybrid P50",
        "hybrid P99",
        "RSS MiB",
        "index MiB",
        "SQLite MiB",
        title="retrieval, query embedding excluded (ms)",
    )
    for r in rows:
        table.add_row(
            f"{r['chunks']:,}",
            *(f"{r[k][p]:.2f}" for k in ("raw", "hybrid") for p in ("p50_ms", "p99_ms")),
            f"{r['rss_mib']:.0f}",
            f"{r['index_mib']:.0f}",
            f"{r['database_mib']:.0f}",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "queries": QUERIES, "sizes": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.plot)
    console.print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
