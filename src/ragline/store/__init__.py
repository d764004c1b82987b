"""The SQL store: the source of truth for collections, documents, chunks and jobs."""

from ragline.store.engine import create_store_engine, migrate
from ragline.store.repository import Store

__all__ = ["Store", "create_store_engine", "migrate"]
