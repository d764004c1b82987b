"""The `ragline` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ragline import logs
from ragline.config import LogSettings, Settings
from ragline.errors import BackendError, RaglineError
from ragline.evals.cli import eval_app
from ragline.factory import Runtime
from ragline.generation.multistep import Source
from ragline.ingestion.parsers import SUPPORTED_EXTENSIONS
from ragline.models.embedders import Embedder
from ragline.prompts_cli import prompts_app
from ragline.store.repository import JOB_DEAD, JOB_DONE
from ragline.tracing import attributes as attr

app = typer.Typer(
    help="ragline: a production RAG service. Ingest documents, ask cited questions, inspect them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Inspect and retry ingestion jobs.", no_args_is_help=True)
llm_app = typer.Typer(help="The local llama.cpp LLM server.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(llm_app, name="llm")
keys_app = typer.Typer(help="API keys for the HTTP service.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(eval_app, name="eval")
app.add_typer(prompts_app, name="prompts")
log = logging.getLogger("ragline.cli")
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


def progress_bar(label: str, remaining: bool = False, detail: bool = False) -> Progress:
    """The CLI's one progress bar, on stderr: label, bar, done/total, then the elapsed time
    (or, with `remaining`, the time left), then the task's description with `detail`."""
    clock = TimeRemainingColumn() if remaining else TimeElapsedColumn()
    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), clock]
    if detail:
        columns.append(TextColumn("{task.description}"))
    return Progress(*columns, console=console, transient=True)


CollectionOption = Annotated[
    str | None,
    typer.Option("--collection", "-c", help="Collection name [default: settings' default]"),
]


SERVICES = ("serve", "worker")  # long-running: INFO by default, for their access and job logs


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens")] = False,
) -> None:
    # logging for every command, from the `log` settings (format, level)
    try:
        settings = Settings().log
    except ValueError:  # the command itself reports the configuration error
        settings = LogSettings()
    default = "INFO" if ctx.invoked_subcommand in SERVICES else "WARNING"
    logs.configure(settings, logs.level_of(settings, default, verbose))


def status(message: str) -> None:
    """A status line of a long-running command: on the console, or a log record when logs are
    JSON lines (an aggregator would choke on a bare line among them)."""
    if logs.is_json():
        log.info(message)
    else:
        console.print(message)


@contextmanager
def runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """Build the runtime (from the environment unless given settings); turn ragline errors
    into a readable message and exit 1."""
    try:
        with Runtime(settings or Settings()) as rt:
            yield rt
    except RaglineError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except ValueError as exc:  # settings validation
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _collect(paths: list[Path]) -> list[tuple[Path, str]]:
    """Files to ingest and their source names; folders are walked for supported extensions."""
    files: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if (
                    found.is_file()
                    and found.suffix.lower() in SUPPORTED_EXTENSIONS
                    and not any(part.startswith(".") for part in found.relative_to(path).parts)
                ):
                    files.append((found, _source_name(found)))
        elif path.is_file():
            files.append((path, _source_name(path)))
        else:
            raise typer.BadParameter(f"{path} does not exist")
    return files


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


Identified = TypeVar("Identified", bound=_HasId)


def _one_by_prefix(items: list[Identified], prefix: str, what: str) -> Identified:
    """The one item whose id starts with `prefix` (ids are long; a prefix is enough)."""
    matches = [item for item in items if item.id.startswith(prefix)]
    if len(matches) != 1:
        console.print(f"[red]error:[/red] {len(matches)} {what} match {prefix!r}")
        raise typer.Exit(1)
    return matches[0]


