"""Load and soak on loopback: many concurrent clients, a mixed workload, memory sampled.

Starts `ragline serve` in a fresh home (auth on, two API keys), uploads a corpus through the
API, then runs N concurrent clients for D seconds. Each client loops: pick an action, send it,
wait a random think time (uniform 0..2x --think). The mix, per client action:

    45 %  POST /v1/retrieve, varied questions (a third unique, so the embedder works)
     5 %  POST /v1/retrieve on the uploads collection (its version changes with every upload)
    20 %  POST /v1/query, one of a few hot questions (answer-cache hits, warmed before the clock)
     5 %  GET  /v1/collections/uploads/documents          3 %  GET /v1/collections
     4 %  GET  /v1/jobs/{an upload's job}                  4 %  GET /v1/traces?limit=20
     4 %  GET  /v1/traces/{a trace seen >= 2 s ago}        4 %  POST /v1/feedback on such a trace
     2 %  POST text to the uploads collection (JSON; a quarter replace an earlier one's content)
     1 %  POST a real file (multipart; after the first upload of each file, a duplicate)
    and --llm-clients of the clients (default 2) ask only fresh questions (no answer cache),
          alternating JSON and Server-Sent Events, each waiting for its answer (the local
          LLM answers one at a time); answers capped at --max-tokens
     +    GET /healthz and /readyz every 2 s (liveness and readiness probes), GET /metrics
          every 5 s (Prometheus), GET /docs every 2 s (an async route, for comparison: the
          event loop's own delay, without the thread pool that sync routes wait for)

With --hostile-names, one more task uploads to, searches and deletes from collections named like
the index's own files (`sync-cursor`, `meta`, ...), in turn, throughout the load.

One client in ten uses a second key limited to --limited-rate, so 429s do occur; a client that
gets 429, or 503 `overloaded` from admission control (`shed`), waits Retry-After (at most 5 s).
Anything else that is not 2xx, a connection error, a timeout or an SSE `error` event counts as
an error and is printed with examples.

The server's RSS (its own and its children's, i.e. the llama.cpp server) is read from /proc every
second. The growth trend is the least-squares slope of the serve process's RSS over the second
half of the load (MiB/min). After the load, every upload job is polled until it ends (at most
--drain seconds): all should be done and every uploaded document ready.

    python bench/soak.py                                  # 200 clients x 120 s, writes the JSON
    python bench/soak.py --clients 30 --duration 15 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CORPUS = "soak"
UPLOADS = "uploads"
CORPUS_DOCUMENTS = f"/v1/collections/{CORPUS}/documents"
UPLOADS_DOCUMENTS = f"/v1/collections/{UPLOADS}/documents"
SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx")
TOPICS = (
    "How do I report a security vulnerability", "What is the CLAPnq dataset",
    "Which inference parameters matter", "What does the table show", "Who wrote the document",
    "What is AutoGen", "How are answers grounded in passages", "What is the outline of the PDF",
    "Where is the data hosted", "What does MSRC stand for", "How is the benchmark evaluated",
    "What licence covers the files", "Which models were compared", "What is a long-form answer",
)  # fmt: skip
DETAILS = ("", "in detail", "briefly", "with sources", "for beginners", "and why", "step by step",
           "in one sentence", "with an example", "for a manager")  # fmt: skip
MIX = {
    "retrieve": 45, "retrieve_uploads": 5, "query_cached": 20, "list_documents": 5,
    "list_collections": 3, "get_job": 4, "list_traces": 4, "get_trace": 4, "feedback": 4,
    "upload_text": 2, "upload_file": 1,
}  # fmt: skip
ERROR_EXAMPLES = 5
# --hostile-names: collections named like the index's own files and collections (issue 19's
# audit: `sync-cursor` stopped the index sync for every tenant, `sync-cursor.tmp` broke deletes)
HOSTILE_NAMES = ("sync-cursor", "sync-cursor.tmp", "meta", "ragline_meta", "collections",
                 "index", "ragline__meta", "tmp")  # fmt: skip
MODEL_CACHE = Path(  # exported embedding models, shared by runs (and by pytest's session cache)
    os.environ.get("RAGLINE_EMBEDDING__CACHE_DIR")
    or Path(tempfile.gettempdir()) / "ragline-bench-models"
)


# ---------------------------------------------------------------------------- measurements


@dataclass
class Stats:
    """Per-endpoint latencies and outcomes ('200', '429', 'exc:ReadTimeout', 'sse_error')."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    ttft: list[float] = field(default_factory=list)
    readiness: Counter[str] = field(default_factory=Counter)  # /readyz body: ok, degraded, ...

    def record(self, endpoint: str, outcome: str, seconds: float, detail: str = "") -> None:
        self.latencies[endpoint].append(seconds * 1000)
        self.outcomes[endpoint][outcome] += 1
        if is_error(outcome) and len(self.examples[endpoint]) < ERROR_EXAMPLES:
            self.examples[endpoint].append(f"{outcome}: {detail[:300]}")

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.outcomes.values():
            total.update(counts)
        return total


