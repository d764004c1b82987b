"""Versioned prompts: immutable versions, labels, rollback applied to the next answer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.config import Settings
from ragline.errors import InvalidRequestError
from ragline.factory import Runtime
from tests.helpers import ingest

SECURITY = (
    Path(__file__).parent.parent / "fixtures" / "docs" / "markdown" / "markitdown_SECURITY.md"
)
QUESTION = "How do I report a security vulnerability?"


def test_rollback_changes_the_prompt_version_of_the_next_answer(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built-in v1 is seeded as production; v2 pushed to production answers next; a rollback
    puts v1 back within the resolver's few-second cache, with no restart."""
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    cli = CliRunner()
    with Runtime(settings) as rt:
        ingest(rt, "kb", SECURITY)
        assert rt.query_service.query(QUESTION, "kb")["prompt"] == {
            "name": "rag-answer",
            "version": 1,
        }
        template = tmp_path / "v2.txt"
        template.write_text(
            "Answer in one short sentence, citing [n].\n---\nPassages:\n{context}\n\nQ: {question}\nA:"
        )
        pushed = cli.invoke(
            app, ["prompts", "push", "rag-answer", "-f", str(template), "--label", "production"]
        )
        assert pushed.exit_code == 0, pushed.output
        time.sleep(rt.prompt_resolver.ttl_s + 0.1)
        answer = rt.query_service.query(QUESTION, "kb")
        assert answer["prompt"]["version"] == 2
        listed = cli.invoke(app, ["prompts", "list"]).stdout
        assert "production" in listed
        assert cli.invoke(app, ["prompts", "rollback", "rag-answer"]).exit_code == 0
        time.sleep(rt.prompt_resolver.ttl_s + 0.1)
        assert rt.query_service.query(QUESTION, "kb")["prompt"]["version"] == 1
        shown = cli.invoke(app, ["prompts", "show", "rag-answer@2"]).stdout
        assert "one short sentence" in shown
        with pytest.raises(InvalidRequestError, match="question"):
            rt.prompts.push("rag-answer", "s", "no placeholders {context}")
        assert (
            cli.invoke(app, ["prompts", "push", "x", "-f", str(tmp_path / "missing.txt")]).exit_code
            != 0
        )


def test_concurrent_first_use_seeds_the_builtin_prompt_once(database_url: str) -> None:
    """Eight threads answering at once on a fresh store all get version 1 of the built-in
    prompt: racing seeds never store it twice (once stored as v1 and v2, eval runs with
    --concurrency recorded either)."""
    from concurrent.futures import ThreadPoolExecutor

    from ragline.prompts import PromptRegistry
    from ragline.store import create_store_engine, migrate

    engine = create_store_engine(database_url)
    migrate(engine)
    registry = PromptRegistry(engine)
    with ThreadPoolExecutor(8) as pool:
        seeded = list(pool.map(lambda _: registry.seed("rag-answer").version, range(8)))
    assert seeded == [1] * 8
    assert [v for name, v, _ in registry.versions() if name == "rag-answer"] == [1]
    engine.dispose()