def _source_name(path: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or folders (PDF, DOCX, HTML, Markdown, text)")
    ],
    collection: CollectionOption = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the jobs to finish")
    ] = True,
) -> None:
    """Ingest files and folders: queue one job per file, then run them with a progress bar.

    Identical content already in the collection is skipped; changed content replaces the
    document's previous chunks. Each file's outcome is printed: chunks indexed, or the error.
    """
    with runtime() as rt:
        name = collection or rt.settings.default_collection
        limit = rt.settings.ingestion.max_file_bytes
        files = _collect(paths)
        sizes = {source: path.stat().st_size for path, source in files}
        too_big = {source: size for source, size in sizes.items() if size > limit}
        documents = (  # read one at a time, and never a file over the limit
            (source, path.read_bytes()) for path, source in files if source not in too_big
        )
        rows = ingest_documents(rt, name, documents, wait)
        for source, size in too_big.items():
            rows[source] = ["rejected", "", f"{size} bytes exceeds the {limit}-byte limit"]
        _print_ingest_table(name, rows)
        if any(row[0] in ("failed", "rejected") for row in rows.values()):
            raise typer.Exit(1)


def ingest_documents(
    rt: Runtime, collection: str, documents: Iterable[tuple[str, bytes]], wait: bool = True
) -> dict[str, list[str]]:
    """Queue one job per (source, content), then (when `wait`) run them with a progress bar and
    index the result. source -> [status, chunks, error]."""
    rows: dict[str, list[str]] = {}
    job_ids: dict[str, str] = {}
    limit = rt.settings.ingestion.max_file_bytes
    for source, content in documents:
        if len(content) > limit:
            rows[source] = ["rejected", "", f"{len(content)} bytes exceeds the {limit}-byte limit"]
            continue
        submission = rt.store.submit(
            collection, source, content, rt.settings.ingestion.max_attempts
        )
        if submission.job is None:
            rows[source] = ["unchanged", str(submission.document.chunk_count), ""]
        else:
            job_ids[submission.job.id] = source
            rows[source] = ["queued", "", ""]
    if wait and job_ids:
        _run_jobs(rt, job_ids, rows)
        try:
            rt.sync_index()
            with console.status("building the search index (HNSW)"):
                rt.index_sync.optimize()
        except BackendError as exc:  # e.g. `ragline serve` owns the index: it will sync
            console.print(f"[yellow]not indexed by this command:[/yellow] {exc}")
    return rows


def _run_jobs(rt: Runtime, job_ids: dict[str, str], rows: dict[str, list[str]]) -> None:
    worker = rt.worker()
    pending = set(job_ids)
    with progress_bar("ingesting", detail=True) as progress:
        task = progress.add_task("", total=len(pending))
        while pending:
            result = worker.run_once(pending)
            if result is None:
                time.sleep(0.2)  # only jobs waiting out a retry backoff remain
                continue
            job, outcome = result
            source = job_ids[job.id]
            progress.update(task, description=source)
            if job.status == JOB_DONE and outcome is not None:
                rows[source] = ["ready", str(outcome.chunks), ""]
            elif job.status == JOB_DEAD:
                rows[source] = ["failed", "", job.error or ""]
            else:
                rows[source] = ["retrying", "", job.error or ""]
                continue
            pending.discard(job.id)
            progress.advance(task)


