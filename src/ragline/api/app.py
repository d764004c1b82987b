"""`build_app(settings)`: the FastAPI gateway in front of retrieval and generation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ragline import __version__
from ragline.api import errors
from ragline.api.limits import parse_limit
from ragline.api.middleware import (
    Admission,
    BodyLimit,
    JsonBodyGuard,
    RequestLog,
    SecurityHeaders,
)
from ragline.api.routes import documents, evals, health, openai, query, traces
from ragline.api.state import AppState
from ragline.config import Settings
from ragline.factory import Runtime


def build_app(settings: Settings, warm: bool = False) -> FastAPI:
    """The app; components are built in the lifespan and closed when it ends.

    `warm` loads the embedder, starts the LLM server and, when it is the local one, asks it for
    one token, so the first request does not pay for any of them (what `ragline serve` does).
    """
    parse_limit(settings.server.rate_limit)  # refuse a bad limit at start, not per request
    parse_limit(settings.server.anonymous_rate_limit)
    if settings.server.auth_failure_limit:
        parse_limit(settings.server.auth_failure_limit)
    check_token_budget(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        state = await run_in_threadpool(AppState.start, runtime)
        app.state.ragline = state
        app.state.probe_limiter = health.probe_limiter()
        if warm:
            await run_in_threadpool(lambda: (runtime.query_embedder, runtime.chat))
            await run_in_threadpool(runtime.warm_llm)
        try:
            yield
        finally:
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="ragline",
        version=__version__,
        description="Production RAG: ingestion, hybrid retrieval, cited answers.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(JsonBodyGuard)  # innermost: inside BodyLimit, which bounds what it reads
    app.add_middleware(
        BodyLimit,
        json_limit=settings.server.max_request_bytes,
        upload_limit=settings.ingestion.max_file_bytes * 2 + 1024 * 1024,
    )
    app.add_middleware(Admission, limit=settings.server.max_in_flight)  # runs first
    # around everything, so 413s and 503s carry the headers too
    app.add_middleware(SecurityHeaders, docs_paths=_docs_paths(app))
    app.add_middleware(RequestLog)  # outermost: runs first, so refused requests are logged too
    for module in (health, documents, query, openai, traces, evals):
        app.include_router(module.router)
    # the web UI: static files, no build step, never traced (only service code makes spans)
    app.mount("/ui", StaticFiles(directory=WEB), name="ui")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html")

    return app


def _docs_paths(app: FastAPI) -> tuple[str, ...]:
    """The pages that load Swagger UI or ReDoc (their own CSP)."""
    paths = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    return tuple(p for p in paths if p)


def check_token_budget(settings: Settings) -> None:
    """Refuse at start a token budget that no question could fit in: each question reserves
    at least its whole context budget and `llm.max_tokens` (api/budget.py)."""
    if settings.server.token_budget is None:
        return
    smallest = settings.generation.max_context_tokens + settings.llm.max_tokens
    if parse_limit(settings.server.token_budget).amount < smallest:
        raise ValueError(
            f"server.token_budget ({settings.server.token_budget}) cannot hold one question: "
            f"each reserves at least generation.max_context_tokens + llm.max_tokens = {smallest} "
            "tokens before it is answered"
        )


WEB = Path(__file__).resolve().parent.parent / "web"
