"""The web UI end to end in a real headless Chromium (Debian's, driven by Playwright), against
a real server: upload a document and watch it become ready, ask and see the streamed answer with
its citations, click "Not helpful" and find the score on the trace, open the trace waterfall and
its diagnosis, compare two eval runs; with auth on, the key is asked for once.

Screenshots of each page are taken on every run; with RAGLINE_UPDATE_SCREENSHOTS=1 they replace
the ones in docs/img/ that the README shows (otherwise they go to a temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import insert

from ragline.api.app import build_app
from ragline.config import Settings
from ragline.evals.datasets import EvalItem, EvalStore
from ragline.evals.runs import EvalRunner
from ragline.factory import Runtime
from ragline.store.keys import KeyStore
from ragline.store.schema import spans
from tests.helpers import ingest

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"
SECURITY = DOCS / "markdown" / "markitdown_SECURITY.md"
QUESTION = "How do I report a security vulnerability?"
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "img"
    if os.environ.get("RAGLINE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "ragline-screenshots"
)
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [  # the machine's network is closed: no background connections at start
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Server:
    """`build_app` under uvicorn on a free loopback port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            build_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make chromium`"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


def exported_trace(url: str, trace_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The trace once the exporter has written it: spans reach the local store off the request
    path (a 0.5 s batch timer), so a read right after the answer can find nothing yet (404)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{url}/v1/traces/{trace_id}", timeout=10)
        if response.status_code != 404 or time.monotonic() > deadline:
            response.raise_for_status()
            trace: dict[str, Any] = response.json()
            return trace
        time.sleep(0.2)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_upload_ask_feedback_trace_and_evals(
    settings: Settings, browser: Browser, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"cache": settings.cache.model_copy(update={"enabled": False})}
    )
    with Server(settings) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/#documents")
        # upload through the file input behind the drop zone, then watch the status turn ready
        page.fill("#upload-collection", "kb")
        page.set_input_files("#file-input", str(SECURITY))
        row = page.locator(f'#documents-table tr[data-source="{SECURITY.name}"]')
        expect(row).to_be_visible(timeout=30_000)
        expect(row.locator("td").nth(1)).to_have_text("ready", timeout=120_000)
        page.wait_for_function(  # the index catches up within a sync interval
            "fetch('/readyz').then(r => r.json()).then(b => b.checks.index.pending === false)",
            timeout=30_000,
        )
        # a corrupt PDF fails its own job, with the error shown; then it is deleted
        broken = tmp_path / "broken.pdf"
        broken.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 50)
        page.set_input_files("#file-input", str(broken))
        failed = page.locator('#documents-table tr[data-source="broken.pdf"]')
        expect(failed.locator("td").nth(1)).to_have_text("failed", timeout=60_000)
        assert failed.locator("td").nth(4).inner_text().strip()
        screenshot(page, "documents")
        page.once("dialog", lambda dialog: dialog.accept())
        failed.locator("button").click()
        expect(failed).to_have_count(0)

        page.goto(f"{server.url}/#ask")
        page.select_option("#collection", "kb")
        page.fill("#question", QUESTION)
        page.click("#ask-button")
        expect(page.locator("#answer-meta")).to_contain_text("trace", timeout=120_000)
        assert page.inner_text("#answer").strip()
        sources = page.locator("#sources li")
        assert sources.count() >= 1
        sources.first.locator("summary").click()
        expect(sources.first.locator("details > div")).to_be_visible()
        assert SECURITY.name in sources.first.inner_text()
        meta = page.inner_text("#answer-meta")
        trace_id = meta.rsplit("trace ", 1)[1].strip()
        citations = page.locator("#answer .citation")
        if citations.count():  # the tiny model does not always cite; when it does, [n] opens n
            citations.first.click()
        screenshot(page, "ask")

        page.fill("#feedback-comment", "not what I asked")
        page.click("#not-helpful")
        expect(page.locator("#feedback-status")).to_contain_text("recorded", timeout=10_000)
        trace = exported_trace(server.url, trace_id)
        assert [(f["value"], f["comment"]) for f in trace["feedback"]] == [
            (0.0, "not what I asked")
        ]

        page.goto(f"{server.url}/#traces")
        page.check("#filter-negative")
        page.click("#trace-filters button")
        row = page.locator(f'#traces-table tr[data-trace="{trace_id}"]')
        expect(row).to_be_visible()
        expect(row).not_to_contain_text("Invalid Date")  # API times carry their UTC offset
        expect(row).to_contain_text(re.compile(r"\d{1,2}:\d\d:\d\d"))
        page.click(f'#traces-table tr[data-trace="{trace_id}"]')
        for name in ("rag.query", "embedding", "retrieve", "retrieve.dense", "prompt", "llm"):
            expect(page.locator(f'#waterfall .span-row[data-span="{name}"]')).to_be_visible()
        page.click('#waterfall .span-row[data-span="llm"]')
        expect(page.locator("#span-detail")).to_contain_text("ragline.llm.finish_reason")
        expect(page.locator("#span-detail")).to_contain_text("time_to_first_token_ms")
        expect(page.locator("#diagnosis li").first).to_be_visible()
        expect(page.locator("#trace-title")).to_contain_text("not what I asked")
        screenshot(page, "traces")

        page.close()


def test_eval_runs_and_their_comparison(settings: Settings, browser: Browser) -> None:
    """Runs need the index, which the server holds open: they are made before it starts."""
    with Runtime(settings) as rt:
        ingest(rt, "kb", SECURITY)
        EvalStore(rt.store.engine).save(
            "security",
            [
                EvalItem("q1", QUESTION, [], {SECURITY.stem: 1}),
                EvalItem("q2", "Where do I send vulnerability reports?", [], {SECURITY.stem: 1}),
            ],
        )
        runner = EvalRunner(rt)
        runner.run("security", "kb", "baseline", "retrieval")
        runner.run("security", "kb", "candidate", "retrieval")
    with Server(settings) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/#evals")
        expect(page.locator("#runs-table tbody tr")).to_have_count(2)
        expect(page.locator("#runs-table tbody")).to_contain_text("ndcg@10")
        page.click("#compare-form button")
        row = page.locator('#compare-table tr[data-metric="ndcg@10"]')
        expect(row).to_be_visible()
        expect(row.locator("td").nth(1)).to_have_text("2")  # both items paired
        screenshot(page, "evals")
        page.close()


def test_the_ui_runs_under_its_content_security_policy(
    settings: Settings, browser: Browser
) -> None:
    """The server sends a strict CSP (scripts and styles from the origin only, no inline):
    the trace waterfall, which positions its bars with styles, still draws them (set through
    the CSSOM, not style attributes) and the browser reports no violation."""
    start = datetime(2025, 1, 1, 12, 0, 0)
    trace_id = uuid.uuid4().hex
    rows = [
        span(trace_id, "a" * 16, None, "rag.query", start, 100.0),
        span(trace_id, "b" * 16, "a" * 16, "retrieve", start + timedelta(milliseconds=50), 50.0),
    ]
    with Runtime(settings) as rt, rt.store.engine.begin() as conn:
        conn.execute(insert(spans), rows)
    with Server(settings) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.add_init_script(
            "window.violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.violations.push(`${e.violatedDirective} ${e.blockedURI}`));"
        )
        response = page.goto(f"{server.url}/#traces")
        assert response is not None
        assert "script-src 'self';" in response.headers["content-security-policy"]
        page.click(f'#traces-table tr[data-trace="{trace_id}"]')
        bar = page.locator('#waterfall .span-row[data-span="retrieve"] .span-bar')
        expect(bar).to_be_visible()
        assert bar.evaluate("b => [b.style.left, b.style.width]") == ["50%", "50%"]
        assert page.evaluate("window.violations") == []
        page.close()


def span(
    trace_id: str, span_id: str, parent: str | None, name: str, start: datetime, ms: float
) -> dict[str, Any]:
    """A row of the local trace store."""
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "start_time": start,
        "end_time": start + timedelta(milliseconds=ms),
        "duration_ms": ms,
        "status": "OK",
        "attributes": {},
        "events": [],
    }


def test_auth_on_asks_for_the_key_once(
    settings: Settings, browser: Browser, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"auth": True})}
    )
    with Runtime(settings) as rt:
        rt.store.ensure_collection("kb")
        _, secret = KeyStore(rt.store.engine).create("ui")
    with Server(settings) as server:
        page = browser.new_page()
        page.goto(server.url)
        expect(page.locator("#key-dialog")).to_be_visible()
        page.fill("#key-input", secret)
        page.click("#key-save")
        expect(page.locator("#collection option[value=kb]")).to_have_count(1)
        page.goto(f"{server.url}/#traces")  # the key stays for the tab's session
        expect(page.locator("#key-dialog")).to_be_hidden()
        assert json.loads(page.evaluate("JSON.stringify(sessionStorage.getItem('ragline.key'))"))
        page.close()
