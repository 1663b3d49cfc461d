"""Shared fixtures: settings in a temporary home, and stores on real SQLite and PostgreSQL.

PostgreSQL tests use a database of their own, created for the session and dropped after it.
Where no server is reachable they skip with the reason, except under ``CI=true``, where that is
a failure: CI must prove the PostgreSQL path.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from cloudstate.config import Settings, load_settings
from cloudstate.store import Store
from databases import psycopg_url, truncate

PG_ADMIN_URL = os.environ.get(
    "CLOUDSTATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session."""
    admin = create_engine(psycopg_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"cloudstate_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true requires it)")
        pytest.skip(reason)
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def sqlite_settings(home: Path) -> Settings:
    return load_settings(home=home)


@pytest.fixture(scope="session")
def _postgres_schema(postgres_url: str) -> str:
    """Migrate the session's PostgreSQL database once; tests then empty it between them."""
    store = Store.from_settings(load_settings(database_url=postgres_url))
    store.upgrade()
    store.close()
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, home: Path) -> Settings:
    """Settings on each database in turn: every store test runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return load_settings(home=home)
    url = request.getfixturevalue("_postgres_schema")
    truncate(url)
    return load_settings(home=home, database_url=url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """A migrated store on the parametrized database."""
    store = Store.from_settings(settings)
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def postgres_store(_postgres_schema: str, home: Path) -> Iterator[Store]:
    """A migrated, emptied store on PostgreSQL only, for what SQLite has no counterpart of
    (LISTEN/NOTIFY: there, one process holds every worker and wakes them itself)."""
    truncate(_postgres_schema)
    opened = Store.from_settings(load_settings(home=home, database_url=_postgres_schema))
    yield opened
    opened.close()
