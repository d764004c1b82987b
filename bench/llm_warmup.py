"""The first question's time to first token after start-up, with and without the LLM warm-up.

Each trial is a fresh `Runtime` on the embedded default with the local llama.cpp server (no
`llm.base_url`), so a fresh server process: it starts the server (as `ragline serve` does),
then, for a warm trial, runs `Runtime.warm_llm` (one token), then asks the same first question
and a second one. Cold and warm trials alternate, which goes first alternating too. Figures:
the LLM's time to first token (`timings_ms.time_to_first_token`, from the request to the first
delta) of the first and second questions, and the warm-up's own duration.

The GGUF file is in the OS page cache here (other processes use it), so this measures the
first inference's one-time costs in llama.cpp, not reading the weights from disk, which a
freshly booted node also pays and which warming hides as well.

    python bench/llm_warmup.py --trials 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ragline.config import Settings
from ragline.factory import Runtime

SAMPLE = Path(__file__).parent.parent / "samples" / "markitdown_SECURITY.md"
FIRST = "How do I report a security vulnerability?"
SECOND = "Which email address receives security reports?"


def trial(settings: Settings, warm: bool) -> dict[str, Any]:
    with Runtime(settings) as rt:
        started = time.perf_counter()
        rt.chat  # noqa: B018 (starts the local server)
        start_s = time.perf_counter() - started
        warm_s = rt.warm_llm() if warm else None
        first = rt.query_service.query(FIRST, "bench")["timings_ms"]
        second = rt.query_service.query(SECOND, "bench")["timings_ms"]
    return {
        "warm": warm,
        "server_start_s": round(start_s, 2),
        "warm_up_s": round(warm_s, 3) if warm_s is not None else None,
        "first_ttft_ms": first["time_to_first_token"],
        "second_ttft_ms": second["time_to_first_token"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="pairs of cold and warm trials")
    parser.add_argument("--out", type=Path, default=Path("bench/results/llm_warmup.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), llm={"max_tokens": 16, "temperature": 0.0})
        with Runtime(settings) as rt:
            rt.store.submit("bench", SAMPLE.name, SAMPLE.read_bytes(), 3)
            worker = rt.worker()
            while worker.run_once() is not None:
                pass
            rt.sync_index()
        runs = []
        for number in range(args.trials):
            for warm in (number % 2 == 1, number % 2 == 0):
                runs.append(trial(settings, warm))
                print(json.dumps(runs[-1]), file=sys.stderr)
    summary = {}
    for warm in (False, True):
        chosen = [r for r in runs if r["warm"] is warm]
        summary["warm" if warm else "cold"] = {
            "first_ttft_ms_median": round(statistics.median(r["first_ttft_ms"] for r in chosen)),
            "second_ttft_ms_median": round(statistics.median(r["second_ttft_ms"] for r in chosen)),
        }
    warm_ups = [r["warm_up_s"] for r in runs if r["warm_up_s"] is not None]
    summary["warm"]["warm_up_s_median"] = round(statistics.median(warm_ups), 2)
    print(json.dumps(summary, indent=2))
    args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