def _print_ingest_table(collection: str, rows: dict[str, list[str]]) -> None:
    table = Table(title=f"collection {collection}", title_justify="left")
    for column in ("file", "status", "chunks", "error"):
        table.add_column(column, overflow="fold")
    colors = {"ready": "green", "unchanged": "cyan", "failed": "red", "rejected": "red"}
    for source, (status, chunks, error) in rows.items():
        color = colors.get(status, "yellow")
        table.add_row(source, f"[{color}]{status}[/{color}]", chunks, error)
    out.print(table)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question")],
    collections: Annotated[
        list[str] | None,
        typer.Option(
            "--collection",
            "-c",
            help="Collection; repeat for several sources, optionally NAME:WEIGHT (e.g. -c kb:2 -c web)",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="rag (retrieve, answer), decompose (sub-questions, each retrieved, then one "
            "answer), summarize (per-source summaries, then the answer)"
        ),
    ] = "rag",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of streaming")
    ] = False,
    top_n: Annotated[
        int | None, typer.Option(help="Passages to give the model", min=1, max=50)
    ] = None,
) -> None:
    """Answer a question from one or several collections, streamed, with numbered citations."""
    from ragline.generation.multistep import MODES

    if mode not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}")
    with runtime() as rt:
        sources = [_source(spec) for spec in collections or [rt.settings.default_collection]]
        name = ",".join(s.collection for s in sources)
        rt.sync_index()
        answer: dict[str, Any] = {}
        events = rt.query_service.stream(
            question, sources[0].collection, top_n, sources=sources, mode=mode
        )
        for event, data in events:
            if event == "token" and not as_json:
                out.print(data["text"], end="")
            elif event == "retrieval" and not as_json and not data["context"]:
                console.print(f"[yellow]no passages retrieved from {name!r}[/yellow]")
            elif event == "done":
                answer = data
        if as_json:
            out.print_json(json.dumps(answer))
        else:
            _print_sources(answer)


def _source(spec: str) -> Source:
    name, _, weight = spec.partition(":")
    try:
        return Source(name, float(weight)) if weight else Source(name)
    except ValueError as exc:
        raise typer.BadParameter(f"-c {spec!r}: use NAME or NAME:WEIGHT (a number)") from exc


def _print_sources(answer: dict[str, Any]) -> None:
    out.print("\n")
    cited = {c["n"] for c in answer["citations"]}
    if answer["citation_method"] == "overlap":
        console.print(
            "[dim]the model cited nothing; * marks passages the answer's words come from[/dim]"
        )
    for block in answer["context"]:
        marker = "*" if block["n"] in cited else " "
        where = f"{block['collection']}/" if block.get("collection") else ""
        out.print(
            f"{marker}[{block['n']}] {where}{block['source']}  (chunk {block['chunk_id'][:8]}, score {block['score']:.4f})"
        )
    if answer["invalid_citations"]:
        console.print(
            f"[yellow]the answer cites passages that do not exist: {answer['invalid_citations']}[/yellow]"
        )
    usage = answer["usage"]
    estimated = " (estimated)" if usage.get("estimated") else ""
    console.print(
        f"[dim]finish_reason={answer['finish_reason']} tokens prompt={usage.get('prompt_tokens')} "
        f"completion={usage.get('completion_tokens')}{estimated} "
        f"total={answer['timings_ms'].get('total', 0):.0f} ms[/dim]"
    )


@app.command()
def collections() -> None:
    """List collections with their document and chunk counts."""
    with runtime() as rt:
        table = Table("collection", "documents", "chunks", "version", "created")
        for c in rt.store.list_collections():
            table.add_row(
                c.name,
                str(c.documents),
                str(c.chunks),
                str(c.version),
                f"{c.created_at:%Y-%m-%d %H:%M}",
            )
        out.print(table)


@app.command()
def documents(collection: CollectionOption = None) -> None:
    """List documents with their status (queued, processing, ready, failed) and errors."""
    with runtime() as rt:
        table = Table("id", "collection", "source", "status", "chunks", "updated", "error")
        for d in rt.store.list_documents(collection):
            color = {"ready": "green", "failed": "red"}.get(d.status, "yellow")
            table.add_row(
                d.id[:12],
                d.collection,
                d.source,
                f"[{color}]{d.status}[/{color}]",
                str(d.chunk_count),
                f"{d.updated_at:%Y-%m-%d %H:%M}",
                d.error or "",
            )
        out.print(table)


