"""Liveness, readiness and metrics (never rate limited, never authenticated, never refused by
admission control).

`/readyz` and `/metrics` do blocking work (a SELECT, an HTTP probe, the collectors) on threads
of their own: two probe tokens, not the 40 the API requests share, so a probe answers while
every request thread is busy. As sync routes they queued behind the requests and answered in
7 s under load (bench/soak.py). They read the runtime from the app, not through a dependency:
FastAPI runs sync dependencies on the shared pool too.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from ragline import metrics
from ragline.errors import one_line
from ragline.factory import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up. Async, so it answers on the event loop: as a sync route it queued
    behind the request thread pool under load (7 s P50 at 200 clients, bench/soak.py) and a
    liveness probe would restart a replica that is only busy."""
    return {"status": "ok"}


def probe_limiter() -> anyio.CapacityLimiter:
    """The probes' own thread tokens; made inside the app's event loop (the lifespan)."""
    return anyio.CapacityLimiter(2)


async def _off_the_request_pool(request: Request, work: Any) -> Any:
    runtime = request.app.state.ragline.runtime
    limiter = request.app.state.probe_limiter
    return await anyio.to_thread.run_sync(work, runtime, limiter=limiter)


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """503 when the store or the index fails, or the index sync is stuck (see `readiness`)."""
    response: JSONResponse = await _off_the_request_pool(request, readiness)
    return response


def readiness(runtime: Runtime) -> JSONResponse:
    """503 when the store or the index fails: no request can be served; or when the index sync
    is stuck (`_check_index`): uploads say ready and are never found. An LLM server that is
    down is reported (`degraded`) but keeps the replica ready, because retrieval, uploads and
    cached answers still work; taking every replica out of the load balancer for it would
    turn a partial outage into a full one."""
    checks = {
        "store": _check_store(runtime),
        "index": _check_index(runtime),
        "llm": _check_llm(runtime),
        "tracing": {"ok": True, **runtime.tracing.health()},
    }
    ready = checks["store"]["ok"] and checks["index"]["ok"]
    status = "unavailable" if not ready else "ok" if checks["llm"]["ok"] else "degraded"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition: latencies, SLO counters, queue depth, dropped spans
    (docs/operations.md). Aggregates every process when PROMETHEUS_MULTIPROC_DIR is set."""
    body, content_type = await _off_the_request_pool(request, _exposition)
    return Response(body, media_type=content_type)


def _exposition(runtime: Runtime) -> tuple[bytes, str]:
    return metrics.render(metrics.runtime_collector(runtime, index=True))


def _check_store(runtime: Runtime) -> dict[str, Any]:
    try:
        with runtime.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "backend": runtime.store.engine.dialect.name}
    except Exception as exc:
        return {"ok": False, "error": one_line(exc)}


def _check_index(runtime: Runtime) -> dict[str, Any]:
    """Not ok when the index fails, or when its sync is stuck: the oldest store change it has
    not applied is older than `index.max_sync_lag_s` (documents say ready but are not
    retrievable). The failures in a row of the background sync are shown with it."""
    sync = runtime.index_sync
    try:
        lag = sync.lag()
    except Exception as exc:
        return {"ok": False, "error": one_line(exc)}
    limit = runtime.settings.index.max_sync_lag_s
    stuck = bool(limit) and lag.seconds > limit
    check: dict[str, Any] = {
        "ok": not stuck,
        "cursor": lag.cursor,
        "pending": lag.entries > 0,
        "lag_entries": lag.entries,
        "lag_seconds": round(lag.seconds, 1),
        "sync_failures": sync.failures,
    }
    if sync.last_error:
        check["last_error"] = sync.last_error
    if stuck:
        check["error"] = (
            f"index sync stuck: {lag.entries} store changes not applied, the oldest "
            f"{lag.seconds:.0f} s old (index.max_sync_lag_s = {limit:g})"
        )
    return check


def _check_llm(runtime: Runtime) -> dict[str, Any]:
    """Down only when nothing answers: llama.cpp serves /models behind its generation lock,
    so while it generates the probe times out, and that is a busy server, not a dead one."""
    try:
        response = httpx.get(f"{runtime.chat.base_url}/models", timeout=2.0)
        return {"ok": response.status_code == 200, "status": response.status_code}
    except httpx.TimeoutException:
        return {"ok": True, "busy": True}
    except Exception as exc:
        return {"ok": False, "error": one_line(exc)}
