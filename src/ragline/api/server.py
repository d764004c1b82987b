"""The uvicorn server of `ragline serve`, with a drain period for streams on shutdown."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT, running streams are told the server is draining, so
    they end with a `shutting_down` event and an exported trace within `server.drain_s`,
    instead of being cancelled mid-token when uvicorn's grace period ends."""

    def __init__(self, app: FastAPI, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        state = getattr(self.app.state, "ragline", None)
        if state is not None:
            state.draining.set()
        super().handle_exit(sig, frame)
