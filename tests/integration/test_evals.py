"""The evaluation loop end to end: SQuAD import, runs against two configurations with the real
model, stored results, comparison and the CI gate's exit codes, LLM-as-judge failures recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ragline.cli import app
from ragline.config import Settings
from ragline.evals.runs import EvalRunner
from ragline.factory import Runtime
from ragline.generation.prompts import get_prompt
from ragline.store.schema import eval_results, eval_runs

SQUAD = Path(__file__).parent.parent / "fixtures" / "squad" / "dev-v2.0-normans.json"
SEEDED = get_prompt("rag-answer").version  # a fresh store answers with the newest built-in


@pytest.fixture
def cli(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGLINE_HOME", str(settings.home))
    monkeypatch.setenv("RAGLINE_LLM__BASE_URL", str(settings.llm.base_url))
    monkeypatch.setenv("RAGLINE_LLM__MAX_TOKENS", "48")
    return CliRunner()


def invoke(cli: CliRunner, *args: str) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_squad_runs_compare_and_gate(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    """Baseline vs a crippled candidate (one hit per leg): recall drops, the gate exits 1;
    baseline vs an identical rerun passes the gate (exit 0)."""
    invoke(
        cli,
        "eval",
        "dataset",
        "import",
        "normans",
        "--squad",
        str(SQUAD),
        "--collection",
        "squad",
    )
    assert "normans" in invoke(cli, "eval", "dataset", "list")
    invoke(cli, "eval", "run", "normans", "--name", "base", "-c", "squad", "--mode", "retrieval")
    invoke(cli, "eval", "run", "normans", "--name", "again", "-c", "squad", "--mode", "retrieval")
    invoke(
        cli,
        "eval",
        "run",
        "normans",
        "--name",
        "narrow",
        "-c",
        "squad",
        "--mode",
        "retrieval",
        "--set",
        "retrieval.dense_top_k=1",
        "--set",
        "retrieval.sparse_top_k=1",
    )
    with Runtime(settings) as rt:
        runner = EvalRunner(rt)
        base = runner.get("base")
        assert base.summary["items"] == 16 and base.summary["errors"] == 0
        assert base.summary["metrics"]["hit@5"] > 0.8  # paragraph retrieval on SQuAD is easy
        assert runner.get("narrow").config_hash != base.config_hash
        assert runner.get("again").config_hash == base.config_hash
    gate = cli.invoke(
        app, ["eval", "compare", "base", "narrow", "--fail-on", "recall@10", "--max-drop", "0.02"]
    )
    assert gate.exit_code == 1, gate.output
    assert "FAIL" in gate.output and "regression" in gate.output
    same = cli.invoke(app, ["eval", "compare", "base", "again", "--fail-on", "recall@10,ndcg@10"])
    assert same.exit_code == 0, same.output
    bad = cli.invoke(app, ["eval", "compare", "base", "again", "--fail-on", "nonsense"])
    assert bad.exit_code != 0


def test_answer_mode_scores_answers_and_records_judge_failures(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    """Answers get EM/F1/containment and citation scores; the tiny judge's replies are graded or
    recorded as parse failures, never crashing and never silently zero."""
    invoke(
        cli,
        "eval",
        "dataset",
        "import",
        "normans",
        "--squad",
        str(SQUAD),
        "--unanswerable",
        "--collection",
        "squad",
    )
    # the candidate configuration comes from a TOML file, like a team's ragline.toml
    (tmp_path / "candidate.toml").write_text("[retrieval]\ntop_n = 3\n")
    output = invoke(
        cli,
        *("eval", "run", "normans", "--name", "answers", "-c", "squad", "--limit", "6"),
        *("--judge", "--concurrency", "2", "--config", str(tmp_path / "candidate.toml")),
    )
    assert "token_f1" in output
    with Runtime(settings) as rt:
        runner = EvalRunner(rt)
        scores = runner.scores("answers")
        config = (
            rt.store.engine.connect()
            .execute(select(eval_runs.c.config).where(eval_runs.c.name == "answers"))
            .scalar_one()
        )
        details = dict(
            rt.store.engine.connect()
            .execute(select(eval_results.c.item_id, eval_results.c.details))
            .all()
        )
    assert config["retrieval"]["top_n"] == 3
    assert len(scores["latency_ms"]) == 6
    assert all(0.0 <= v <= 1.0 for v in scores["token_f1"].values())
    # answerable items get F1, unanswerable ones (SQuAD 2.0) get refusal
    assert len(scores["token_f1"]) + len(scores["refusal"]) == 6
    assert scores["token_f1"] and scores["refusal"]
    parse = scores["judge_parse_failure"]
    assert len(parse) == 6
    graded = [item for item, failed in parse.items() if not failed]
    assert graded, "the schema-constrained judge should parse"
    assert all(item in scores["faithfulness"] for item in graded)
    assert all(
        item not in scores.get("faithfulness", {}) for item, failed in parse.items() if failed
    )
    assert any(detail["ttft_ms"] for detail in details.values())
    for item, detail in details.items():
        assert detail["retrieved_dense"] and detail["retrieved_sparse"]
        assert len(detail["chunks"]) <= 3 and detail["retrieval_ms"] > 0
        assert detail["finish_reason"] in ("stop", "length")
        assert detail["ttft_ms"] is None or detail["ttft_ms"] > 0  # None: no text came back
        assert detail["prompt"] == {"name": "rag-answer", "version": SEEDED}
        assert detail["judge"]["prompt_version"] == 2
        assert set(detail["citations"]) <= set(detail["chunks"])
        if not parse[item]:
            assert set(detail["judge"]["reasons"]) == {
                "faithfulness",
                "answer_relevance",
                "correctness",
            }


def test_negative_feedback_becomes_a_dataset(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    """Questions of traces rated ≤ 0 are imported as items (with the trace id); liked ones are not."""
    with Runtime(settings) as rt:
        rt.store.ensure_collection("kb")
        bad = rt.query_service.retrieve("Which year did the Normans arrive?", "kb")["trace_id"]
        good = rt.query_service.retrieve("Who were the Normans?", "kb")["trace_id"]
        rt.tracing.flush()
        rt.feedback.record(bad, 0, "wrong year")
        rt.feedback.record(good, 1)
    invoke(cli, "eval", "dataset", "add-from-traces", "regressions", "--feedback", "negative")
    invoke(cli, "eval", "dataset", "add-from-traces", "recent", "--since", "1h")
    invoke(cli, "eval", "dataset", "add-from-traces", "none", "--since", "0s")
    with Runtime(settings) as rt:
        from ragline.evals.datasets import EvalStore

        (item,) = EvalStore(rt.store.engine).items("regressions")
    assert item.id == bad and item.question == "Which year did the Normans arrive?"
    assert item.metadata["comment"] == "wrong year" and item.metadata["trace_id"] == bad
    with Runtime(settings) as rt:
        store = EvalStore(rt.store.engine)
        assert [i.id for i in store.items("recent")] == [bad]
        assert ("none", 0) in store.datasets()
    bad_since = cli.invoke(app, ["eval", "dataset", "add-from-traces", "x", "--since", "yesterday"])
    assert bad_since.exit_code != 0 and "not a duration" in bad_since.output


def test_dataset_create_show_export_round_trip(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    """An exported dataset re-imports to the same items; show lists them."""
    invoke(cli, "eval", "dataset", "create", "empty", "--description", "later")
    assert "empty" in invoke(cli, "eval", "dataset", "list")
    source = tmp_path / "items.jsonl"
    source.write_text(
        '{"id": "a", "question": "Who?", "expected_answer": "Rollo", "relevant_ids": ["Normans-0"]}\n'
        '{"id": "b", "question": "When?", "expected_answer": ["911", "in 911"], "relevant_ids": {"Normans-1": 2}}\n'
    )
    invoke(cli, "eval", "dataset", "import", "small", "--jsonl", str(source))
    assert "Rollo" in invoke(cli, "eval", "dataset", "show", "small")
    exported = tmp_path / "out.jsonl"
    invoke(cli, "eval", "dataset", "export", "small", "-o", str(exported))
    invoke(cli, "eval", "dataset", "import", "copy", "--jsonl", str(exported))
    from ragline.evals.datasets import EvalStore

    with Runtime(settings) as rt:
        store = EvalStore(rt.store.engine)
        assert store.items("copy") == store.items("small")
        first, second = store.items("copy")
    assert (first.expected_answers, first.relevant) == (["Rollo"], {"Normans-0": 1})
    assert (second.expected_answers, second.relevant) == (["911", "in 911"], {"Normans-1": 2})
