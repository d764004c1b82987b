"""`ragline eval …`: datasets, runs, and the baseline-vs-candidate regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

eval_app = typer.Typer(
    help="Evaluation: datasets, runs, comparison with a CI gate.", no_args_is_help=True
)
dataset_app = typer.Typer(help="Evaluation datasets.", no_args_is_help=True)
eval_app.add_typer(dataset_app, name="dataset")


@dataset_app.command("import")
def dataset_import(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    jsonl: Annotated[
        Path | None, typer.Option(help="JSONL: {id, question, expected_answer?, relevant_ids?}")
    ] = None,
    beir: Annotated[
        Path | None, typer.Option(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    ] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split")] = "test",
    squad: Annotated[Path | None, typer.Option(help="SQuAD v2 JSON file")] = None,
    unanswerable: Annotated[
        bool,
        typer.Option(
            "--unanswerable/--answerable-only",
            help="SQuAD: keep unanswerable questions (scored by `refusal`)",
        ),
    ] = False,
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection",
            "-c",
            help="BEIR/SQuAD: also ingest the corpus into this collection (unchanged "
            "documents are skipped, so re-importing is cheap)",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Import at most N items", min=1)] = None,
) -> None:
    """Import items into a dataset (created if new; items with known ids are replaced).

    A document's id, for relevance, is its file name without extension: a BEIR corpus is
    ingested as `<_id>.txt`, SQuAD paragraphs as `<title>-<n>.txt`.
    """
    from itertools import islice

    from ragline.cli import ingest_documents, out, runtime
    from ragline.evals.datasets import (
        EvalStore,
        beir_corpus,
        read_beir,
        read_jsonl,
        read_squad,
        squad_corpus,
    )

    sources = [s for s in (jsonl, beir, squad) if s is not None]
    if len(sources) != 1:
        raise typer.BadParameter("give exactly one of --jsonl, --beir, --squad")
    if collection and jsonl:
        raise typer.BadParameter(
            "--collection ingests a BEIR or SQuAD corpus; ingest JSONL's "
            "documents with `ragline ingest`"
        )
    if jsonl:
        items = read_jsonl(jsonl)
    elif beir:
        items = read_beir(beir, split)
    else:
        assert squad is not None
        items = read_squad(squad, answerable_only=not unanswerable)
    with runtime() as rt:
        count = EvalStore(rt.store.engine).save(name, list(islice(items, limit)))
        out.print(f"dataset {name}: {count} items imported")
        if collection:
            corpus = beir_corpus(beir) if beir else squad_corpus(squad)  # type: ignore[arg-type]
            rows = ingest_documents(rt, collection, corpus)
            states: dict[str, int] = {}
            for status, *_ in rows.values():
                states[status] = states.get(status, 0) + 1
            out.print(f"corpus → collection {collection}: {states}")
            failed = {k: v[2] for k, v in rows.items() if v[0] in ("failed", "rejected")}
            for source, error in list(failed.items())[:10]:
                out.print(f"  {source}: {error}")
            if failed:
                raise typer.Exit(1)


@dataset_app.command("add-from-traces")
def dataset_add_from_traces(
    name: Annotated[str, typer.Argument(help="Dataset name (created if new)")],
    feedback: Annotated[
        str, typer.Option(help="Which traces: `negative` (feedback value ≤ 0)")
    ] = "negative",
    since: Annotated[
        str | None, typer.Option(help="Only feedback newer than this, e.g. 24h, 7d, 30m")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Add at most N items", min=1)] = None,
) -> None:
    """Production questions that users disliked become dataset items, linked to their trace
    (`metadata.trace_id`); the item id is the trace id, so adding twice changes nothing."""
    from itertools import islice

    from ragline.cli import out, runtime
    from ragline.durations import ago
    from ragline.evals.datasets import EvalStore, read_negative_feedback

    if feedback != "negative":
        raise typer.BadParameter("only --feedback negative is supported")
    with runtime() as rt:
        cutoff = ago(since) if since else None
        items = list(islice(read_negative_feedback(rt.store.engine, cutoff), limit))
        store = EvalStore(rt.store.engine)
        store.save(name, items)
    out.print(f"dataset {name}: {len(items)} items from traces with negative feedback")


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


def _settings_with(overrides: list[str], config: Path | None = None) -> Any:
    """Settings from the environment, or from a TOML `config` file (the same format as
    `ragline.toml`), then `section.key=value` overrides (values parsed as JSON when they can be)."""
    import json
    import os

    from ragline.config import Settings

    if config is not None:
        if not config.is_file():
            raise typer.BadParameter(f"--config {config}: no such file")
        previous = os.environ.get("RAGLINE_CONFIG")
        os.environ["RAGLINE_CONFIG"] = str(config)
        try:
            data = Settings().model_dump()
        except ValueError as exc:
            raise typer.BadParameter(f"--config {config}: {exc}") from exc
        finally:
            if previous is None:
                os.environ.pop("RAGLINE_CONFIG", None)
            else:
                os.environ["RAGLINE_CONFIG"] = previous
    else:
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
        str,
        typer.Option(
            help="retrieval (IR metrics only), answer (also generation), or the multi-step "
            "answers decompose and summarize (compare them with `eval compare`)"
        ),
    ] = "answer",
    limit: Annotated[int | None, typer.Option(help="First N items only", min=1)] = None,
    judge: Annotated[
        bool, typer.Option("--judge", help="Also grade answers with the LLM judge")
    ] = False,
    judge_model: Annotated[
        str | None,
        typer.Option(
            help="Judge model (implies --judge) [default: eval.judge_model, else llm.model]"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML settings file for this run (the candidate configuration)"),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Items in flight at once", min=1, max=64)] = 1,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Setting override, after --config: section.key=value"),
    ] = None,
) -> None:
    """Run a dataset against the current (or --config/--set) configuration and store every
    item's answer, per-leg retrieval, citations, latencies, tokens, trace id and scores."""
    from ragline.cli import out, progress_bar, runtime
    from ragline.evals.langfuse import LangfuseEvalMirror
    from ragline.evals.runs import EvalRunner

    settings = _settings_with(overrides or [], config)
    if judge_model:
        settings = settings.model_copy(
            update={"eval": settings.eval.model_copy(update={"judge_model": judge_model})}
        )
    with runtime(settings) as rt:
        mirror = LangfuseEvalMirror(settings.langfuse) if settings.langfuse.configured else None
        runner = EvalRunner(rt, rt.judge if judge or judge_model else None, mirror)
        with progress_bar(f"eval {name}") as progress:
            task = progress.add_task("", total=None)
            info = runner.run(
                dataset,
                collection or settings.default_collection,
                name,
                mode,
                limit,
                lambda done, total: progress.update(task, completed=done, total=total),
                concurrency,
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
    from ragline.evals.compare import compare_runs
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
    for row in compare_runs(base, cand, gated, max_drop):
        c = row.comparison
        verdict = (
            "" if not row.gated else ("[red]FAIL[/red]" if row.regressed else "[green]ok[/green]")
        )
        if row.gated and row.regressed:
            failed.append(c.metric)
        table.add_row(
            c.metric,
            str(c.n),
            f"{c.baseline:.4f}",
            f"{c.candidate:.4f}",
            f"{c.delta:+.4f}",
            f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]",
            str(row.better),
            str(row.worse),
            verdict,
        )
    out.print(table)
    if failed:
        console.print(
            f"[red]regression:[/red] {', '.join(failed)} dropped significantly (max drop {max_drop})"
        )
        raise typer.Exit(1)
