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
    └── LLMError                  the LLM server failed or answered something unusable
        └── LLMTimeoutError

Library errors are translated at the boundary (`raise Mapped(...) from exc`); the API layer maps
these classes to HTTP status codes.
"""

from __future__ import annotations


class RaglineError(Exception):
    """Base class of every error ragline raises on purpose."""


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


class LLMError(RaglineError):
    """The LLM server failed or returned an unusable response."""


class LLMTimeoutError(LLMError):
    """The LLM server did not answer within the configured timeout."""
