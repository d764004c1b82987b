"""`ragline eval …`: datasets, runs, and the baseline-vs-candidate regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

eval_app = typer.Typer(
    help="Evaluation: datasets, runs, comparison with a CI gate.", no_args_is_help=True
)
dataset_app = typer.Typer(help="Evaluation datasets.", no_args_is_help=True)
eval_app.add_typer(dataset_app, name="dataset")
LOWER_IS_BETTER = frozenset({"latency_ms", "total_tokens", "judge_parse_failure"})


@dataset_app.command("import")
def dataset_import(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    jsonl: Annotated[
        Path | None, typer.Option(help="JSONL: {id, question, expected_answer?, relevant_ids?}")
    ] = None,
    beir: Annotated[Path | None, typer.Option(help="BEIR folder (queries.jsonl, qrels/)")] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split")] = "test",
    squad: Annotated[Path | None, typer.Option(help="SQuAD v2 JSON file")] = None,
    corpus_out: Annotated[
        Path | None, typer.Option(help="SQuAD: write paragraphs here (then ingest it)")
    ] = None,
    from_feedback: Annotated[
        bool, typer.Option("--from-feedback", help="Questions of traces with negative feedback")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="Import at most N items", min=1)] = None,
) -> None:
    """Import items into a dataset (created if new; items with known ids are replaced)."""
    from itertools import islice

    from ragline.cli import out, runtime
    from ragline.evals.datasets import (
        EvalStore,
        read_beir,
        read_jsonl,
        read_negative_feedback,
        read_squad,
    )

    sources = [s for s in (jsonl, beir, squad) if s is not None] + ([True] if from_feedback else [])
    if len(sources) != 1:
        raise typer.BadParameter("give exactly one of --jsonl, --beir, --squad, --from-feedback")
    if from_feedback:
        with runtime() as rt:
            count = EvalStore(rt.store.engine).save(
                name, list(islice(read_negative_feedback(rt.store.engine), limit))
            )
        out.print(f"dataset {name}: {count} items from negative feedback")
        return
    if jsonl:
        items = read_jsonl(jsonl)
    elif beir:
        items = read_beir(beir, split)
    else:
        assert squad is not None
        items = read_squad(squad, corpus_out)
    with runtime() as rt:
        count = EvalStore(rt.store.engine).save(name, list(islice(items, limit)))
    out.print(f"dataset {name}: {count} items imported")


@dataset_app.command("create")
def dataset_create(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    description: Annotated[str | None, typer.Option(help="What the dataset is for")] = None,
) -> None:
    """Create an empty dataset (import or add items later)."""
    from ragline.cli import out, runtime
    from ragline.evals.datasets import EvalStore

    with runtime() as rt:
        EvalStore(rt.store.engine).save(name, [], description)
    out.print(f"dataset {name} created")


@dataset_app.command("show")
def dataset_show(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    limit: Annotated[int, typer.Option(help="Items to show", min=1)] = 20,
) -> None:
    """The first items of a dataset: id, question, expected answers, relevant documents."""
    from ragline.cli import out, runtime
    from ragline.evals.datasets import EvalStore

    with runtime() as rt:
        items = EvalStore(rt.store.engine).items(name, limit)
    table = Table("id", "question", "expected", "relevant")
    for item in items:
        table.add_row(
            item.id, item.question, " | ".join(item.expected_answers), ", ".join(item.relevant)
        )
    out.print(table)


@dataset_app.command("export")
def dataset_export(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write")],
) -> None:
    """Write a dataset as JSONL in the import format (round-trips with `import --jsonl`)."""
    import json

    from ragline.cli import out, runtime
    from ragline.evals.datasets import EvalStore

    with runtime() as rt:
        items = EvalStore(rt.store.engine).items(name)
    with output.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(
                json.dumps(
                    {
                        "id": item.id,
                        "question": item.question,
                        "expected_answer": item.expected_answers,
                        "relevant_ids": item.relevant,
                        "metadata": item.metadata,
                    }
                )
                + "\n"
            )
    out.print(f"{len(items)} items written to {output}")


@dataset_app.command("list")
def dataset_list() -> None:
    """Datasets and their item counts."""
    from ragline.cli import out, runtime
    from ragline.evals.datasets import EvalStore

    with runtime() as rt:
        table = Table("dataset", "items")
        for name, count in EvalStore(rt.store.engine).datasets():
            table.add_row(name, str(count))
        out.print(table)


def _settings_with(overrides: list[str]) -> Any:
    """Settings with `section.key=value` overrides (values parsed as JSON when they can be)."""
    import json

    from ragline.config import Settings

    data = Settings().model_dump()
    for override in overrides:
        path, sep, raw = override.partition("=")
        if not sep or "." not in path:
            raise typer.BadParameter(
                f"--set {override!r}: use section.key=value, e.g. retrieval.top_n=5"
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise typer.BadParameter(f"--set {override!r}: no setting section {part!r}")
            node = node[part]
        if leaf not in node:
            raise typer.BadParameter(f"--set {override!r}: no setting {path!r}")
        node[leaf] = value
    try:
        return Settings(**data)
    except ValueError as exc:
        raise typer.BadParameter(f"--set: {exc}") from exc


@eval_app.command("run")
def run(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    name: Annotated[str, typer.Option("--name", help="Run name (unique), e.g. baseline")],
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection to query")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="retrieval (IR metrics only) or answer (also generation)")
    ] = "answer",
    limit: Annotated[int | None, typer.Option(help="First N items only", min=1)] = None,
    judge: Annotated[
        bool, typer.Option("--judge", help="Also grade answers with the LLM judge")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Setting override: section.key=value")
    ] = None,
) -> None:
    """Run a dataset against the current (or overridden) configuration and store every result."""
    from ragline.cli import console, out, runtime
    from ragline.evals.runs import EvalRunner

    settings = _settings_with(overrides or [])
    from ragline.evals.langfuse import LangfuseEvalMirror

    with runtime(settings) as rt:
        mirror = LangfuseEvalMirror(settings.langfuse) if settings.langfuse.configured else None
        runner = EvalRunner(rt, rt.judge if judge else None, mirror)
        columns = (
            TextColumn(f"[bold]eval {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("", total=None)
            info = runner.run(
                dataset,
                collection or settings.default_collection,
                name,
                mode,
                limit,
                lambda done, total: progress.update(task, completed=done, total=total),
            )
        if mirror is not None:
            mirror.close()
    summary = info.summary
    table = Table(
        "metric",
        "mean",
        title=f"run {info.name} · config {info.config_hash} · {summary['items']} items, "
        f"{summary['errors']} errors, P50 {summary['latency_p50_ms']} ms",
    )
    for metric, value in summary["metrics"].items():
        table.add_row(metric, f"{value:.4f}")
    out.print(table)


@eval_app.command("runs")
def runs() -> None:
    """Stored runs with their configuration hash and headline metrics."""
    from ragline.cli import out, runtime
    from ragline.evals.runs import EvalRunner

    with runtime() as rt:
        table = Table("run", "dataset", "collection", "mode", "config", "items", "metrics")
        for info in EvalRunner(rt).runs():
            metrics = ", ".join(
                f"{k}={v:.3f}" for k, v in list(info.summary.get("metrics", {}).items())[:4]
            )
            table.add_row(
                info.name,
                info.dataset,
                info.collection,
                info.mode,
                info.config_hash,
                str(info.summary.get("items", 0)),
                metrics,
            )
        out.print(table)


@eval_app.command("compare")
def compare(
    baseline: Annotated[str, typer.Argument(help="Baseline run name")],
    candidate: Annotated[str, typer.Argument(help="Candidate run name")],
    fail_on: Annotated[
        str | None, typer.Option(help="Comma-separated metrics that gate (exit 1)")
    ] = None,
    max_drop: Annotated[
        float, typer.Option(help="Tolerated mean drop before a significant change fails")
    ] = 0.02,
) -> None:
    """Per-metric table: means, paired delta with a bootstrap 95 % interval, items better/worse.

    Exits 1 when a --fail-on metric drops significantly (interval entirely below zero and a
    mean drop above --max-drop; for latency_ms and total_tokens a rise counts as a drop).
    """
    from ragline.cli import console, out, runtime
    from ragline.evals.compare import compare_metric
    from ragline.evals.runs import EvalRunner

    with runtime() as rt:
        runner = EvalRunner(rt)
        base, cand = runner.scores(baseline), runner.scores(candidate)
    gated = {m.strip() for m in (fail_on or "").split(",") if m.strip()}
    unknown = gated - set(base) - set(cand)
    if unknown:
        raise typer.BadParameter(
            f"--fail-on names metrics neither run has: {sorted(unknown)}; have {sorted(base)}"
        )
    table = Table("metric", "n", baseline, candidate, "delta", "95% CI", "better", "worse", "gate")
    failed = []
    for metric in sorted(set(base) & set(cand)):
        comparison = compare_metric(metric, base[metric], cand[metric])
        if comparison is None:
            continue
        sign = -1 if metric in LOWER_IS_BETTER else 1
        flipped = compare_metric(
            metric,
            {k: sign * v for k, v in base[metric].items()},
            {k: sign * v for k, v in cand[metric].items()},
        )
        assert flipped is not None
        regressed = flipped.regressed(max_drop)
        verdict = (
            "" if metric not in gated else ("[red]FAIL[/red]" if regressed else "[green]ok[/green]")
        )
        if metric in gated and regressed:
            failed.append(metric)
        table.add_row(
            metric,
            str(comparison.n),
            f"{comparison.baseline:.4f}",
            f"{comparison.candidate:.4f}",
            f"{comparison.delta:+.4f}",
            f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]",
            str(flipped.better),
            str(flipped.worse),
            verdict,
        )
    out.print(table)
    if failed:
        console.print(
            f"[red]regression:[/red] {', '.join(failed)} dropped significantly (max drop {max_drop})"
        )
        raise typer.Exit(1)
