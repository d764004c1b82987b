"""The ingestion worker: claims jobs from the SQL queue and runs them with retries.

A job that raises `DocumentError` (bad input) is dead at once: retrying cannot fix the file.
Any other error is retried with exponential backoff (base·2^(attempt−1), capped) until
`max_attempts`, then the job is dead and the document failed, with the error kept.
A running job's lease is renewed in the background; a worker that dies (SIGKILL, OOM) loses
its job to another worker one lease later, and a job that loses `max_attempts` workers this
way is dead-lettered by the store instead of being claimed forever.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable

from ragline import metrics
from ragline.config import IngestionSettings
from ragline.domain import Job
from ragline.errors import DocumentError, LeaseLostError, one_line
from ragline.ingestion.pipeline import IngestionPipeline, JobOutcome
from ragline.store import Store
from ragline.tracing import attributes as attr
from ragline.tracing.setup import Tracing, kind, record_error

log = logging.getLogger(__name__)


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Delay before the next attempt after `attempt` failures: base·2^(attempt−1), capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


class Worker:
    """Runs jobs one at a time. Several workers (threads or processes) may share one store."""

    def __init__(
        self,
        store: Store,
        pipeline: Callable[[], IngestionPipeline],
        settings: IngestionSettings,
        worker_id: str | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        self._pipeline_factory = pipeline
        self._pipeline: IngestionPipeline | None = None
        self.settings = settings
        self.tracing = tracing or Tracing.disabled()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    @property
    def pipeline(self) -> IngestionPipeline:
        if self._pipeline is None:
            self._pipeline = self._pipeline_factory()
        return self._pipeline

    def run_once(
        self, job_ids: Iterable[str] | None = None
    ) -> tuple[Job, JobOutcome | None] | None:
        """Claim and run one job. Returns (job after the attempt, outcome or None if it failed)."""
        job = self.store.claim_job(self.worker_id, self.settings.lease_s, job_ids)
        if job is None:
            return None
        with self.tracing.tracer.start_as_current_span(attr.INGEST) as span:
            span.set_attributes(
                {
                    **kind(attr.KIND_CHAIN, "chain"),
                    attr.LANGFUSE_TRACE_NAME: attr.INGEST,
                    attr.LANGFUSE_ENVIRONMENT: self.tracing.settings.environment,
                    attr.COLLECTION: job.collection,
                    attr.JOB_ID: job.id,
                    attr.DOCUMENT_ID: job.document_id,
                    attr.ATTEMPT: job.attempts,
                    attr.WORKER_ID: self.worker_id,
                }
            )
            try:
                with LeaseKeeper(self.store, job, self.settings.lease_s):
                    outcome = self.pipeline.process(job)
            except LeaseLostError as exc:  # another worker runs it now; ours changed nothing
                record_error(span, exc)
                metrics.JOBS.labels("lease_lost").inc()
                log.warning("job lease lost job=%s worker=%s", job.id, self.worker_id)
                return self.store.get_job(job.id), None
            except DocumentError as exc:
                record_error(span, exc)
                metrics.ERRORS.labels("ingest").inc()
                metrics.JOBS.labels("dead").inc()
                log.info("job dead job=%s document=%s error=%s", job.id, job.document_id, exc)
                return self.store.fail_job(job, str(exc), retry_in_s=None), None
            except Exception as exc:
                record_error(span, exc)
                error = f"{type(exc).__name__}: {exc}"
                retry = None
                if job.attempts < job.max_attempts:
                    retry = backoff_s(
                        job.attempts, self.settings.backoff_base_s, self.settings.backoff_max_s
                    )
                span.set_attribute(attr.RETRY_IN_S, -1 if retry is None else retry)
                metrics.ERRORS.labels("ingest").inc()
                metrics.JOBS.labels("retried" if retry is not None else "dead").inc()
                log.warning(
                    "job failed job=%s attempt=%d retry_in_s=%s error=%s",
                    job.id,
                    job.attempts,
                    retry,
                    error,
                )
                return self.store.fail_job(job, error, retry_in_s=retry), None
            span.set_attributes(
                {attr.CHUNK_COUNT: outcome.chunks, attr.JOB_SUPERSEDED: outcome.superseded}
            )
            metrics.JOBS.labels("ready").inc()
        return self.store.get_job(job.id), outcome

    def run_forever(self, stop: threading.Event, idle_s: float = 0.5) -> None:
        """Process jobs until `stop` is set; between jobs only, so a running job always finishes.

        When the store is unreachable the worker waits, 1 s doubling to 30 s, and tries again:
        it never dies of an outage, and a job it was running when the outage began is resumed
        after its lease (by this worker or another)."""
        outage = 0
        while not stop.is_set():
            try:
                ran = self.run_once()
            except Exception as exc:
                outage += 1
                wait = backoff_s(outage, 1.0, 30.0)
                log.warning(
                    "worker cannot reach the queue worker=%s retry_in_s=%.0f error=%s",
                    self.worker_id,
                    wait,
                    one_line(exc),
                )
                log.debug("queue error", exc_info=True)
                stop.wait(wait)
                continue
            if outage:
                log.info("worker reached the queue again worker=%s", self.worker_id)
                outage = 0
            if ran is None:
                stop.wait(idle_s)


class LeaseKeeper:
    """Renews a running job's lease every third of it from a background thread, so a job may
    run longer than its lease while a worker that dies loses it within one lease."""

    def __init__(self, store: Store, job: Job, lease_s: float) -> None:
        self.store, self.job, self.lease_s = store, job, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragline-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.store.renew_lease(self.job, self.lease_s):
                    log.warning("job lease lost job=%s; its result will be dropped", self.job.id)
                    return
            except Exception as exc:  # the store is down: the next renewal may work
                log.warning("job lease not renewed job=%s error=%s", self.job.id, one_line(exc))
