"""Prometheus metrics: real requests move the SLO series at /metrics; the worker's port serves
the same catalogue; the catalogue is what deploy/ alerts on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ragline import metrics
from ragline.config import Settings
from ragline.factory import Runtime
from tests.integration.test_api import QUESTION, SECURITY, make_client, upload, wait_ready

CORRUPT = b"%PDF-1.7\n" + b"\x00garbage" * 50


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_move_the_slo_series(settings: Settings) -> None:
    with make_client(settings) as client:
        good = upload(client, "kb", SECURITY).json()["documents"]
        bad = client.post(
            "/v1/collections/kb/documents", files=[("files", ("broken.pdf", CORRUPT))]
        ).json()["documents"]
        wait_ready(client, [d["job_id"] for d in good + bad])
        before = samples(client.get("/metrics").text)
        answer = client.post("/v1/query", json={"question": QUESTION, "collection": "kb"})
        assert answer.status_code == 200, answer.text
        client.post("/v1/query", json={"question": QUESTION, "collection": "kb"})  # cached
        client.post("/v1/retrieve", json={"question": QUESTION, "collection": "kb"})  # cached
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)
    names = {name for name, _ in after}

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for name in metrics.CATALOGUE:  # every catalogued family is exposed
        assert any(n == name or n.startswith(name + "_") for n in names), name
    assert delta("ragline_requests_total", route="query", outcome="ok") == 2
    assert delta("ragline_request_duration_seconds_count", route="query") == 2
    assert delta("ragline_requests_total", route="retrieve", outcome="ok") == 1
    # one real retrieval: the second query and the retrieve were served by the caches
    assert delta("ragline_retrieval_duration_seconds_count") == 1
    assert delta("ragline_embedding_duration_seconds_count", source="query") == 1
    assert delta("ragline_cache_requests_total", cache="retrieval", result="hit") == 1
    assert delta("ragline_llm_time_to_first_token_seconds_count") == 1  # the cached one has none
    assert delta("ragline_chunks_per_request_count") == 1
    returned = delta("ragline_chunks_returned_total")
    assert 1 <= returned <= settings.retrieval.top_n
    assert 0 <= delta("ragline_chunks_cited_total") <= returned
    assert (
        0
        < value(after, "ragline_context_utilisation_ratio_sum")
        <= value(after, "ragline_context_utilisation_ratio_count")
    )
    assert delta("ragline_cache_requests_total", cache="answer", result="hit") == 1
    # ingestion: one document ready, the corrupt PDF dead at once; the queue gauge reads the store
    assert value(after, "ragline_ingest_jobs_total", outcome="ready") >= 1
    assert value(after, "ragline_ingest_jobs_total", outcome="dead") >= 1
    assert value(after, "ragline_ingest_jobs", state="dead") == 1
    assert value(after, "ragline_ingest_jobs", state="queued") == 0
    assert ("ragline_spans_dropped_total", (("exporter", "local"),)) in after


def test_an_unknown_collection_counts_as_an_error_of_the_request(settings: Settings) -> None:
    with make_client(settings) as client:
        before = samples(client.get("/metrics").text)
        response = client.post("/v1/query", json={"question": "anything?", "collection": "nope"})
        assert response.status_code == 404
        after = samples(client.get("/metrics").text)
    key = ("ragline_requests_total", (("outcome", "error"), ("route", "query")))
    assert after.get(key, 0) - before.get(key, 0) == 1


def test_the_worker_serves_metrics_on_its_own_port(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Runtime(settings) as rt:
        metrics.serve_metrics(rt, "127.0.0.1", port)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    scrape = samples(body.decode())
    assert ("ragline_ingest_jobs", (("state", "dead"),)) in scrape
    assert value(scrape, "ragline_ingest_jobs", state="dead") == 0
    assert ("ragline_spans_dropped_total", (("exporter", "local"),)) in scrape


def test_the_deploy_catalogue_is_the_code_catalogue() -> None:
    """tests/deploy checks alerts.yml and the dashboard against its catalogue (names and label
    names): it must be exactly what the code exposes."""
    from tests.deploy.test_alerts import CATALOGUE

    assert set(CATALOGUE) == set(metrics.CATALOGUE)
    for collector in (
        metrics.RETRIEVAL,
        metrics.EMBEDDING,
        metrics.TTFT,
        metrics.REQUEST,
        metrics.CONTEXT_UTILISATION,
        metrics.CHUNKS_PER_REQUEST,
        metrics.REQUESTS,
        metrics.ERRORS,
        metrics.EMPTY_RETRIEVALS,
        metrics.TRUNCATED,
        metrics.CHUNKS_RETURNED,
        metrics.CHUNKS_CITED,
        metrics.CACHE,
        metrics.JOBS,
        metrics.INJECTION_SUSPECTED,
    ):
        (family,) = collector.describe()
        name = family.name + ("_total" if family.type == "counter" else "")
        assert set(collector._labelnames) == CATALOGUE[name], name


def test_several_processes_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, each process writes its values and any /metrics serves the
    sum (several uvicorn workers, or workers beside the api on one host)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    bump = (
        "from ragline import metrics; "
        "metrics.REQUESTS.labels('query', 'ok').inc(); "
        "metrics.RETRIEVAL.observe(0.02)"
    )
    for _ in range(3):
        subprocess.run([sys.executable, "-c", bump], env=env, check=True, timeout=60)
    render = "from ragline import metrics; print(metrics.render()[0].decode())"
    shown = subprocess.run(
        [sys.executable, "-c", render], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    scrape = samples(shown)
    assert value(scrape, "ragline_requests_total", route="query", outcome="ok") == 3
    assert value(scrape, "ragline_retrieval_duration_seconds_count") == 3
