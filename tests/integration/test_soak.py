"""A short, bounded soak: bench/soak.py's mixed workload against a real `ragline serve`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
DOCS = Path(__file__).parent.parent / "fixtures" / "docs" / "markdown"


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_thirty_clients_for_fifteen_seconds_get_no_errors_and_every_upload_ends_ready(
    tmp_path: Path, llm_base_url: str, model_cache: Path
) -> None:
    """30 concurrent clients (retrieval, cached and fresh answers, JSON and SSE, uploads,
    listings, traces, feedback; one key in ten rate limited) for 15 s against `ragline serve`
    with auth on, while collections named like the index's own files get documents that are
    searched and deleted again (chaos): every response is 2xx or 429 (429s do occur), no
    connection error or timeout, every chaos document becomes ready, every upload job ends done
    and its document ready, the index catches up, the server logs no traceback and stops
    cleanly, and its RSS grows by less than 100 MiB."""
    out = tmp_path / "soak.json"
    soak = load_soak()
    exit_code = soak.main(
        ["--clients", "30", "--duration", "15", "--think", "0.5", "--llm-clients", "1",
         "--hot-questions", "1", "--max-tokens", "8", "--limited-rate", "1/second",
         "--docs", str(DOCS), "--llm-base-url", llm_base_url, "--model-cache", str(model_cache),
         "--server-env", "RAGLINE_GENERATION__MAX_CONTEXT_TOKENS=200",  # one chunk: quick answers
         "--drain", "60", "--llm-timeout", "120", "--progress-every", "5", "--hostile-names",
         "--home", str(tmp_path / "home"), "--out", str(out)]
    )  # fmt: skip
    results = json.loads(out.read_text())
    total, ingestion, memory = results["total"], results["ingestion"], results["memory"]
    assert total["errors"] == 0 and exit_code == 0, results["error_examples"]
    assert total["rate_limited"] > 0
    assert results["endpoints"]["upload_text"]["requests"] > 0
    assert results["endpoints"]["chaos_delete"]["requests"] >= 3  # a few hostile names in turn
    assert set(ingestion["jobs"]) == {"done"} and set(ingestion["documents"]) == {"ready"}
    assert ingestion["index_pending_after"] == 0
    assert results["server"]["tracebacks"] == 0 and results["server"]["shutdown_s"] < 30
    assert memory["serve_end_mib"] - memory["serve_start_mib"] < 100, memory
