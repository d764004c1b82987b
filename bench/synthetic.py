"""A synthetic corpus at any size, written straight into a ragline home (store + index).

Texts are realistic: each chunk joins 3-6 consecutive sentences of one SciFact abstract, so BM25
sees real term statistics. Vectors are structured, not embedded (embedding 1M chunks would take
hours here): every source abstract is a topic with a random unit centroid, and a chunk's vector
is its topic's centroid plus Gaussian noise, normalised. Chunks of one topic are near each other
and topics are far apart, which is the shape HNSW meets in real corpora; uniform random vectors
would be the worst case instead. The SQL store holds every chunk (retrieval resolves hits
through it) and the index is filled in large batches, then its cursor is set to the store's log.

    python bench/synthetic.py --data ../shared/data/scifact --chunks 100000 --home /tmp/rl-100k
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.progress import Progress
from sqlalchemy import insert, select

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.index.base import IndexPoint
from ragline.store.repository import utcnow
from ragline.store.schema import chunks, collections, contents, documents, index_log

COLLECTION = "synthetic"
CHUNKS_PER_DOCUMENT = 10
NOISE = 0.6  # norm of the noise relative to the centroid: topics stay distinct, chunks vary
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(data: Path) -> list[list[str]]:
    """Each SciFact abstract as its list of sentences (abstracts of fewer than 3 are skipped)."""
    abstracts = []
    for line in (data / "corpus.jsonl").open():
        parts = [s for s in SENTENCE.split(json.loads(line)["text"]) if len(s) > 20]
        if len(parts) >= 3:
            abstracts.append(parts)
    return abstracts


def synthetic_chunks(
    abstracts: list[list[str]], count: int, dimensions: int, seed: int = 7
) -> Iterator[tuple[int, str, np.ndarray]]:
    """(topic, text, unit vector) for `count` chunks, topics taken round-robin."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((len(abstracts), dimensions)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    for n in range(count):
        topic = n % len(abstracts)
        parts = abstracts[topic]
        start = int(rng.integers(0, max(1, len(parts) - 2)))
        text = " ".join(parts[start : start + int(rng.integers(3, 7))])
        noise = rng.standard_normal(dimensions).astype(np.float32)
        vector = centroids[topic] + NOISE * noise / np.linalg.norm(noise)
        yield topic, text, vector / np.linalg.norm(vector)


def build(settings: Settings, data: Path, count: int, batch: int = 10_000) -> None:
    """Fill the home's store and index with `count` synthetic chunks."""
    abstracts = sentences(data)
    with Runtime(settings) as rt, Progress(transient=True) as progress:
        task = progress.add_task(f"building {count:,} chunks", total=count)
        rt.store.ensure_collection(COLLECTION)
        index = rt.index
        rows: list[tuple[int, str, np.ndarray]] = []
        for n, row in enumerate(
            synthetic_chunks(abstracts, count, settings.embedding.vector_size())
        ):
            rows.append(row)
            if len(rows) == batch or n == count - 1:
                first = n + 1 - len(rows)
                points, terms = _write(rt, rows, first)
                index.upsert(COLLECTION, points, avg_len=sum(terms) / len(terms))
                progress.advance(task, len(rows))
                rows = []
        with rt.store.engine.begin() as conn:
            conn.execute(
                collections.update()
                .where(collections.c.name == COLLECTION)
                .values(embedder=settings.embedding.fingerprint())
            )
        index.set_cursor(rt.store.last_log_seq())
        progress.update(task, description="building the HNSW graph (Qdrant Edge optimize)")
        index.optimize()


def _write(
    rt: Runtime, rows: list[tuple[int, str, np.ndarray]], first: int
) -> tuple[list[IndexPoint], list[int]]:
    """Store one batch as documents of CHUNKS_PER_DOCUMENT chunks; returns their index points
    and BM25 lengths."""
    now = utcnow()
    terms = rt.index.term_counts([text for _, text, _ in rows])
    chunk_rows, points, docs = [], [], {}
    for offset, ((_, text, vector), term_count) in enumerate(zip(rows, terms, strict=True)):
        n = first + offset
        document_id = f"d{n // CHUNKS_PER_DOCUMENT:09d}"
        docs[document_id] = docs.get(document_id, 0) + 1
        chunk_id, point_id = f"c{n:031d}", n + 1
        chunk_rows.append(
            {
                "id": chunk_id,
                "point_id": point_id,
                "document_id": document_id,
                "collection": COLLECTION,
                "position": n % CHUNKS_PER_DOCUMENT,
                "text": text,
                "token_count": len(text.split()),
                "term_count": term_count,
                "metadata": {"source": f"{document_id}.txt"},
                "vector": vector.tobytes(),
            }
        )
        payload = {"document_id": document_id, "chunk_id": chunk_id, "content_hash": document_id}
        points.append(IndexPoint(point_id, vector, text, payload))
    with rt.store.engine.begin() as conn:
        known = set(
            conn.scalars(select(documents.c.id).where(documents.c.id.in_(list(docs)))).all()
        )
        fresh = [d for d in docs if d not in known]
        if fresh:
            conn.execute(
                insert(contents), [{"content_hash": d, "data": b"synthetic"} for d in fresh]
            )
            conn.execute(
                insert(documents),
                [
                    {
                        "id": d,
                        "collection": COLLECTION,
                        "source": f"{d}.txt",
                        "content_hash": d,
                        "media_type": "text/plain",
                        "size_bytes": 0,
                        "status": "ready",
                        "chunk_count": CHUNKS_PER_DOCUMENT,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for d in fresh
                ],
            )
            conn.execute(
                insert(index_log),
                [
                    {
                        "collection": COLLECTION,
                        "document_id": d,
                        "content_hash": d,
                        "created_at": now,
                    }
                    for d in fresh
                ],
            )
        conn.execute(insert(chunks), chunk_rows)
    return points, terms


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="BEIR SciFact folder (texts)")
    parser.add_argument("--chunks", type=int, required=True, help="how many chunks")
    parser.add_argument("--home", type=Path, required=True, help="ragline home to fill (new)")
    args = parser.parse_args()
    started = time.perf_counter()
    build(Settings(home=args.home), args.data, args.chunks)
    print(f"{args.chunks:,} chunks in {time.perf_counter() - started:.0f} s: {args.home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