@app.command()
def delete(
    document_id: Annotated[str, typer.Argument(help="Document id (see `ragline documents`)")],
) -> None:
    """Delete a document: its chunks leave the store and the index."""
    with runtime() as rt:
        document = _one_by_prefix(rt.store.list_documents(), document_id, "documents")
        rt.delete_document(document.id)
        out.print(f"deleted {document.source} from {document.collection}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address [default: settings, 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: settings, 8000]")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Ingestion worker threads in this process [default: 2]", min=0),
    ] = None,
) -> None:
    """Run the HTTP API (OpenAPI at /docs) with ingestion workers and index sync in-process.

    On the embedded default this one process is the whole service: it starts the local LLM
    server, runs ingestion in worker threads and keeps the index in sync. More ingestion
    throughput: add `ragline worker` processes on the same database.
    """
    import uvicorn

    from ragline.api.app import build_app
    from ragline.api.server import DrainingServer

    try:
        settings = Settings()
        overrides = {
            k: v
            for k, v in (("host", host), ("port", port), ("worker_threads", workers))
            if v is not None
        }
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update=overrides)}
        )
        application = build_app(settings, warm=True)
    except ValueError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with runtime(settings) as rt:  # refuse at once, not in the first request
        rt.check_embedder()
    status(
        f"ragline serving on http://{settings.server.host}:{settings.server.port} (docs at /docs)"
    )
    config = uvicorn.Config(
        application,
        host=settings.server.host,
        port=settings.server.port,
        # uvicorn's loggers propagate to ours (same format and level); the access log is ours
        # (`RequestLog`: request id, trace id, key id), so uvicorn's own is off
        log_config=None,
        log_level=None,
        access_log=False,
        # streams see the drain between tokens: 10 s more for one stalled token
        timeout_graceful_shutdown=int(settings.server.drain_s) + 10,
        # above common proxy idle timeouts (60 s): with uvicorn's 5 s, a busy loop closed reused
        # connections whose next request was already sent (resets at 200 clients, soak bench)
        timeout_keep_alive=75,
    )
    DrainingServer(application, config).run()


@app.command()
def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            help="Jobs processed at once (threads); two keep two cores busy, as one parses and "
            "commits while the other embeds",
            min=1,
            max=32,
        ),
    ] = 2,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics on this port (deploy/ uses 9464)", min=1),
    ] = None,
) -> None:
    """Run ingestion workers until SIGTERM or Ctrl-C; jobs in progress always finish.

    Workers need only the database and the embedder, never the index (the index owner, e.g.
    `ragline serve`, applies their results), so any number may run on one database.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with runtime() as rt:
        rt.check_embedder()
        if metrics_port is not None:
            from ragline.metrics import serve_metrics

            serve_metrics(rt, "0.0.0.0", metrics_port)
            status(f"metrics on http://0.0.0.0:{metrics_port}/metrics")
        threads = [
            threading.Thread(
                target=rt.worker().run_forever, args=(stop,), name=f"ragline-worker-{n}"
            )
            for n in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        status(f"{concurrency} ingestion worker(s) waiting for jobs (Ctrl-C to stop)")
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.5)
        status("workers stopped")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for")],
    collections: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated collections it may use [default: all]; an empty list: none"
        ),
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="Rate limit, e.g. 60/minute [default: server's]")
    ] = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from ragline.api.limits import parse_limit
    from ragline.store.keys import KeyStore

    if rate is not None:
        try:
            parse_limit(rate)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    # an empty --collections is a key for no collection, never one for all of them
    scope = (
        None if collections is None else [c.strip() for c in collections.split(",") if c.strip()]
    )
    with runtime() as rt:
        key, secret = KeyStore(rt.store.engine).create(name, scope, rate)
        console.print(f"created key {key.id} ({key.name}); store it now, it is not shown again:")
        out.print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (id, name, prefix, scope, limit, status)."""
    from ragline.store.keys import KeyStore

    with runtime() as rt:
        table = Table("id", "name", "prefix", "collections", "rate", "created", "status")
        for key in KeyStore(rt.store.engine).list():
            status = "revoked" if key.revoked_at else "active"
            table.add_row(
                key.id[:12],
                key.name,
                key.prefix + "…",
                key.scope,
                key.rate_limit or "default",
                f"{key.created_at:%Y-%m-%d}",
                status,
            )
        out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (see `ragline keys list`)")],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    from ragline.store.keys import KeyStore

    with runtime() as rt:
        keys = KeyStore(rt.store.engine)
        key = _one_by_prefix(keys.list(), key_id, "keys")
        keys.revoke(key.id)
        out.print(f"revoked {key.id} ({key.name})")


