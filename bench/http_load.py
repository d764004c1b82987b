"""HTTP load on loopback with wrk: `/v1/retrieve` (caches off) and cached `/v1/query`.

Measures requests/s and latency percentiles through `ragline serve`, and the gateway's own
overhead: HTTP P50 at one connection minus the in-process `QueryService.retrieve` P50 on the
same index and questions (measured first, in this process, before the server opens the index).

    python bench/http_load.py                      # the bundled samples/
    python bench/http_load.py --docs ../shared/data/docs --duration 20
    python bench/http_load.py --home /tmp/ragline-scaling/chunks-100000 --collection synthetic

With --home, an existing home is served as it is (e.g. a corpus built by bench/synthetic.py) and
the questions are the first words of 35 of its chunks. The server's resident memory (RSS) is
read from /proc after each load, and once more after the files of samples/ were uploaded to a
scratch collection and embedded by the server's own worker threads (the document embedding
session then exists too); those documents are deleted afterwards.

Needs `wrk` (Debian/Ubuntu: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.ingestion.parsers import SUPPORTED_EXTENSIONS
from ragline.models.llm_server import free_port

COLLECTION = "bench"
QUESTIONS = [
    f"{topic} {detail}"
    for topic in ("How do I report a security vulnerability", "What is the CLAPnq dataset",
                  "Which inference parameters matter", "What does the table show", "Who wrote the document")
    for detail in ("", "in detail", "briefly", "with sources", "for beginners", "and why", "step by step")
]  # fmt: skip


def ingest(home: Path, docs: Path) -> None:
    subprocess.run([sys.executable, "-m", "ragline.cli", "ingest", str(docs), "-c", COLLECTION],
                   env={**os.environ, "RAGLINE_HOME": str(home)}, check=False, capture_output=True)  # fmt: skip


def server_rss_mib(process: subprocess.Popen[bytes]) -> float:
    status = Path(f"/proc/{process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def questions_from(home: Path, collection: str) -> list[str]:
    """The first 10 words of 35 chunks spread over the collection."""
    with Runtime(Settings(home=home)) as rt:
        count = rt.index.count(collection)
        ids = [1 + (n * count) // 35 for n in range(35)]
        chunks = rt.store.chunks_by_point_ids(collection, ids)
    return [" ".join(chunk.text.split()[:10]) for chunk in chunks.values()]


def in_process_p50(home: Path, rounds: int, collection: str, questions: list[str]) -> float:
    """Median of QueryService.retrieve in this process, caches off (the reference)."""
    settings = Settings(home=home, cache={"enabled": False})
    with Runtime(settings) as rt:
        rt.sync_index()
        service = rt.query_service
        service.retrieve(questions[0], collection, None)  # load the model
        samples = []
        for i in range(rounds):
            started = time.perf_counter()
            service.retrieve(questions[i % len(questions)], collection, None)
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def start_server(home: Path, port: int, cache: bool, workers: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAGLINE_HOME": str(home), "RAGLINE_SERVER__PORT": str(port),
           "RAGLINE_CACHE__ENABLED": str(cache).lower(),
           "RAGLINE_SERVER__ANONYMOUS_RATE_LIMIT": "1000000/second"}  # fmt: skip
    if not workers:  # the retrieval figures without ingestion threads polling beside them
        env["RAGLINE_SERVER__WORKER_THREADS"] = "0"
    process = subprocess.Popen([sys.executable, "-m", "ragline.cli", "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("ragline serve did not become ready")


def upload_and_wait(port: int, docs: Path) -> int:
    """Upload docs/ to a scratch collection, wait for its jobs, delete the documents; the
    number of documents the server's workers ingested."""
    base, collection = f"http://127.0.0.1:{port}", f"rss-probe-{uuid.uuid4().hex[:8]}"
    files = [p for p in sorted(docs.iterdir()) if p.is_file() and p.suffix in SUPPORTED_EXTENSIONS]
    response = httpx.post(
        f"{base}/v1/collections/{collection}/documents",
        files=[("files", (p.name, p.read_bytes())) for p in files],
        timeout=120,
    )
    response.raise_for_status()
    documents = response.json()["documents"]
    deadline = time.monotonic() + 600
    pending = {d["job_id"] for d in documents if d["job_id"]}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            status = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=30).json()["status"]
            if status in ("done", "dead"):
                pending.discard(job_id)
        time.sleep(0.5)
    if pending:
        raise SystemExit(f"{len(pending)} upload jobs did not finish in 600 s")
    for document in documents:
        httpx.delete(f"{base}/v1/documents/{document['document_id']}", timeout=30)
    return len(documents)


