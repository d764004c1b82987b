"""The one exception tree of ragline.

    RaglineError
    ├── ConfigurationError        settings that cannot work (e.g. chunk size above the embedder's limit)
    ├── NotFoundError             a collection, document or job that does not exist
    ├── InvalidRequestError       a request that breaks a limit or names something invalid
    ├── DocumentError             one document cannot be ingested; the batch goes on
    │   ├── UnsupportedFormatError
    │   ├── EncryptedDocumentError
    │   ├── CorruptDocumentError
    │   └── EmptyDocumentError
    ├── BackendError              a dependency failed (store, index, embedder)
    ├── LeaseLostError            a worker's job lease expired and another worker took the job
    ├── DeadlineExceededError     a request ran past its time limit, or the server is shutting down
    └── LLMError                  the LLM server failed or answered something unusable
        └── LLMTimeoutError

Library errors are translated at the boundary (`raise Mapped(...) from exc`); the API layer maps
these classes to HTTP status codes.
"""

from __future__ import annotations


class RaglineError(Exception):
    """Base class of every error ragline raises on purpose."""

    trace_id: str | None = None  # set on the way out of a traced request; error bodies show it


class ConfigurationError(RaglineError):
    """The configuration cannot work; the message says which setting to change."""


class NotFoundError(RaglineError):
    """A named collection, document or job does not exist."""


class InvalidRequestError(RaglineError):
    """A request that breaks a limit or names something invalid; the message says which."""


class DocumentError(RaglineError):
    """One document cannot be ingested. Fails that document's job, never the worker."""

    retryable = False


class UnsupportedFormatError(DocumentError):
    """The file type is not one ragline can parse."""


class EncryptedDocumentError(DocumentError):
    """The document is password-protected."""


class CorruptDocumentError(DocumentError):
    """The document's bytes do not form a valid file of its type."""


class EmptyDocumentError(DocumentError):
    """The document parsed but holds no text."""


class BackendError(RaglineError):
    """A backend (store, index, embedder) failed; the operation may succeed on retry."""


class DeadlineExceededError(RaglineError):
    """A request ran past its time limit (or past the drain period of a server shutting down).

    `code` is the wire error code: `timeout`, or `shutting_down` (retry on another replica)."""

    def __init__(self, message: str, code: str = "timeout") -> None:
        super().__init__(message)
        self.code = code


class LLMError(RaglineError):
    """The LLM server failed or returned an unusable response."""


class LLMTimeoutError(LLMError):
    """The LLM server did not answer within the configured timeout."""


class LeaseLostError(RaglineError):
    """A worker outlived its job's lease and another worker took the job: the first one's
    result is dropped (its transaction rolled back), so a document is written once."""


def one_line(exc: BaseException) -> str:
    """An exception as one short log line (driver errors span lines and quote whole SQL)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
