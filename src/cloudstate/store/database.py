"""The database handle: engine, sessions and migrations, for SQLite and PostgreSQL alike.

SQLite runs in WAL mode with a busy timeout, foreign keys on, and write transactions that begin
``IMMEDIATE`` (a deferred transaction that reads and then writes can fail at once with "database
is locked" instead of waiting). PostgreSQL gets a connection pool sized for a worker's threads,
whose connections are pinged before use only after sitting idle (see ``_ping_when_idle``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from cloudstate.exceptions import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
IDLE_PING_SECONDS = 2.0  # a pooled connection idle longer is pinged before use
_WRITE = "cloudstate_write"
_CHECKED_IN_AT = "cloudstate_checked_in_at"


def _sqlalchemy_url(url: str) -> str:
    """Pick the psycopg 3 driver for bare ``postgresql://`` URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def create_db_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> Engine:
    """An engine configured for cloudstate's access pattern on either database.

    PostgreSQL: ``pool_size`` connections kept, ``max_overflow`` (default: as many again)
    opened for a peak and closed after it.
    """
    url = _sqlalchemy_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    overflow = pool_size if max_overflow is None else max_overflow
    engine = create_engine(url, pool_size=pool_size, max_overflow=overflow, pool_recycle=1800)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle for ``IDLE_PING_SECONDS``.

    A ping on every checkout (``pool_pre_ping``) costs a round trip per unit of work, and
    workers and the API open many short ones. A connection returned a moment ago is almost
    surely alive; one idle for longer may have been dropped (a database restart, a proxy's
    idle timeout), so it is pinged and, if dead, replaced: raising ``DisconnectionError``
    in ``checkout`` makes the pool discard it and retry with a fresh connection
    (SQLAlchemy's pessimistic disconnect handling). A connection that dies in the short
    window fails its unit of work once; SQLAlchemy then invalidates the pool's older
    connections, and the caller's retry gets a new one.
    """

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < IDLE_PING_SECONDS:
            return  # new, or back in the pool only a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """Engine + session factories. ``write()`` sessions are the only ones that change data."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> None:
        self.url = url
        self.engine = create_db_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        overflow = pool_size if max_overflow is None else max_overflow
        # the most connections this process opens at once (SQLite: SQLAlchemy's own pool)
        self.max_connections: int | None = None if self.is_sqlite else pool_size + overflow
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries; closed (never committed) at the end.

        Closing rather than rolling back keeps loaded rows readable after the block.
        """
        with self._read() as session:
            try:
                yield session
            except SQLAlchemyError as exc:
                raise StoreError(f"database read failed: {exc.__class__.__name__}") from exc

    def write_session(self) -> Session:
        """A session whose transaction will write; the caller (a unit of work) commits it."""
        return self._write()

    def dispose(self) -> None:
        self.engine.dispose()

    # migrations ---------------------------------------------------------------------------

    def alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", _sqlalchemy_url(self.url).replace("%", "%%"))
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (idempotent; safe from several processes)."""
        config = self.alembic_config()
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def is_current(self) -> bool:
        """True when the schema is at the newest migration this code knows."""
        return self.current_revision() == self.head_revision()