def lua_script(path: str, questions: list[str], folder: Path, collection: str) -> Path:
    bodies = ",\n".join(
        json.dumps(json.dumps({"question": q, "collection": collection})) for q in questions
    )
    script = folder / f"{path.strip('/').replace('/', '_')}.lua"
    script.write_text(
        f"local bodies = {{\n{bodies}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f'  return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, bodies[(i % #bodies) + 1])\n'
        "end\n"
    )
    return script


def wrk(port: int, script: Path, connections: int, duration: int) -> dict[str, float]:
    threads = min(2, connections)
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    figures = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for percentile in ("50", "90", "99"):
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            figures[f"p{percentile}_ms"] = round(
                value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3
            )
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=Path, default=Path("samples"), help="folder to ingest [samples]"
    )
    parser.add_argument("--home", type=Path, help="serve this existing home instead of --docs")
    parser.add_argument("--collection", default=COLLECTION, help="collection queried [bench]")
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run [15]")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections [16]")
    parser.add_argument("--out", type=Path, default=Path("bench/results/http_load.json"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    scratch = Path(tempfile.mkdtemp(prefix="ragline-http-"))
    home, collection, questions = args.home or scratch, args.collection, QUESTIONS
    if args.home is None:
        ingest(home, args.docs)
    else:
        questions = questions_from(home, collection)
    reference_ms = in_process_p50(home, 200, collection, questions)
    results: dict[str, object] = {
        "corpus": str(args.home or args.docs),
        "in_process_retrieve_p50_ms": round(reference_ms, 3),
    }
    port = free_port()
    server = start_server(home, port, cache=False, workers=False)
    try:
        retrieve = lua_script("/v1/retrieve", questions, scratch, collection)
        results["retrieve_1_connection"] = wrk(port, retrieve, 1, args.duration)
        results[f"retrieve_{args.connections}_connections"] = wrk(
            port, retrieve, args.connections, args.duration
        )
        results["serve_rss_mib_after_retrieve"] = round(server_rss_mib(server), 1)
    finally:
        server.terminate()
        server.wait(timeout=60)
    server = start_server(home, port, cache=True, workers=True)
    try:
        body = {"question": questions[0], "collection": collection}
        httpx.post(
            f"http://127.0.0.1:{port}/v1/query", json=body, timeout=300
        ).raise_for_status()  # fill the cache
        cached = lua_script("/v1/query", [questions[0]], scratch, collection)
        results["cached_query_1_connection"] = wrk(port, cached, 1, args.duration)
        results[f"cached_query_{args.connections}_connections"] = wrk(
            port, cached, args.connections, args.duration
        )
        results["serve_rss_mib_after_query"] = round(server_rss_mib(server), 1)
        results["uploaded_documents"] = upload_and_wait(port, Path("samples"))
        results["serve_rss_mib_after_upload"] = round(server_rss_mib(server), 1)
    finally:
        server.terminate()
        server.wait(timeout=60)
    one = results["retrieve_1_connection"]
    assert isinstance(one, dict)
    results["gateway_overhead_p50_ms"] = round(one["p50_ms"] - reference_ms, 3)
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
