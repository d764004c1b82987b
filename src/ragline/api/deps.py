"""Dependencies: the app state, the caller (API key or anonymous) and its rate limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from ragline.api.errors import ApiError
from ragline.api.state import AppState
from ragline.config import Settings
from ragline.factory import Runtime
from ragline.store.keys import ApiKey


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ragline
    return state


State = Annotated[AppState, Depends(get_state)]


def get_runtime(state: State) -> Runtime:
    return state.runtime


def get_settings(state: State) -> Settings:
    return state.runtime.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: a verified API key, or an anonymous client (auth off) by address."""

    key: ApiKey | None
    address: str
    session_id: str | None
    user_id: str | None

    @property
    def identity(self) -> str:
        """What limits and budgets are counted against: the key, or the client address."""
        return f"key:{self.key.id}" if self.key else f"ip:{self.address}"

    def check_collection(self, collection: str) -> None:
        """403 unless the caller's key may use `collection`."""
        if self.key is not None and not self.key.allows(collection):
            raise ApiError(403, f"this API key may not use collection {collection!r}")


def authenticate(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_session_id: Annotated[str | None, Header(max_length=200)] = None,
    x_user_id: Annotated[str | None, Header(max_length=200)] = None,
) -> Caller:
    """Verify the bearer key (when auth is on), then apply the caller's rate limit."""
    settings = state.runtime.settings.server
    address = request.client.host if request.client else "unknown"
    key = None
    if settings.auth:
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = state.keys.verify(secret.strip())
        if key is None:
            raise ApiError(
                401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
    limit = (key.rate_limit if key else None) or (
        settings.rate_limit if key else settings.anonymous_rate_limit
    )
    caller = Caller(key, address, x_session_id, x_user_id)
    decision = state.limiter.hit(limit, caller.identity)
    if not decision.allowed:
        raise ApiError(
            429,
            f"rate limit of {limit} exceeded; retry in {decision.retry_after_s} s",
            headers={
                "Retry-After": str(decision.retry_after_s),
                "X-RateLimit-Limit": str(decision.limit),
            },
        )
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]
