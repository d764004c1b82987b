"""Small helpers the integration tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragline.config import Settings
from ragline.factory import Runtime


def ingest(runtime: Runtime, collection: str, *paths: Path) -> None:
    """Queue the files, run every job to its end in this process, then sync the index."""
    for path in paths:
        runtime.store.submit(collection, path.name, path.read_bytes(), 3)
    worker = runtime.worker()
    while worker.run_once() is not None:
        pass
    runtime.sync_index()


def updated(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """Settings with some fields of some sections changed: updated(s, llm={"max_tokens": 2})."""
    return settings.model_copy(
        update={
            name: getattr(settings, name).model_copy(update=values)
            for name, values in sections.items()
        }
    )
