"""Mirror evaluation datasets, runs and scores to Langfuse (public REST API), so runs can be
browsed there next to their traces. Best effort: a Langfuse error is logged and counted, never
fails the run. Endpoints and fields: ../shared/reference/langfuse.md (sections H, I)."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from ragline.config import LangfuseSettings
from ragline.evals.datasets import EvalItem
from ragline.tracing.feedback import feedback_id
from ragline.tracing.setup import langfuse_client

log = logging.getLogger(__name__)


class LangfuseEvalMirror:
    def __init__(
        self, settings: LangfuseSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._client = langfuse_client(settings, 5.0, transport)
        self.failed = 0

    def dataset(self, name: str, items: list[EvalItem]) -> None:
        """Create the dataset and upsert its items (ids are ragline's, so re-runs update)."""
        self._post("/api/public/v2/datasets", {"name": name})
        for item in items:
            self._post(
                "/api/public/dataset-items",
                {
                    "datasetName": name,
                    "id": item_id(name, item.id),
                    "input": {"question": item.question},
                    "expectedOutput": {"answers": item.expected_answers, "relevant": item.relevant},
                    "metadata": item.metadata,
                },
            )

    def result(
        self,
        dataset: str,
        run_name: str,
        item: EvalItem,
        trace_id: str | None,
        scores: dict[str, float],
        config_hash: str,
    ) -> None:
        """Link the item's trace to the run, and put each metric on the trace as a score."""
        if trace_id is None:
            return
        self._post(
            "/api/public/dataset-run-items",
            {
                "runName": run_name,
                "datasetItemId": item_id(dataset, item.id),
                "traceId": trace_id,
                "metadata": {"rag_config_hash": config_hash},
            },
        )
        for metric, value in scores.items():
            name = f"eval.{metric}"
            self._post(
                "/api/public/scores",
                {
                    "id": feedback_id(trace_id, name),
                    "traceId": trace_id,
                    "name": name,
                    "value": value,
                    "dataType": "NUMERIC",
                },
            )

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, body: dict[str, Any]) -> None:
        try:
            self._client.post(path, json=body).raise_for_status()
        except httpx.HTTPError as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning(
                    "langfuse mirror failed path=%s failures=%d error=%s", path, self.failed, exc
                )


def item_id(dataset: str, item: str) -> str:
    """Langfuse dataset item ids are project-unique (≤ 255 chars): prefix the dataset."""
    return f"{dataset}:{item}"[:255]
