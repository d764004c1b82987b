"""Eval runs and baseline-vs-candidate comparisons (what the web UI's Evals page shows)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ragline.api.deps import Caller, CallerDep, RuntimeDep
from ragline.api.schemas import with_utc
from ragline.evals.compare import compare_runs
from ragline.evals.runs import EvalRunner, RunInfo, run_not_found

router = APIRouter(prefix="/v1/evals", tags=["evals"])


def _visible(caller: Caller, run: RunInfo) -> bool:
    return caller.key is None or caller.key.allows(run.collection)


@router.get("/runs")
def list_runs(caller: CallerDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Stored runs, oldest first: dataset, collection, mode, RAG-config hash, summary."""
    return [with_utc(asdict(run)) for run in EvalRunner(runtime).runs() if _visible(caller, run)]


@router.get("/compare")
def compare(
    caller: CallerDep,
    runtime: RuntimeDep,
    baseline: Annotated[str, Query(min_length=1, max_length=200)],
    candidate: Annotated[str, Query(min_length=1, max_length=200)],
    fail_on: Annotated[str, Query(max_length=500, description="Comma-separated metrics")] = "",
    max_drop: Annotated[float, Query(ge=0.0, le=1.0)] = 0.02,
) -> dict[str, Any]:
    """Per metric: means, paired delta with its bootstrap 95 % interval, items better/worse,
    and the regression gate's verdict for the `fail_on` metrics (like `ragline eval compare`)."""
    runner = EvalRunner(runtime)
    for name in (baseline, candidate):  # a run the key may not see is as missing (404)
        if not _visible(caller, runner.get(name)):
            raise run_not_found(name)
    gated = {m.strip() for m in fail_on.split(",") if m.strip()}
    rows = compare_runs(runner.scores(baseline), runner.scores(candidate), gated, max_drop)
    return {
        "baseline": baseline,
        "candidate": candidate,
        "metrics": [
            {
                **asdict(row.comparison),
                "better": row.better,
                "worse": row.worse,
                "gated": row.gated,
                "regressed": row.regressed,
            }
            for row in rows
        ],
        "failed": [row.comparison.metric for row in rows if row.gated and row.regressed],
    }