def is_error(outcome: str) -> bool:
    """429 (rate limited) and 503 `overloaded` (admission control) are the service refusing on
    purpose, with Retry-After: counted apart, not as errors."""
    return not (outcome.startswith("2") or outcome in ("429", "shed"))


def outcome_of(response: httpx.Response) -> str:
    if response.status_code == 503 and b'"overloaded"' in response.content:
        return "shed"
    return str(response.status_code)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else 0.0


def descendants(pid: int) -> list[int]:
    """Child processes, recursively, from /proc/<pid>/task/*/children."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pid: int) -> dict[str, float]:
    """CPU seconds so far: serve, its children (llama.cpp), this load generator, the machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "serve": process_cpu_s(pid),
        "children": sum(process_cpu_s(child) for child in descendants(pid)),
        "load_generator": own.ru_utime + own.ru_stime,
        "machine": machine_busy_s(),
    }


def cpu_use(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used on average by each, and by every other process on the machine."""
    used = {name: (after[name] - before[name]) / seconds for name in before}
    used["other_processes"] = (
        used["machine"] - used["serve"] - used["children"] - used["load_generator"]
    )
    return {f"{name}_cores": round(value, 2) for name, value in used.items()}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass
class MemorySampler:
    pid: int
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, serve, children

    def sample(self, t: float) -> None:
        children = sum(rss_mib(child) for child in descendants(self.pid))
        self.samples.append((round(t, 2), round(rss_mib(self.pid), 1), round(children, 1)))


# ---------------------------------------------------------------------------- the server


def start_server(home: Path, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAGLINE_HOME": str(home),
        "RAGLINE_SERVER__PORT": str(port),
        "RAGLINE_SERVER__AUTH": "true",
        "RAGLINE_LLM__MAX_TOKENS": str(args.max_tokens),
        "RAGLINE_EMBEDDING__CACHE_DIR": str(args.model_cache),
    }
    if args.llm_base_url:
        env["RAGLINE_LLM__BASE_URL"] = args.llm_base_url
    env.update(setting.split("=", 1) for setting in args.server_env)
    log = (home / "serve.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ragline.cli", "serve"], env=env, stdout=log, stderr=log
    )


def create_keys(home: Path, limited_rate: str) -> tuple[str, str]:
    """Two API keys, made as `ragline keys create` makes them (only their hashes are stored):
    one with a limit out of the way, one limited to `limited_rate`."""
    from ragline.store import create_store_engine, migrate
    from ragline.store.keys import KeyStore

    engine = create_store_engine(f"sqlite:///{(home / 'ragline.db').resolve()}")
    migrate(engine)
    keys = KeyStore(engine)
    _, main = keys.create("soak-main", None, "1000000/minute")
    _, limited = keys.create("soak-limited", None, limited_rate)
    engine.dispose()
    return main, limited


async def wait_ready(
    http: httpx.AsyncClient, process: subprocess.Popen[bytes], limit: float
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"ragline serve exited with {process.returncode}; see serve.log")
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get("/readyz", timeout=5)).status_code == 200:
                return
        await asyncio.sleep(0.5)
    raise SystemExit("ragline serve did not become ready")


def stop_server(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    return {"exit_code": code, "shutdown_s": round(time.monotonic() - started, 2)}


def log_problems(home: Path) -> dict[str, Any]:
    """Tracebacks and ERROR lines the server logged (its log level is WARNING)."""
    text = (home / "serve.log").read_text(errors="replace")
    lines = text.splitlines()
    errors = [line for line in lines if " ERROR " in line or line.startswith("ERROR")]
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "error_lines": len(errors),
        "warning_lines": sum(" WARNING " in line for line in lines),
        "examples": errors[:ERROR_EXAMPLES],
    }


# ---------------------------------------------------------------------------- the workload


def corpus_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def text_passages(files: list[Path]) -> list[str]:
    """Paragraph-sized passages of the text files (what text uploads are made of)."""
    passages = []
    for path in files:
        if path.suffix.lower() in (".md", ".markdown", ".txt"):
            text = path.read_text(errors="replace")
            passages += [p.strip() for p in text.split("\n\n") if len(p.strip()) > 200]
    return passages or ["ragline soak test passage. " * 20]


@dataclass
class Load:
    """What the clients share."""

    http: httpx.AsyncClient
    keys: tuple[str, str]  # (main, rate-limited)
    args: argparse.Namespace
    files: list[Path]
    passages: list[str]
    stats: Stats = field(default_factory=Stats)
    deadline: float = 0.0
    started: float = 0.0
    job_ids: list[str] = field(default_factory=list)
    document_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    trace_ids: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=500))
    sequence: itertools.count[int] = field(default_factory=itertools.count)
    llm_in_flight: int = 0
    llm_turns: int = 0

    def headers(self, limited: bool) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[1] if limited else self.keys[0]}"}

    def old_trace(self, rng: random.Random) -> str | None:
        cutoff = time.monotonic() - 2.0
        old = [t for at, t in self.trace_ids if at <= cutoff]
        return rng.choice(old) if old else None


async def call(
    load: Load, endpoint: str, method: str, url: str, limited: bool, **kwargs: Any
) -> httpx.Response | None:
    """One request, recorded; None on a connection error or timeout. The trace id of a
    successful answer or retrieval is kept for later trace reads and feedback."""
    started = time.perf_counter()
    try:
        response = await load.http.request(method, url, headers=load.headers(limited), **kwargs)
    except httpx.HTTPError as exc:
        load.stats.record(
            endpoint, f"exc:{type(exc).__name__}", time.perf_counter() - started, repr(exc)
        )
        return None
    elapsed, outcome = time.perf_counter() - started, outcome_of(response)
    load.stats.record(endpoint, outcome, elapsed, response.text if is_error(outcome) else "")
    if response.is_success and url in ("/v1/query", "/v1/retrieve"):
        load.trace_ids.append((time.monotonic(), response.json()["trace_id"]))
    return response


async def stream_query(load: Load, question: str, limited: bool) -> httpx.Response | None:
    """POST /v1/query with stream=true: read every event; an `error` event is an error."""
    started = time.perf_counter()
    body = {"question": question, "collection": CORPUS, "stream": True}
    first_token, failure = None, ""
    try:
        async with load.http.stream(
            "POST",
            "/v1/query",
            json=body,
            headers=load.headers(limited),
            timeout=load.args.llm_timeout,
        ) as response:
            if not response.is_success:
                failure = (await response.aread()).decode(errors="replace")
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif not line.startswith("data: "):
                    continue
                elif event == "token" and first_token is None:
                    first_token = time.perf_counter() - started
                elif event == "error":
                    failure = line[6:]
                elif event == "done":
                    load.trace_ids.append((time.monotonic(), json.loads(line[6:])["trace_id"]))
    except httpx.HTTPError as exc:
        load.stats.record(
            "query_llm_stream",
            f"exc:{type(exc).__name__}",
            time.perf_counter() - started,
            repr(exc),
        )
        return None
    if first_token is not None:
        load.stats.ttft.append(first_token * 1000)
    status = outcome_of(response)
    outcome = "sse_error" if failure and response.is_success else status
    load.stats.record("query_llm_stream", outcome, time.perf_counter() - started, failure)
    return response


async def fresh_llm_question(
    load: Load, rng: random.Random, limited: bool
) -> httpx.Response | None:
    n = next(load.sequence)
    question = f"{rng.choice(TOPICS)} {rng.choice(DETAILS)} (soak question {n})"
    load.llm_in_flight += 1
    load.llm_turns += 1
    try:
        if load.llm_turns % 2:
            return await stream_query(load, question, limited)
        body = {"question": question, "collection": CORPUS}
        return await call(
            load,
            "query_llm",
            "POST",
            "/v1/query",
            limited,
            json=body,
            timeout=load.args.llm_timeout,
        )
    finally:
        load.llm_in_flight -= 1


def varied_question(rng: random.Random, load: Load) -> str:
    question = f"{rng.choice(TOPICS)} {rng.choice(DETAILS)}".strip()
    if rng.random() < 1 / 3:  # unique: a retrieval-cache and embedding-cache miss
        question += f" #{next(load.sequence)}"
    return question


async def upload_text(
    load: Load, rng: random.Random, mine: list[str], limited: bool
) -> httpx.Response | None:
    """A new note, or (a quarter of the time) new content for one of this client's notes."""
    n = next(load.sequence)
    source = rng.choice(mine) if mine and rng.random() < 0.25 else f"note-{n}.md"
    text = f"# Soak note {n}\n\n" + "\n\n".join(
        rng.sample(load.passages, min(2, len(load.passages)))
    )
    response = await call(
        load,
        "upload_text",
        "POST",
        UPLOADS_DOCUMENTS,
        limited,
        json={"text": text, "source": source},
    )
    if source not in mine:
        mine.append(source)
    return response


async def upload_file(load: Load, rng: random.Random, limited: bool) -> httpx.Response | None:
    path = rng.choice(load.files)
    files = {"files": (path.name, path.read_bytes())}
    return await call(load, "upload_file", "POST", UPLOADS_DOCUMENTS, limited, files=files)


def note_submission(load: Load, response: httpx.Response | None) -> None:
    if response is None or not response.is_success:
        return
    for document in response.json()["documents"]:
        load.document_ids.add(document["document_id"])
        if document["job_id"]:
            load.job_ids.append(document["job_id"])
        else:
            load.duplicates += 1


async def act(
    load: Load, action: str, rng: random.Random, mine: list[str], limited: bool
) -> httpx.Response | None:
    hot = load.args.hot_questions
    if action == "retrieve":
        body = {"question": varied_question(rng, load), "collection": CORPUS}
        return await call(load, action, "POST", "/v1/retrieve", limited, json=body)
    if action == "retrieve_uploads":
        body = {"question": varied_question(rng, load), "collection": UPLOADS}
        return await call(load, action, "POST", "/v1/retrieve", limited, json=body)
    if action == "query_cached":
        body = {"question": TOPICS[rng.randrange(hot)], "collection": CORPUS}
        return await call(load, action, "POST", "/v1/query", limited, json=body)
    if action == "list_documents":
        return await call(load, action, "GET", UPLOADS_DOCUMENTS, limited)
    if action == "list_collections":
        return await call(load, action, "GET", "/v1/collections", limited)
    if action == "get_job" and load.job_ids:
        return await call(load, action, "GET", f"/v1/jobs/{rng.choice(load.job_ids)}", limited)
    if action == "list_traces":
        return await call(load, action, "GET", "/v1/traces", limited, params={"limit": 20})
    trace_id = load.old_trace(rng) if action in ("get_trace", "feedback") else None
    if action == "get_trace" and trace_id:
        return await call(load, action, "GET", f"/v1/traces/{trace_id}", limited)
    if action == "feedback" and trace_id:
        body = {"trace_id": trace_id, "value": rng.choice([0, 1]), "comment": "soak"}
        return await call(load, action, "POST", "/v1/feedback", limited, json=body)
    if action == "upload_text":
        return await upload_text(load, rng, mine, limited)
    if action == "upload_file":
        return await upload_file(load, rng, limited)
    return None  # nothing to act on yet (no job or old trace so far)


async def client(load: Load, number: int) -> None:
    rng = random.Random(load.args.seed * 100_003 + number)
    limited = number % 10 == 9
    actions, weights = list(MIX), list(MIX.values())
    mine: list[str] = []
    await asyncio.sleep(rng.uniform(0, 2 * load.args.think))  # stagger the start
    while time.monotonic() < load.deadline:
        if number < load.args.llm_clients:
            response = await fresh_llm_question(load, rng, limited)
        else:
            action = rng.choices(actions, weights)[0]
            response = await act(load, action, rng, mine, limited)
            if action.startswith("upload"):
                note_submission(load, response)
        if response is not None and response.status_code in (429, 503):
            await asyncio.sleep(min(5.0, float(response.headers.get("Retry-After", "1"))))
        await asyncio.sleep(rng.uniform(0, 2 * load.args.think))


async def hostile_collections(load: Load) -> None:
    """Chaos beside the load: in turn, each collection named like an index internal gets a
    document, is searched once it is ready, and loses the document again. Every step must
    succeed, and the rest of the load must not notice."""
    for n in itertools.count():
        if time.monotonic() >= load.deadline:
            return
        name = HOSTILE_NAMES[n % len(HOSTILE_NAMES)]
        body = {"text": f"Chaos note {n} in {name}: the quarterly audit.", "source": f"c{n}.txt"}
        submitted = await call(
            load, "chaos_upload", "POST", f"/v1/collections/{name}/documents", False, json=body
        )
        if submitted is None or not submitted.is_success:
            continue
        document_id = submitted.json()["documents"][0]["document_id"]
        await wait_document_ready(load, document_id, until=load.deadline + 30)
        question = {"question": "the quarterly audit", "collection": name}
        await call(load, "chaos_retrieve", "POST", "/v1/retrieve", False, json=question)
        await call(load, "chaos_delete", "DELETE", f"/v1/documents/{document_id}", False)


async def wait_document_ready(load: Load, document_id: str, until: float) -> None:
    """Poll a document until it is ready (retrievable); a document still not ready at `until`
    is recorded as an error of its own."""
    started = time.perf_counter()
    status = ""
    while time.monotonic() < until:
        response = await load.http.get(f"/v1/documents/{document_id}", headers=load.headers(False))
        status = response.json().get("status", str(response.status_code))
        if status in ("ready", "failed"):
            break
        await asyncio.sleep(0.2)
    outcome = "200" if status == "ready" else f"not_ready:{status}"
    load.stats.record("chaos_ready", outcome, time.perf_counter() - started, document_id)


async def probe(load: Load, endpoint: str, path: str, every: float) -> None:
    """A probe (liveness, readiness) or a Prometheus scrape: no key, a fixed period."""
    while time.monotonic() < load.deadline:
        started = time.perf_counter()
        try:
            response = await load.http.get(path, timeout=10)
            outcome, detail = str(response.status_code), response.text
            if endpoint == "readyz":
                load.stats.readiness[readiness(response)] += 1
        except httpx.HTTPError as exc:
            outcome, detail = f"exc:{type(exc).__name__}", repr(exc)
        load.stats.record(endpoint, outcome, time.perf_counter() - started, detail)
        await asyncio.sleep(every)


def readiness(response: httpx.Response) -> str:
    """'ok', 'unavailable', or 'degraded' with the checks that failed and why."""
    try:
        body = response.json()
    except ValueError:
        return f"http {response.status_code}"
    failed = [
        f"{name}: {check.get('error') or check.get('status')}"
        for name, check in body.get("checks", {}).items()
        if not check.get("ok", True)
    ]
    return body.get("status", "?") + (f" ({'; '.join(failed)})" if failed else "")


async def sample_memory(load: Load, sampler: MemorySampler, stop: asyncio.Event) -> None:
    last_report = time.monotonic()
    while not stop.is_set():
        sampler.sample(time.monotonic() - load.started)
        if time.monotonic() - last_report >= load.args.progress_every:
            last_report = time.monotonic()
            report_progress(load, sampler)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


def report_progress(load: Load, sampler: MemorySampler) -> None:
    totals = load.stats.totals()
    elapsed = time.monotonic() - load.started
    done = sum(totals.values())
    errors = sum(n for outcome, n in totals.items() if is_error(outcome))
    _, serve, children = sampler.samples[-1]
    print(
        f"[{elapsed:6.1f} s] {done:7d} requests ({done / max(elapsed, 1e-9):6.1f}/s)  "
        f"429: {totals['429']:5d}  shed: {totals['shed']:4d}  errors: {errors:4d}  LLM in flight: {load.llm_in_flight:2d}  "
        f"upload jobs: {len(load.job_ids):4d}  RSS serve {serve:6.1f} MiB, "
        f"children {children:6.1f} MiB  load avg {load_average():.1f}",
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------------------- setup and end


async def prepare(load: Load, docs: list[Path]) -> None:
    """Corpus uploaded and indexed, one document in the uploads collection, hot answers cached."""
    headers = load.headers(False)
    for path in docs:
        files = {"files": (path.name, path.read_bytes())}
        response = await load.http.post(CORPUS_DOCUMENTS, headers=headers, files=files)
        response.raise_for_status()
        load.job_ids += [d["job_id"] for d in response.json()["documents"] if d["job_id"]]
    first_note = {"text": "\n\n".join(load.passages[:3]), "source": "first.md"}
    first = await load.http.post(UPLOADS_DOCUMENTS, headers=headers, json=first_note)
    first.raise_for_status()
    note_submission(load, first)
    unfinished = await drain_jobs(load, list(load.job_ids), 600)
    if unfinished:
        raise SystemExit(f"the corpus did not ingest: {unfinished}")
    await wait_index_synced(load, 120)
    for question in TOPICS[: load.args.hot_questions]:
        await cache_answer(load, question)


async def cache_answer(load: Load, question: str, attempts: int = 3) -> None:
    """Ask once so the answer is cached; an LLM timeout (a busy machine) is retried."""
    body = {"question": question, "collection": CORPUS}
    for attempt in range(1, attempts + 1):
        response = await load.http.post(
            "/v1/query", json=body, headers=load.headers(False), timeout=load.args.llm_timeout
        )
        if response.is_success or attempt == attempts or response.status_code < 500:
            response.raise_for_status()
            return
        print(f"caching {question!r}: {response.status_code}, again", file=sys.stderr, flush=True)


async def wait_index_synced(load: Load, limit: float) -> int:
    """Seconds until /readyz reports no pending index work (or `limit`); returns what is pending."""
    deadline, pending = time.monotonic() + limit, -1
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            pending = int(
                (await load.http.get("/readyz", timeout=10)).json()["checks"]["index"]["pending"]
            )
            if pending == 0:
                return 0
        await asyncio.sleep(0.5)
    return pending


async def job_states(load: Load, job_ids: list[str]) -> Counter[str]:
    states: Counter[str] = Counter()
    for job_id in job_ids:
        response = await load.http.get(
            f"/v1/jobs/{job_id}", headers=load.headers(False), timeout=30
        )
        states[
            response.json()["status"] if response.is_success else f"http {response.status_code}"
        ] += 1
    return states


async def drain_jobs(load: Load, job_ids: list[str], limit: float) -> Counter[str]:
    """Poll until no job is queued or running, at most `limit` s; returns what is unfinished."""
    deadline = time.monotonic() + limit
    while True:
        states = await job_states(load, sorted(set(job_ids)))
        unfinished = Counter({s: n for s, n in states.items() if s in ("queued", "running")})
        if not unfinished or time.monotonic() > deadline:
            return unfinished
        await asyncio.sleep(1.0)


async def final_checks(load: Load) -> dict[str, Any]:
    started = time.monotonic()
    unfinished = await drain_jobs(load, load.job_ids, load.args.drain)
    drained_s = time.monotonic() - started
    pending = await wait_index_synced(load, 60)
    jobs = await job_states(load, sorted(set(load.job_ids)))
    listed = await load.http.get(UPLOADS_DOCUMENTS, headers=load.headers(False), timeout=60)
    documents = Counter(d["status"] for d in listed.json() if d["document_id"] in load.document_ids)
    collections = (
        await load.http.get("/v1/collections", headers=load.headers(False), timeout=60)
    ).json()
    metrics = (await load.http.get("/metrics", timeout=30)).text
    return {
        "drain_s": round(drained_s, 1),
        "jobs": dict(jobs),
        "unfinished_jobs": dict(unfinished),
        "documents": dict(documents),
        "duplicate_uploads": load.duplicates,
        "index_pending_after": pending,
        "collections": {c["name"]: c["chunks"] for c in collections},
        "spans_dropped": spans_dropped(metrics),
        "cache_lookups": cache_lookups(metrics),
    }


def spans_dropped(exposition: str) -> float:
    """The sum of ragline_spans_dropped over exporters, from the /metrics text."""
    pattern = r"^ragline_spans_dropped(?:_total)?\{[^}]*\} (\S+)"
    return sum(float(value) for value in re.findall(pattern, exposition, re.MULTILINE))


def cache_lookups(exposition: str) -> dict[str, int]:
    """'<cache> <hit|miss>' -> count, from ragline_cache_requests_total (a miss is later stored,
    so misses bound the entries each in-process cache holds)."""
    pattern = r'^ragline_cache_requests_total\{cache="(\w+)",result="(\w+)"\} (\S+)'
    found = re.findall(pattern, exposition, re.MULTILINE)
    return {f"{cache} {result}": int(float(value)) for cache, result, value in found}


# ---------------------------------------------------------------------------- report


def endpoint_table(stats: Stats, seconds: float) -> dict[str, dict[str, Any]]:
    table = {}
    for endpoint in sorted(stats.latencies, key=lambda e: -len(stats.latencies[e])):
        values = stats.latencies[endpoint]
        outcomes = stats.outcomes[endpoint]
        table[endpoint] = {
            "requests": len(values),
            "per_s": round(len(values) / seconds, 2),
            "outcomes": dict(sorted(outcomes.items())),
            "errors": sum(n for o, n in outcomes.items() if is_error(o)),
            "p50_ms": round(percentile(values, 50), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "max_ms": round(max(values), 1),
        }
    return table


def memory_summary(samples: list[tuple[float, float, float]], duration: float) -> dict[str, Any]:
    during = [s for s in samples if s[0] <= duration]
    half = [s for s in during if s[0] >= duration / 2]
    serve = [s[1] for s in during]
    return {
        "serve_start_mib": serve[0],
        "serve_end_mib": serve[-1],
        "serve_max_mib": max(serve),
        "children_start_mib": during[0][2],
        "children_end_mib": during[-1][2],
        "serve_slope_second_half_mib_per_min": round(
            slope_per_minute([(s[0], s[1]) for s in half]), 2
        ),
        "total_slope_second_half_mib_per_min": round(
            slope_per_minute([(s[0], s[1] + s[2]) for s in half]), 2
        ),
        "serve_after_drain_mib": samples[-1][1],
        "samples": len(samples),
    }


def print_report(results: dict[str, Any]) -> None:
    columns = ("requests", "per_s", "p50_ms", "p99_ms", "max_ms", "errors")
    print(f"\n{'endpoint':<18}" + "".join(f"{c:>10}" for c in columns) + "  outcomes")
    for name, row in results["endpoints"].items():
        print(f"{name:<18}" + "".join(f"{row[c]:>10}" for c in columns) + f"  {row['outcomes']}")
    total, memory = results["total"], results["memory"]
    print(
        f"\ntotal {total['requests']} requests, {total['per_s']}/s, "
        f"429: {total['rate_limited']}, shed: {total['shed_overloaded']}, errors: {total['errors']}; streamed TTFT P50/P99: "
        f"{total['stream_ttft_p50_ms']} / {total['stream_ttft_p99_ms']} ms"
    )
    print(
        f"RSS serve {memory['serve_start_mib']} -> {memory['serve_end_mib']} MiB "
        f"(max {memory['serve_max_mib']}), children {memory['children_start_mib']} -> "
        f"{memory['children_end_mib']} MiB; slope over the second half: serve "
        f"{memory['serve_slope_second_half_mib_per_min']} MiB/min, serve + children "
        f"{memory['total_slope_second_half_mib_per_min']} MiB/min"
    )
    for name in ("ingestion", "readiness", "probes_over_k8s_timeout", "cpu", "server"):
        print(f"{name}: {results[name]}")
    for endpoint, examples in results["error_examples"].items():
        print(f"errors on {endpoint}:")
        for example in examples:
            print(f"  {example}")


# ---------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from ragline.models.llm_server import free_port

    docs = corpus_files(args.docs)
    keys = create_keys(home, args.limited_rate)
    port = free_port()
    process = start_server(home, port, args)
    limits = httpx.Limits(
        max_connections=args.clients + 20,
        max_keepalive_connections=args.clients + 20,
        keepalive_expiry=args.keepalive,
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=args.timeout
        ) as http:
            load = Load(http, keys, args, docs, text_passages(docs))
            print(
                f"starting ragline serve on port {port} (home {home})", file=sys.stderr, flush=True
            )
            await wait_ready(http, process, 300)
            print(
                f"uploading {len(docs)} files, caching {args.hot_questions} hot answers",
                file=sys.stderr,
                flush=True,
            )
            await prepare(load, docs)
            load.job_ids.clear()  # only uploads during the load are checked at the end
            load.document_ids.clear()
            results = await measure(load, process, home)
    finally:
        server = stop_server(process)
        print(f"server stopped: {server}", file=sys.stderr, flush=True)
    results["server"] = server | log_problems(home)
    return results


async def measure(load: Load, process: subprocess.Popen[bytes], home: Path) -> dict[str, Any]:
    args = load.args
    sampler, stop = MemorySampler(process.pid), asyncio.Event()
    load.started = time.monotonic()
    load.deadline = load.started + args.duration
    machine = {"load_average_start": load_average()}
    cpu_before = cpu_snapshot(process.pid)
    print(f"load: {args.clients} clients for {args.duration} s", file=sys.stderr, flush=True)
    memory = asyncio.create_task(sample_memory(load, sampler, stop))
    tasks = [client(load, n) for n in range(args.clients)]
    tasks += [
        probe(load, "healthz", "/healthz", 2.0),
        probe(load, "readyz", "/readyz", 2.0),
        probe(load, "metrics", "/metrics", 5.0),
        probe(load, "docs_page", "/docs", 2.0),  # an async route: the event loop's own delay
    ]
    if args.hostile_names:
        tasks.append(hostile_collections(load))
    clients = asyncio.gather(*tasks)
    await asyncio.sleep(args.duration)
    machine |= cpu_use(cpu_before, cpu_snapshot(process.pid), args.duration)
    machine["load_average_end"] = load_average()
    await clients  # requests in flight at the deadline finish (LLM answers may take a while)
    wall = time.monotonic() - load.started
    print(f"load done in {wall:.1f} s; waiting for upload jobs", file=sys.stderr, flush=True)
    ingestion = await final_checks(load)
    stop.set()
    await memory
    return summary(load, sampler, machine, wall, ingestion) | {"home": str(home)}


def summary(
    load: Load,
    sampler: MemorySampler,
    machine: dict[str, float],
    wall: float,
    ingestion: dict[str, Any],
) -> dict[str, Any]:
    """Rates are per second of the configured duration; requests in flight at its end count."""
    args, stats = load.args, load.stats
    totals = stats.totals()
    requests = sum(totals.values())
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "load_wall_s": round(wall, 1),
        "cpu": machine,
        "total": {
            "requests": requests,
            "per_s": round(requests / args.duration, 1),
            "rate_limited": totals["429"],
            "shed_overloaded": totals["shed"],
            "errors": sum(n for o, n in totals.items() if is_error(o)),
            "stream_ttft_p50_ms": round(percentile(stats.ttft, 50), 1) if stats.ttft else None,
            "stream_ttft_p99_ms": round(percentile(stats.ttft, 99), 1) if stats.ttft else None,
        },
        "endpoints": endpoint_table(stats, args.duration),
        "readiness": dict(stats.readiness),
        "probes_over_k8s_timeout": {  # deploy/k8s/api.yaml: liveness 3 s, readiness 5 s
            "healthz_over_3s": sum(v > 3000 for v in stats.latencies["healthz"]),
            "readyz_over_5s": sum(v > 5000 for v in stats.latencies["readyz"]),
        },
        "error_examples": {e: x for e, x in stats.examples.items() if x},
        "memory": memory_summary(sampler.samples, args.duration),
        "ingestion": ingestion,
        "rss_samples": sampler.samples,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--clients", type=int, default=200, help="concurrent clients [200]")
    add("--duration", type=float, default=120, help="seconds of load [120]")
    add("--think", type=float, default=1.0, help="mean pause between a client's requests [1.0 s]")
    add("--llm-clients", type=int, default=2, help="clients asking fresh LLM questions [2]")
    add("--max-tokens", type=int, default=64, help="the server's LLM answer cap [64]")
    add("--hot-questions", type=int, default=3, help="answers cached before the load [3]")
    add("--limited-rate", default="5/second", help="limit of the second key [5/second]")
    add("--docs", type=Path, default=Path("samples"), help="corpus to upload first [samples]")
    add("--llm-base-url", help="use this OpenAI-compatible server instead of starting llama.cpp")
    add("--server-env", action="append", default=[], metavar="NAME=VALUE", help="server setting")
    add("--model-cache", type=Path, default=MODEL_CACHE, help=f"exported models [{MODEL_CACHE}]")
    add("--timeout", type=float, default=60, help="client timeout, non-LLM requests [60 s]")
    add("--keepalive", type=float, default=2, help="client idle-connection expiry [2 s]")
    add("--llm-timeout", type=float, default=300, help="client timeout, LLM requests [300 s]")
    add("--drain", type=float, default=300, help="wait for upload jobs at most [300 s]")
    add("--progress-every", type=float, default=10, help="progress line period [10 s]")
    add("--seed", type=int, default=1, help="random seed [1]")
    add(
        "--hostile-names",
        action="store_true",
        help="chaos: meanwhile, collections named like index internals get a document, are "
        "searched and lose it again, in turn",
    )
    add("--home", type=Path, help="home to create (must not exist) [a temporary folder]")
    add("--out", type=Path, default=Path("bench/results/soak.json"), help="JSON results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.home is not None and args.home.exists():
        raise SystemExit(f"{args.home} exists; the soak needs a fresh home")
    home = args.home or Path(tempfile.mkdtemp(prefix="ragline-soak-"))
    home.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args, home))
    print_report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if results["total"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
