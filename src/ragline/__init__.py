"""ragline: a production RAG service (ingestion, hybrid retrieval, cited answers, traces)."""

__version__ = "0.1.0"
