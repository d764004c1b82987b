"""Dependencies: the app state, the caller (API key or anonymous) and its rate limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from ragline import logs
from ragline.api.errors import ApiError
from ragline.api.schemas import PRINTABLE
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
        logs.bind(collection=collection)  # on the request's log records
        if self.key is not None and not self.key.allows(collection):
            raise ApiError(403, f"this API key may not use collection {collection!r}")


def authenticate(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_session_id: Annotated[str | None, Header(max_length=200, pattern=PRINTABLE)] = None,
    x_user_id: Annotated[str | None, Header(max_length=200, pattern=PRINTABLE)] = None,
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
        check_auth_failures(state, address)
        key = state.keys.verify(secret.strip())
        if key is None:
            count_auth_failure(state, address)
            raise ApiError(
                401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        logs.bind(key_id=key.id)  # the id, never the secret
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


def check_auth_failures(state: AppState, address: str) -> None:
    """429 before the key lookup when this address presented too many bad keys this window:
    guessing keys costs a database query each, and a valid key from the address waits too."""
    limit = state.runtime.settings.server.auth_failure_limit
    if not limit:  # None, or empty from the environment: no limit
        return
    decision = state.limiter.check(limit, f"authfail:{address}")
    if not decision.allowed:
        raise ApiError(
            429,
            f"too many invalid API keys from this address; retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )


def count_auth_failure(state: AppState, address: str) -> None:
    """Count one invalid or revoked key against its address (successes never count)."""
    limit = state.runtime.settings.server.auth_failure_limit
    if limit:
        state.limiter.hit(limit, f"authfail:{address}")
