"""Opening the store at start-up: a private SQLite file, a database that may not be up yet, and
a schema that must be current.

Every process (``serve``, ``api``, ``worker``, embedded ``CloudState``) opens its store here.
A PostgreSQL server that does not answer yet (a host rebooting, a container starting beside
it) is retried with backoff, one log line per attempt naming host, port and the error, until
``start_timeout_seconds``; then ``StoreError`` with that line, which the CLI prints as its one
line and exit status 1 (never a traceback).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cloudstate.config import Settings
from cloudstate.exceptions import StoreError
from cloudstate.redaction import redact
from cloudstate.store import Store
from cloudstate.store.database import Database

log = logging.getLogger("cloudstate.startup")

FIRST_DELAY = 0.5
MAX_DELAY = 5.0
PRIVATE = 0o600


def open_store(
    settings: Settings, *, pool_size: int = 10, max_overflow: int | None = None
) -> Store:
    """The store of ``settings``, reachable and at the newest migration (SQLite migrates
    itself; PostgreSQL must have been upgraded: ``StoreError`` otherwise)."""
    private_database_file(settings.database_url)
    store = Store.from_settings(settings, pool_size=pool_size, max_overflow=max_overflow)
    try:
        wait_for_database(store.database, settings.start_timeout_seconds)
        prepare_schema(store)
    except BaseException:
        store.close()
        raise
    return store


def prepare_schema(store: Store) -> None:
    """SQLite (the embedded default) migrates itself; PostgreSQL must be upgraded explicitly."""
    if store.database.is_sqlite:
        store.upgrade()
    elif not store.database.is_current():
        raise StoreError("the database schema is not current; run 'cloudstate db upgrade' first")


def wait_for_database(
    database: Database,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Connect once, retrying (PostgreSQL only) with doubling delays up to ``MAX_DELAY`` until
    ``timeout`` seconds have passed (the last attempt at the timeout); returns the attempts it
    took. Each failure is logged as
    one warning: where (``host:port``), the attempt, the error's first line."""
    started = time.monotonic()
    delay = FIRST_DELAY
    attempt = 0
    while True:
        attempt += 1
        try:
            with database.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return attempt
        except SQLAlchemyError as exc:
            line = f"database {where(database.url)} unreachable (attempt {attempt}): {reason(exc)}"
            waited = time.monotonic() - started
            if database.is_sqlite or waited >= timeout:
                log.error("%s; giving up", line)
                raise StoreError(
                    f"{line}; gave up after {waited:.1f}s "
                    f"(CLOUDSTATE_START_TIMEOUT_SECONDS={timeout:g})"
                ) from None
            pause = min(delay, timeout - waited)  # the last attempt comes at the timeout
            log.warning("%s; retrying in %.1fs", line, pause)
        sleep(pause)
        delay = min(delay * 2, MAX_DELAY)


def where(url: str) -> str:
    """``host:port`` of a server URL (never its user or password), or a SQLite file's path."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def reason(exc: SQLAlchemyError) -> str:
    """The driver's first line of the error (psycopg adds hints on further lines)."""
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return redact(lines[0] if lines else exc.__class__.__name__)


def private_database_file(url: str) -> None:
    """A SQLite database file readable by its owner only (it holds user data): created 0600
    before SQLite opens it, and an existing one (or its WAL) tightened to 0600. SQLite gives
    its ``-wal`` and ``-shm`` files the mode of the database file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database or "")
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(PRIVATE)
