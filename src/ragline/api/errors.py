"""Errors as JSON `{error: {code, message}}`; ragline's exception tree mapped to HTTP statuses."""

from __future__ import annotations

import logging

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ragline import errors
from ragline.errors import one_line

log = logging.getLogger(__name__)

STATUS = [  # most specific first
    (errors.NotFoundError, 404, "not_found"),
    (errors.DocumentError, 422, "invalid_document"),
    (errors.InvalidRequestError, 422, "invalid_request"),
    (errors.LLMTimeoutError, 504, "llm_timeout"),
    (errors.DeadlineExceededError, 504, "timeout"),
    (errors.LLMError, 502, "llm_error"),
    (errors.BackendError, 503, "backend_unavailable"),
    (errors.ConfigurationError, 500, "configuration_error"),
]
# the database is down, cut off, locked or out of pooled connections: retryable
STORE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
STORE_UNAVAILABLE = "the database is unreachable or overloaded; retry in a few seconds"
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}


class ApiError(HTTPException):
    """An HTTP error with a machine-readable code."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, message, headers)
        self.code = code or HTTP_CODES.get(status, "error")


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    trace_id: str | None = None,
) -> JSONResponse:
    error = {"code": code, "message": message}
    if trace_id:
        error["trace_id"] = trace_id
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def status_of(exc: errors.RaglineError) -> tuple[int, str]:
    for kind, status, code in STATUS:
        if isinstance(exc, kind):
            return status, getattr(exc, "code", code)
    return 500, "internal_error"


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.RaglineError)
    async def ragline_error(request: Request, exc: errors.RaglineError) -> JSONResponse:
        status, code = status_of(exc)
        if status >= 500:
            log.warning("request failed path=%s status=%d error=%s", request.url.path, status, exc)
        # the failed request's trace id (when it was traced): to read the trace or rate it
        return error_response(status, code, str(exc), trace_id=exc.trace_id)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = getattr(exc, "code", HTTP_CODES.get(exc.status_code, "error"))
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()
        )
        return error_response(422, "invalid_request", problems)

    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The database is down, cut off, or out of connections: a retryable 503, without the
        driver's text (it quotes SQL and host names) in the response."""
        log.warning("store unavailable path=%s error=%s", request.url.path, one_line(exc))
        return error_response(
            503, "store_unavailable", STORE_UNAVAILABLE, headers={"Retry-After": "5"}
        )

    for kind in STORE_ERRORS:
        app.add_exception_handler(kind, store_unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error path=%s", request.url.path)
        return error_response(
            500, "internal_error", "internal error; the server log has the details"
        )
