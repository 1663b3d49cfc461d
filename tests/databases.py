"""Helpers for tests that use PostgreSQL directly (importable from any test module: unlike
``conftest``, this name is not shared by several folders)."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from cloudstate.store.tables import Base


def psycopg_url(url: str) -> str:
    """A ``postgresql://`` URL as SQLAlchemy's psycopg driver wants it."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def truncate(url: str) -> None:
    """Empty every cloudstate table of the database at ``url``."""
    engine = create_engine(psycopg_url(url))
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        # the migration's one counter row, as a fresh database has it (store.eventlog)
        connection.execute(text("INSERT INTO event_counter (id, last_seq) VALUES (1, 0)"))
    engine.dispose()
