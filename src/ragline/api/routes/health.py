"""Liveness and readiness (never rate limited, never authenticated)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from ragline import metrics
from ragline.api.deps import RuntimeDep
from ragline.errors import one_line
from ragline.factory import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up. Async, so it answers on the event loop: as a sync route it queued
    behind the request thread pool under load (7 s P50 at 200 clients, bench/soak.py) and a
    liveness probe would restart a replica that is only busy."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """503 when the store or the index fails: no request can be served. An LLM server that is
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
def prometheus_metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition: latencies, SLO counters, queue depth, dropped spans
    (docs/operations.md). Aggregates every process when PROMETHEUS_MULTIPROC_DIR is set."""
    body, content_type = metrics.render(metrics.runtime_collector(runtime))
    return Response(body, media_type=content_type)


def _check_store(runtime: Runtime) -> dict[str, Any]:
    try:
        with runtime.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "backend": runtime.store.engine.dialect.name}
    except Exception as exc:
        return {"ok": False, "error": one_line(exc)}


def _check_index(runtime: Runtime) -> dict[str, Any]:
    try:
        return {
            "ok": True,
            "cursor": runtime.index.cursor(),
            "pending": runtime.index_sync.pending(),
        }
    except Exception as exc:
        return {"ok": False, "error": one_line(exc)}


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
