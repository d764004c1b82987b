"""SQL schema of the store (SQLAlchemy Core). Migrations in `migrations/versions` create it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

collections = Table(
    "collections",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, nullable=False, default=0),  # bumped on every ingest or delete
    Column("created_at", DateTime, nullable=False),
    Column("embedder", String(300)),  # fingerprint of the model its vectors come from
)

contents = Table(
    "contents",
    metadata,
    Column("content_hash", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

documents = Table(
    "documents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("collection", String(128), ForeignKey("collections.name"), nullable=False),
    Column("source", String(1024), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("media_type", String(128)),
    Column("size_bytes", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("chunk_count", Integer, nullable=False, default=0),
    Column("title", String(1024)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("collection", "source", name="uq_documents_collection_source"),
    Index("ix_documents_collection_hash", "collection", "content_hash"),
)

chunks = Table(
    "chunks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("point_id", BigInteger, nullable=False, unique=True),
    Column(
        "document_id", String(32), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    ),
    Column("collection", String(128), nullable=False),
    Column("position", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("term_count", Integer, nullable=False),  # BM25 terms, for the corpus average length
    Column("metadata", JSON, nullable=False),
    Column(
        "vector", LargeBinary, nullable=False
    ),  # float32 embedding: the index is rebuilt from it
    Index("ix_chunks_document", "document_id"),
    Index("ix_chunks_collection", "collection"),
)

index_log = Table(
    "index_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("collection", String(128), nullable=False),
    Column("document_id", String(32), nullable=False),
    Column("content_hash", String(64)),  # the version to index; NULL: remove the document
    Column("created_at", DateTime, nullable=False),
    Index("ix_index_log_collection_seq", "collection", "seq"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "document_id", String(32), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    ),
    Column("collection", String(128), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("error", Text),
    Column("run_after", DateTime, nullable=False),
    Column("locked_until", DateTime),
    Column("locked_by", String(128)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_jobs_claim", "status", "run_after"),
    Index("ix_jobs_document", "document_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("collections", JSON),  # None: every collection
    Column("rate_limit", String(64)),  # None: the server's default
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime),
)

spans = Table(
    "spans",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_span_id", String(16)),  # NULL: the trace's root
    Column("name", String(200), nullable=False),
    Column("kind", String(32)),  # openinference.span.kind
    Column("start_time", DateTime, nullable=False),
    Column("end_time", DateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status", String(8), nullable=False),  # UNSET | OK | ERROR
    Column("status_message", Text),
    Column("session_id", String(200)),
    Column("user_id", String(200)),
    Column("attributes", JSON, nullable=False),
    Column("events", JSON, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", String(36), primary_key=True),  # deterministic: uuid5 of (trace, name, rater)
    Column("trace_id", String(32), nullable=False),
    Column("name", String(100), nullable=False),
    Column("value", Float, nullable=False),
    Column("comment", Text),
    Column("created_at", DateTime, nullable=False),
    Column("key_id", String(32)),  # the API key that gave it; None without auth
    # who the score belongs to: "key:<id>[:user:<id>]", "user:<id>", or "" (anonymous)
    Column("rater", String(250), nullable=False, server_default=""),
    UniqueConstraint("trace_id", "name", "rater", name="uq_feedback_rater"),
)

eval_datasets = Table(
    "eval_datasets",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("description", Text),
    Column("created_at", DateTime, nullable=False),
)

eval_items = Table(
    "eval_items",
    metadata,
    Column(
        "dataset",
        String(200),
        ForeignKey("eval_datasets.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("id", String(200), primary_key=True),
    Column("question", Text, nullable=False),
    Column("expected_answers", JSON, nullable=False),  # list of acceptable answers, may be empty
    Column("relevant", JSON, nullable=False),  # {document id: relevance grade}, may be empty
    Column("metadata", JSON, nullable=False),
)

eval_runs = Table(
    "eval_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("dataset", String(200), nullable=False),
    Column("collection", String(128), nullable=False),
    Column("mode", String(16), nullable=False),  # retrieval | answer
    Column("config", JSON, nullable=False),  # the RAG config that produced the run
    Column("config_hash", String(16), nullable=False),
    Column("summary", JSON, nullable=False),  # metric means, latency, tokens
    Column("created_at", DateTime, nullable=False),
)

eval_results = Table(
    "eval_results",
    metadata,
    Column("run_id", String(32), ForeignKey("eval_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("item_id", String(200), primary_key=True),
    Column("answer", Text),
    Column("retrieved", JSON, nullable=False),  # ranked document ids
    Column("scores", JSON, nullable=False),  # metric -> value (judge failures recorded as errors)
    Column("latency_ms", Float, nullable=False),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("error", Text),
    Column("trace_id", String(32)),
    # per-leg ids, citations, latencies (retrieval, TTFT), finish_reason, prompt, judge reasons
    Column("details", JSON),
)

prompts = Table(
    "prompts",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),  # immutable once written
    Column("system", Text, nullable=False),
    Column("user", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

prompt_labels = Table(  # append-only: a label's current version is its newest row
    "prompt_labels",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("label", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
)
