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
from ragline.generation.prompts import builtin_versions, get_prompt
from tests.helpers import ingest

SECURITY = (
    Path(__file__).parent.parent / "fixtures" / "docs" / "markdown" / "markitdown_SECURITY.md"
)
QUESTION = "How do I report a security vulnerability?"
BUILTIN_VERSIONS = builtin_versions("rag-answer")
NEWEST = BUILTIN_VERSIONS[-1]


def test_rollback_changes_the_prompt_version_of_the_next_answer(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest built-in (v2) is seeded as production; v3 pushed to production answers
    next; a rollback puts v2 back within the resolver's few-second cache, with no restart."""
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    cli = CliRunner()
    with Runtime(settings) as rt:
        ingest(rt, "kb", SECURITY)
        assert rt.query_service.query(QUESTION, "kb")["prompt"] == {
            "name": "rag-answer",
            "version": NEWEST,
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
        assert answer["prompt"]["version"] == NEWEST + 1
        listed = cli.invoke(app, ["prompts", "list"]).stdout
        assert "production" in listed
        assert cli.invoke(app, ["prompts", "rollback", "rag-answer"]).exit_code == 0
        time.sleep(rt.prompt_resolver.ttl_s + 0.1)
        assert rt.query_service.query(QUESTION, "kb")["prompt"]["version"] == NEWEST
        shown = cli.invoke(app, ["prompts", "show", f"rag-answer@{NEWEST + 1}"]).stdout
        assert "one short sentence" in shown
        with pytest.raises(InvalidRequestError, match="question"):
            rt.prompts.push("rag-answer", "s", "no placeholders {context}")
        assert (
            cli.invoke(app, ["prompts", "push", "x", "-f", str(tmp_path / "missing.txt")]).exit_code
            != 0
        )


def test_concurrent_first_use_seeds_the_builtin_prompt_once(database_url: str) -> None:
    """Eight threads answering at once on a fresh store all get the newest built-in version:
    racing seeds store each built-in version once, under its own number (once the built-in
    was stored as v1 and v2, and eval runs with --concurrency recorded either)."""
    from concurrent.futures import ThreadPoolExecutor

    from ragline.prompts import PromptRegistry
    from ragline.store import create_store_engine, migrate

    engine = create_store_engine(database_url)
    migrate(engine)
    registry = PromptRegistry(engine)
    with ThreadPoolExecutor(8) as pool:
        seeded = list(pool.map(lambda _: registry.seed("rag-answer").version, range(8)))
    assert seeded == [NEWEST] * 8
    assert [v for name, v, _ in registry.versions() if name == "rag-answer"] == BUILTIN_VERSIONS
    for version in BUILTIN_VERSIONS:  # version n of a fresh store is built-in version n
        assert registry.get("rag-answer", version) == get_prompt("rag-answer", version)
    engine.dispose()


def test_a_store_seeded_before_a_new_builtin_adopts_it_on_request(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose production prompt is the old built-in v1 (seeded by an older release, next
    to an operator's own v2) keeps it until `ragline prompts builtin` stores the newest
    built-in as the next free version and points production at it; running it again changes
    nothing, and a rollback returns to v1."""
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    old = get_prompt("rag-answer", 1)
    with Runtime(settings) as rt:
        rt.prompts.push(old.name, old.system, old.user, label="production")
        rt.prompts.push(old.name, "Operator's own.", "{context}\n{question}")
        assert rt.prompt_resolver().version == 1
    cli = CliRunner()
    for _ in range(2):
        adopted = cli.invoke(app, ["prompts", "builtin", "rag-answer"])
        assert adopted.exit_code == 0, adopted.output
        assert "version 3 (built-in)" in adopted.stdout
    with Runtime(settings) as rt:
        production = rt.prompts.get("rag-answer", label="production")
        assert (production.version, production.system) == (3, get_prompt("rag-answer").system)
        assert rt.prompts.rollback("rag-answer") == 1
