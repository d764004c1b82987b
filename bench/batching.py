"""Length-sorted batching against arrival order, on chunks of mixed length.

Chunks of real documents vary in length (a section's last chunk is short), and a batch is
padded to its longest input. The embedders sort a call's texts by token length before cutting
batches. This script cuts SciFact abstracts into chunks of 20-180 words and embeds the same
chunks two ways with the configured backend: in arrival order, one model batch of 32 per call
(what a naive pipeline does), and in calls of 256 that the embedder sorts into batches of 32.
Runs alternate, three rounds; medians are printed.

    python bench/batching.py --data ../shared/data/scifact --backend onnx-int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.models.embedders import Embedder


def mixed_chunks(data: Path, count: int) -> list[str]:
    rng = np.random.default_rng(3)
    chunks: list[str] = []
    for line in (data / "corpus.jsonl").open():
        doc = json.loads(line)
        words = f"{doc['title']}\n\n{doc['text']}".split()
        start = 0
        while start < len(words) and len(chunks) < count:
            size = int(rng.integers(20, 180))
            chunks.append(" ".join(words[start : start + size]))
            start += size
        if len(chunks) >= count:
            break
    return chunks


def rate(embedder: Embedder, chunks: list[str], call_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(chunks), call_size):
        embedder.embed_documents(chunks[start : start + call_size])
    return len(chunks) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="BEIR SciFact folder")
    parser.add_argument("--backend", default="onnx-int8", help="embedding.backend [onnx-int8]")
    parser.add_argument("--chunks", type=int, default=1500, help="chunks embedded per run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/batching.json"))
    args = parser.parse_args()
    chunks = mixed_chunks(args.data, args.chunks)
    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="ragline-bench-batching-")),
        embedding={"backend": args.backend, "batch_size": 32},
    )
    embedder = Runtime(settings).build_embedder()
    embedder.embed_documents(chunks[:64])
    runs: dict[str, list[float]] = {"arrival": [], "sorted": []}
    for _ in range(3):
        runs["arrival"].append(rate(embedder, chunks, 32))
        runs["sorted"].append(rate(embedder, chunks, 256))
    medians = {name: round(statistics.median(values), 1) for name, values in runs.items()}
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "backend": args.backend,
        "chunks": len(chunks),
        "chunks_per_s": medians,
        "ratio": round(medians["sorted"] / medians["arrival"], 2),
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
