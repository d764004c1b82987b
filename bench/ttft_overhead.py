"""ragline's overhead on time to first token, against the LLM server called directly.

For each question, in the same run and against the same llama.cpp server:
- ragline: `QueryService.stream` from the call until the first token event (query embedding,
  hybrid retrieval, prompt assembly, tracing, then the LLM's own time to first token);
- direct: the very messages ragline sent (read back from the trace), streamed straight to the
  server's `/v1/chat/completions` until the first content delta.
Before each measurement a different one-token prompt is sent, so that neither side finds the
other's prompt in llama.cpp's prefix cache; the two sides alternate which goes first. The
overhead is the median of the paired differences. The LLM's own TTFT varies by ±20 % from one
call to the next, far more than the overhead, so the script also reports what ragline adds in
process: its time to first token minus its LLM client's (from sending the request to the first
delta), i.e. embedding, retrieval, prompt assembly and tracing.

    python bench/ttft_overhead.py                 # ingests samples/, 30 questions
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ragline.config import Settings
from ragline.factory import Runtime
from ragline.tracing import attributes as attr

TOPICS = (
    "How do I report a security vulnerability",
    "What is the CLAPnq dataset",
    "Which inference parameters matter",
    "What does the table show",
    "Who wrote the document",
    "How is the model evaluated",
)
DETAILS = ("", " in detail", " briefly", " with sources", " for beginners")
QUESTIONS = [f"{topic}{detail}?" for topic in TOPICS for detail in DETAILS]


def first_token_ms(rt: Runtime, question: str) -> tuple[float, str, float]:
    """ragline's time to first token, the trace id, and what ragline added to the LLM client's
    own time to first token (measured from the request it sends)."""
    started = time.perf_counter()
    first, trace_id, llm_ttft = None, "", 0.0
    for name, data in rt.query_service.stream(question, "bench"):
        if name == "token" and first is None and data["text"]:
            first = (time.perf_counter() - started) * 1000
        if name == "done":
            trace_id = data["trace_id"]
            llm_ttft = data["timings_ms"]["time_to_first_token"]
    if first is None:
        raise SystemExit(f"no token for {question!r}")
    return first, trace_id, first - llm_ttft


def sent_messages(rt: Runtime, trace_id: str) -> list[dict[str, str]]:
    rt.tracing.flush()
    spans = rt.traces.spans(trace_id)
    llm = next(s["attributes"] for s in spans if s["name"] == attr.LLM)
    messages = []
    for i in range(8):
        role = llm.get(f"{attr.LLM_INPUT_MESSAGES}.{i}.message.role")
        if role is None:
            break
        content = llm[f"{attr.LLM_INPUT_MESSAGES}.{i}.message.content"]
        messages.append({"role": role, "content": content})
    return messages


def direct_ms(
    client: httpx.Client, model: str, messages: list[dict[str, str]], max_tokens: int
) -> float:
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens,
            "temperature": 0.0}  # fmt: skip
    started = time.perf_counter()
    with client.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0].get("delta", {})
            if delta.get("content"):
                return (time.perf_counter() - started) * 1000
    raise SystemExit("the server streamed no content")


def reset(client: httpx.Client, model: str, n: int) -> None:
    """A different short prompt, so the next one starts with an empty prefix cache."""
    body = {"model": model, "max_tokens": 1,
            "messages": [{"role": "user", "content": f"Count to {n} in French."}]}  # fmt: skip
    client.post("/chat/completions", json=body).raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=Path, default=Path("samples"), help="folder to ingest")
    parser.add_argument("--questions", type=int, default=30, help="questions [30]")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ttft_overhead.json"))
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ragline-bench-ttft-"))
    settings = Settings(home=home, cache={"enabled": False}, tracing={"sample_rate": 1.0})
    with Runtime(settings) as rt:
        for path in sorted(p for p in args.docs.rglob("*") if p.is_file()):
            rt.store.submit("bench", path.name, path.read_bytes(), 3)
        worker = rt.worker()
        while worker.run_once() is not None:
            pass
        rt.sync_index()
        rt.index_sync.optimize()
        base_url, model = rt.chat.base_url, rt.settings.llm.model
        client = httpx.Client(base_url=base_url, timeout=120)
        first_token_ms(rt, "warm up the model and the embedder")
        pairs = []
        for n, question in enumerate((QUESTIONS * 2)[: args.questions]):
            reset(client, model, n)
            if n % 2:
                ours, trace_id, added = first_token_ms(rt, question)
                reset(client, model, n + 1000)
                theirs = direct_ms(
                    client, model, sent_messages(rt, trace_id), settings.llm.max_tokens
                )
            else:  # direct first needs ragline's messages: take them from a run made before
                _, trace_id, _ = first_token_ms(rt, question)
                messages = sent_messages(rt, trace_id)
                reset(client, model, n + 2000)
                theirs = direct_ms(client, model, messages, settings.llm.max_tokens)
                reset(client, model, n + 3000)
                ours, _, added = first_token_ms(rt, question)
            pairs.append({"question": question, "ragline_ms": round(ours, 2),
                          "direct_ms": round(theirs, 2), "added_ms": round(added, 2)})  # fmt: skip
            print(pairs[-1], flush=True)
    overhead = [p["ragline_ms"] - p["direct_ms"] for p in pairs]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "questions": len(pairs),
        "ragline_ttft_p50_ms": round(statistics.median(p["ragline_ms"] for p in pairs), 2),
        "direct_ttft_p50_ms": round(statistics.median(p["direct_ms"] for p in pairs), 2),
        "overhead_p50_ms": round(statistics.median(overhead), 2),
        "overhead_p90_ms": round(sorted(overhead)[int(0.9 * (len(overhead) - 1))], 2),
        "added_before_llm_p50_ms": round(statistics.median(p["added_ms"] for p in pairs), 2),
        "added_before_llm_p99_ms": round(max(p["added_ms"] for p in pairs), 2),
        "pairs": pairs,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "pairs"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