@app.command()
def reindex(
    collection: CollectionOption = None,
    reembed: Annotated[
        bool,
        typer.Option(help="Re-embed every chunk, even those the configured embedder made"),
    ] = False,
) -> None:
    """Rebuild the index (or one collection of it) from the SQL store, the source of truth.

    Repairs an index restored from a copy taken mid-write or out of step with the database, and
    moves vectors to a new index backend (index.url). After a change of embedding model or
    backend, it first re-embeds the chunks of every collection made by another embedder (the
    service refuses to start until then). Stop `ragline serve` and workers first."""
    with runtime() as rt:
        fingerprint = rt.settings.embedding.fingerprint()
        chunk_counts = {c.name: c.chunks for c in rt.store.list_collections()}
        names = [collection] if collection else list(chunk_counts)
        stale = rt.store.embedder_mismatches(fingerprint)
        to_embed = [n for n in names if reembed or n in stale]
        embedder = rt.build_embedder() if to_embed else None
        for name in to_embed:
            assert embedder is not None
            _reembed(rt, embedder, name, chunk_counts.get(name, 0), fingerprint)
        total = rt.store.last_log_seq()
        with progress_bar("reindexing") as progress:
            task = progress.add_task("", total=total if collection is None else None)
            applied = rt.index_sync.rebuild(
                collection, lambda done: progress.update(task, completed=done)
            )
        with console.status("building the search index (HNSW)"):
            rt.index_sync.optimize()
        counts = ", ".join(f"{name}: {rt.index.count(name)} points" for name in names)
        out.print(f"reindexed from {applied} index-log entries ({counts})")


def _reembed(rt: Runtime, embedder: Embedder, name: str, chunks: int, fingerprint: str) -> None:
    with progress_bar(f"re-embedding {name}", remaining=True) as progress:
        task = progress.add_task("", total=chunks)
        done = rt.store.reembed(
            name,
            embedder.embed_documents,
            fingerprint,
            progress=lambda n: progress.advance(task, n),
        )
    out.print(f"re-embedded {done} chunks of {name} with {fingerprint}")


