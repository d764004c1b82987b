"""Wire schemas of the HTTP API (separate from storage rows and domain records)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ragline.domain import COLLECTION_PATTERN, Document, Job
from ragline.generation.multistep import Source

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # ids that go into traces and logs: no control characters


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# The store keeps naive UTC; on the wire a time carries its offset (RFC 3339 `date-time`, as
# the OpenAPI schema says), or clients read it as their local time.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def with_utc(value: Any) -> Any:
    """The store's naive UTC datetimes, anywhere in dicts and lists, given their UTC offset (for
    routes that return plain dicts rather than a schema with `UtcDatetime` fields)."""
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, dict):
        return {key: with_utc(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_utc(item) for item in value]
    return value


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class TextDocument(BaseModel):
    """A document given as text in JSON instead of a file upload."""

    text: str = Field(min_length=1)
    source: str = Field(
        min_length=1, max_length=1024, description="Name that citations show, e.g. notes.md"
    )


class DocumentOut(BaseModel):
    document_id: str
    collection: str
    source: str
    status: str = Field(
        description="queued, processing, indexing (stored, not yet retrievable), ready "
        "(retrievable) or failed"
    )
    error: str | None
    chunk_count: int
    content_hash: str
    size_bytes: int
    media_type: str | None
    title: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @classmethod
    def of(cls, document: Document, indexing: bool = False) -> DocumentOut:
        """`indexing`: the document's last change is committed but the index has not applied
        it yet; it shows as `indexing` rather than `ready` until it can be retrieved."""
        fields = {k: getattr(document, k) for k in cls.model_fields if k != "document_id"}
        if indexing and document.status == "ready":
            fields["status"] = "indexing"
        return cls(document_id=document.id, **fields)


class SubmittedDocument(BaseModel):
    document_id: str
    source: str
    job_id: str | None
    status: str
    duplicate: bool


class SubmitResponse(BaseModel):
    documents: list[SubmittedDocument]


class JobOut(BaseModel):
    job_id: str
    document_id: str
    collection: str
    status: str
    attempts: int
    max_attempts: int
    error: str | None
    run_after: UtcDatetime
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @classmethod
    def of(cls, job: Job) -> JobOut:
        fields = {k: getattr(job, k) for k in cls.model_fields if k != "job_id"}
        return cls(job_id=job.id, **fields)


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int
    version: int
    created_at: UtcDatetime


class SourceIn(BaseModel):
    """One collection of a multi-source query."""

    name: str = Field(pattern=COLLECTION_PATTERN)
    weight: float = Field(default=1.0, gt=0.0, le=10.0, description="Weight in the fusion")
    top_k: int | None = Field(
        default=None, ge=1, le=50, description="Chunks taken from this source"
    )


class QueryRequest(BaseModel):
    question: str = Field(min_length=1)
    collection: str = Field(default="default", pattern=COLLECTION_PATTERN)
    collections: list[SourceIn] | None = Field(
        default=None,
        min_length=1,
        description="Several sources (instead of `collection`), retrieved in parallel and "
        "fused with weighted RRF",
    )
    mode: Literal["rag", "decompose", "summarize"] = Field(
        default="rag",
        description="rag: retrieve then answer; decompose: sub-questions, each retrieved, then "
        "one answer; summarize: per-source summaries, then the answer",
    )
    top_k: int | None = Field(default=None, ge=1, description="Passages given to the model")
    session_id: str | None = Field(default=None, max_length=200, pattern=PRINTABLE)
    user_id: str | None = Field(default=None, max_length=200, pattern=PRINTABLE)
    stream: bool = False

    def sources(self) -> list[Source]:
        if not self.collections:
            return [Source(self.collection)]
        return [Source(c.name, c.weight, c.top_k) for c in self.collections]


class RetrieveRequest(BaseModel):
    question: str = Field(min_length=1)
    collection: str = Field(default="default", pattern=COLLECTION_PATTERN)
    top_k: int | None = Field(default=None, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return " ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


class ChatRequest(BaseModel):
    """OpenAI's chat completion request; `model` names the collection."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    user: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, dict[str, Any]] = {}
