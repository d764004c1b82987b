"""What one `ragline serve` process holds: the runtime, keys, limiter and background threads."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ragline.api.limits import RateLimiter
from ragline.factory import Runtime
from ragline.index.sync import SyncThread
from ragline.store.keys import KeyStore

log = logging.getLogger(__name__)
JOB_GRACE_S = 15.0  # after drain_s (20) + 10 and a 5 s flush: inside Kubernetes' 60 s grace


@dataclass
class AppState:
    runtime: Runtime
    keys: KeyStore
    limiter: RateLimiter
    stop: threading.Event = field(default_factory=threading.Event)
    draining: threading.Event = field(default_factory=threading.Event)  # SIGTERM received
    threads: list[threading.Thread] = field(default_factory=list)
    sync_thread: SyncThread | None = None

    @classmethod
    def start(cls, runtime: Runtime) -> AppState:
        settings = runtime.settings
        state = cls(
            runtime,
            KeyStore(runtime.store.engine),
            RateLimiter(settings.cache.redis_url, settings.cache.key_prefix + "limits"),
        )
        runtime.sync_index()
        runtime.index_sync.optimize()  # before serving: dense search is a full scan until then
        state.sync_thread = SyncThread(runtime.index_sync)
        state.sync_thread.start()
        if settings.server.embedded_worker:
            for number in range(settings.server.worker_threads):
                worker = runtime.worker()
                thread = threading.Thread(
                    target=worker.run_forever,
                    args=(state.stop,),
                    name=f"ragline-worker-{number}",
                    daemon=True,
                )
                thread.start()
                state.threads.append(thread)
        if not settings.server.auth:
            log.warning(
                "API key authentication is OFF (RAGLINE_SERVER__AUTH=false): for local use only"
            )
        return state

    def close(self) -> None:
        """Stop claiming jobs; export the traces of answered requests first (with a grace
        period running out, tracing would otherwise be the first thing lost); give running
        jobs `JOB_GRACE_S` to finish (an unfinished one is resumed by another worker after its
        lease); stop syncing; close the runtime, which flushes the last spans."""
        self.draining.set()
        self.stop.set()
        self.runtime.tracing.flush(timeout_s=5)
        deadline = time.monotonic() + JOB_GRACE_S
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.sync_thread is not None:
            self.sync_thread.stop()
        self.runtime.close()