@app.command()
def metrics(
    since: Annotated[str, typer.Option(help="Window: 30m, 1h, 24h, 7d")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """SLO figures from the local trace store: P50/P95/P99 per stage and the alert thresholds
    (retrieval P50 ≤ 100 ms, P99 ≤ 500 ms, TTFT P95 ≤ 1 s, …), each marked ok or breached.

    Exits 1 when a threshold is breached, so it can gate a smoke test."""
    from ragline.durations import ago
    from ragline.ops.slo import slo_report

    with runtime() as rt:
        rt.tracing.flush()
        report = slo_report(rt.store.engine, ago(since))
    if as_json:
        out.print_json(json.dumps(report, default=str))
    else:
        stages = Table("stage", "count", "P50 ms", "P95 ms", "P99 ms", title=f"last {since}")
        for name, figures in report["stages"].items():
            stages.add_row(
                name,
                str(figures["count"]),
                *(
                    "" if figures[k] is None else f"{figures[k]:.1f}"
                    for k in ("p50_ms", "p95_ms", "p99_ms")
                ),
            )
        out.print(stages)
        slo = Table("figure", "value", "threshold", "status", "samples")
        for figure in report["figures"]:
            value = figure["value"]
            shown = "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".") + figure["unit"]
            status = {True: "[green]ok[/green]", False: "[red]breached[/red]", None: "no data"}[
                figure["ok"]
            ]
            slo.add_row(figure["name"], shown, figure["threshold"], status, str(figure["samples"]))
        out.print(slo)
        rates = report["rates"]
        out.print(
            f"{report['traces']} traces: {rates['errors']} errors, {rates['empty_retrievals']} "
            f"empty retrievals, {rates['truncated_answers']} truncated answers. {report['note']}."
        )
    if any(f["ok"] is False for f in report["figures"]):
        raise typer.Exit(1)


@app.command()
def doctor(
    trace_id: Annotated[str | None, typer.Argument(help="Diagnose this trace")] = None,
    since: Annotated[
        str | None, typer.Option(help="Summarise findings over recent traces: 1h, 24h, 7d")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Diagnose a trace (empty retrieval, truncated answer, irrelevant or ungrounded answer,
    slow stage, oversized chunks): each finding with its evidence and a concrete fix.
    With --since, how often each finding occurred over recent traces."""
    from ragline.durations import ago
    from ragline.ops.doctor import Doctor, as_dict

    if (trace_id is None) == (since is None):
        raise typer.BadParameter("give a TRACE_ID or --since (e.g. --since 1h)")
    with runtime() as rt:
        rt.tracing.flush()
        found = Doctor(rt.store.engine, rt.settings)
        if since is not None:
            summary = found.summary(ago(since))
            if as_json:
                out.print_json(json.dumps(summary, default=str))
                return
            table = Table(
                "finding",
                "traces",
                "share",
                "severity",
                "fix",
                "example",
                title=(f"{summary['traces']} traces since {since}"),
            )
            for rule in summary["rules"]:
                table.add_row(
                    rule["rule"],
                    str(rule["traces"]),
                    f"{rule['share']:.0%}",
                    rule["severity"],
                    rule["fix"],
                    rule["examples"][0],
                )
            out.print(table)
            return
        assert trace_id is not None
        findings = as_dict(found.diagnose(rt.traces.spans(trace_id)))
    if as_json:
        out.print_json(json.dumps({"trace_id": trace_id, "findings": findings}, default=str))
        return
    if not findings:
        out.print(f"trace {trace_id}: no problem found")
        return
    colors = {"error": "red", "warning": "yellow", "info": "cyan"}
    for finding in findings:
        color = colors[finding["severity"]]
        out.print(
            f"[{color}]{finding['severity']}[/{color}] [bold]{finding['rule']}[/bold]: "
            f"{finding['summary']}"
        )
        evidence = ", ".join(f"{k}={v}" for k, v in finding["evidence"].items() if v is not None)
        out.print(f"  evidence: {evidence}")
        out.print(f"  fix: {finding['fix']}")


@app.command()
def traces(
    trace_id: Annotated[str | None, typer.Argument(help="Show this trace as a span tree")] = None,
    limit: Annotated[int, typer.Option(help="How many recent traces", min=1, max=500)] = 20,
    session: Annotated[str | None, typer.Option(help="Only this session id")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only traces with an error")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List recent traces, or print one as a span tree with durations and key attributes."""
    from ragline.tracing.store import span_tree

    with runtime() as rt:
        if trace_id is None:
            summaries = rt.traces.recent(limit, session, errors)
            if as_json:
                out.print_json(json.dumps([vars(s) for s in summaries], default=str))
                return
            table = Table(
                "trace", "name", "started", "ms", "status", "spans", "session", "feedback", "input"
            )
            for s in summaries:
                color = "red" if s.status == "ERROR" else "green"
                table.add_row(
                    s.trace_id,
                    s.name,
                    f"{s.start_time:%H:%M:%S}",
                    f"{s.duration_ms:.0f}",
                    f"[{color}]{s.status}[/{color}]",
                    str(s.spans),
                    s.session_id or "",
                    "" if s.feedback is None else f"{s.feedback:g}",
                    (s.input or "")[:60],
                )
            out.print(table)
            return
        rows = rt.traces.spans(trace_id)
        if as_json:
            out.print_json(
                json.dumps({"trace_id": trace_id, "spans": span_tree(rows)}, default=str)
            )
            return
        for root in span_tree(rows):
            _print_span(root, 0, root["start_time"])


KEY_ATTRIBUTES = (  # printed after a span's name by `ragline traces <id>`, when present
    attr.COLLECTION,
    attr.SESSION_ID,
    attr.EMBEDDING_MODEL_NAME,
    attr.CACHE_ANSWER_HIT,
    attr.CACHE_RETRIEVAL_HIT,
    attr.HITS,
    attr.EMPTY_RETRIEVAL,
    attr.CONTEXT_TOKENS,
    attr.CONTEXT_UTILISATION,
    attr.LLM_MODEL_NAME,
    attr.LLM_TOKEN_COUNT_PROMPT,
    attr.LLM_TOKEN_COUNT_COMPLETION,
    attr.TIME_TO_FIRST_TOKEN_MS,
    attr.FINISH_REASON,
    attr.CHUNK_COUNT,
    attr.BATCH_SIZE,
    attr.ATTEMPT,
)


def _print_span(span: dict[str, Any], depth: int, trace_start: Any) -> None:
    offset = (span["start_time"] - trace_start).total_seconds() * 1000
    color = "red" if span["status"] == "ERROR" else "cyan"
    details = " ".join(
        f"{k.rsplit('.', 1)[-1] if k.count('.') > 1 else k}={span['attributes'][k]}"
        for k in KEY_ATTRIBUTES
        if k in span["attributes"]
    )
    out.print(
        f"{'  ' * depth}[{color}]{span['name']}[/{color}] {span['duration_ms']:.1f} ms "
        f"[dim](+{offset:.1f})[/dim] {details}"
    )
    if span["status"] == "ERROR":
        out.print(f"{'  ' * depth}  [red]{span['status_message']}[/red]")
    for child in span["children"]:
        _print_span(child, depth + 1, trace_start)


@app.command()
def feedback(
    trace_id: Annotated[
        str, typer.Argument(help="Trace id (from `ask --json`, a response, `traces`)")
    ],
    value: Annotated[float, typer.Argument(help="1 helpful / 0 not, or -1..1", min=-1.0, max=1.0)],
    comment: Annotated[str | None, typer.Option(help="Why")] = None,
    name: Annotated[str, typer.Option(help="Score name")] = "user_feedback",
) -> None:
    """Record feedback on a trace (sent to Langfuse as a score when configured)."""
    with runtime() as rt:
        result = rt.feedback.record(trace_id, value, comment, name)
        out.print(
            f"feedback {result.id} on trace {trace_id}" + (" (trace kept)" if result.kept else "")
        )


@jobs_app.command("retry")
def jobs_retry(job_id: Annotated[str, typer.Argument(help="Job id")]) -> None:
    """Queue a dead job again with a fresh attempt budget (run it with `ragline ingest` or a worker)."""
    with runtime() as rt:
        job = rt.store.retry_job(job_id)
        out.print(f"job {job.id} is {job.status}")


@llm_app.command("serve")
def llm_serve(
    port: Annotated[int | None, typer.Option(help="Port [default: a free one]")] = None,
) -> None:
    """Run the local llama.cpp server in the foreground; other ragline commands reuse it."""
    from ragline.models.llm_server import STATE_FILE, LocalLLMServer, default_gguf

    settings = Settings()
    model = Path(settings.llm.local_model_path) if settings.llm.local_model_path else default_gguf()
    server = LocalLLMServer(
        model,
        settings.llm.model,
        settings.llm.context_window,
        settings.llm.local_threads,
        port=port,
    )
    state = settings.home / STATE_FILE
    settings.home.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        base_url = server.start()
        state.write_text(json.dumps({"base_url": base_url, "pid": os.getpid()}))
        console.print(f"llama.cpp server ready at {base_url} (Ctrl-C to stop)")
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        state.unlink(missing_ok=True)
        server.stop()


if __name__ == "__main__":
    app()
