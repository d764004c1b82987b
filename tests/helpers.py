"""Small helpers the integration tests share."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragline.config import Settings
from ragline.factory import Runtime

REDIS_URL = "redis://127.0.0.1:6379/0"  # the machine's Redis; tests use a key prefix of their own


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


class TcpProxy:
    """A loopback TCP proxy to a real server, to cut a service off and bring it back.

    `cut()` closes the listening socket and every open connection (clients see resets, then
    refused connections: what a database restart or a network partition looks like to them);
    `restore()` listens again on the same port. `open` counts the connections that neither side
    has closed yet."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.open = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [s for s in (listener,) if s is not None] + list(sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # the 5 s were for connecting: a stream may pause longer
            with self._lock:
                self._sockets |= {client, upstream}
                self.open += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, a is client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if from_client:
            with self._lock:
                self.open -= 1


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in this process: its base URL.
    For what TestClient cannot show, such as a request refused before its body is sent."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
