"""The store's tests run against both databases: SQLite (a file) and a real PostgreSQL server that the
tests start themselves (tests/postgres.py)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from homework_monitor.store.db import Store

from ..postgres import PostgresServer, postgres_or_skip


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_or_skip()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """An empty database (no tables) of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def store(db_url) -> Iterator[Store]:
    """A migrated store on each database."""
    s = Store.open(url=db_url)
    try:
        yield s
    finally:
        s.close()
