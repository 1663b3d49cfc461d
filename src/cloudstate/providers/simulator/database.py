"""The simulated cloud's own SQLite file: schema, connection and transactions.

Several processes share one cloud by sharing this file, so every mutating call runs in
``BEGIN IMMEDIATE`` (one writer at a time, waiting up to ``BUSY_TIMEOUT_SECONDS`` for the
others) under WAL. Within a process one connection is shared by all threads behind a lock.
SQLite failures are translated to ``ProviderUnavailableError``: to cloudstate, a simulator
whose storage fails is a cloud that cannot be reached.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloudstate.exceptions import ConfigurationError, ProviderUnavailableError
from cloudstate.providers.simulator.catalogue import REALMS
from cloudstate.providers.simulator.knobs import SimulatorKnobs

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_SECONDS = 30.0

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """
CREATE TABLE IF NOT EXISTS instances (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    uuid TEXT,                      -- our tag's value; NULL when the instance is not ours
    name TEXT NOT NULL,
    image TEXT NOT NULL,
    hardware_profile TEXT NOT NULL,
    memory INTEGER,
    cpu INTEGER,
    storage INTEGER,
    realm TEXT NOT NULL,
    keyname TEXT,
    key_fingerprint TEXT,
    user_data TEXT,
    tags TEXT NOT NULL,             -- JSON object
    state TEXT NOT NULL,            -- raw simulator state
    next_state TEXT,                -- where the instance goes on its own ...
    next_at REAL,                   -- ... and when (epoch seconds)
    created_at REAL NOT NULL,
    visible_at REAL NOT NULL,       -- absent from listings before this (eventual consistency)
    launched_at REAL NOT NULL,
    state_changed_at REAL NOT NULL,
    private_address TEXT,
    public_address TEXT
)
""",
    "CREATE INDEX IF NOT EXISTS instances_by_namespace ON instances (namespace, seq)",
    "CREATE INDEX IF NOT EXISTS instances_by_uuid ON instances (namespace, uuid)",
    "CREATE INDEX IF NOT EXISTS instances_due ON instances (next_at) WHERE next_at IS NOT NULL",
    """
CREATE INDEX IF NOT EXISTS instances_terminated ON instances (state_changed_at)
    WHERE state = 'terminated'
""",
    """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    namespace TEXT,
    provider_id TEXT,
    uuid TEXT,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    cause TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
)
""",
    "CREATE INDEX IF NOT EXISTS ledger_by_namespace ON ledger (namespace, seq)",
    """
CREATE TABLE IF NOT EXISTS realms (
    name TEXT PRIMARY KEY,
    available INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
)
""",
    """
CREATE TABLE IF NOT EXISTS buckets (
    namespace TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS calls (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
)
""",
)


class Database:
    """One connection to a cloud file, shared by this process's threads."""

    def __init__(self, path: Path, initial: SimulatorKnobs) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ProviderUnavailableError(f"cannot open simulator file {path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            with self._lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            with self.transaction() as conn:
                self.created = _create_schema(conn, path, initial)
        except BaseException:
            self._conn.close()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
            try:
                yield self._conn
            except sqlite3.Error as exc:
                self._conn.rollback()
                raise self._unavailable(exc) from exc
            except BaseException:
                self._conn.rollback()
                raise
            try:
                self._conn.commit()
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _unavailable(self, exc: sqlite3.Error) -> ProviderUnavailableError:
        return ProviderUnavailableError(f"simulator file {self.path}: {exc}")


def _create_schema(conn: sqlite3.Connection, path: Path, initial: SimulatorKnobs) -> bool:
    """Create what is missing; True when this call created the cloud (and set its knobs)."""
    for statement in _SCHEMA:
        conn.execute(statement)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if version is not None:
        if version["value"] != SCHEMA_VERSION:
            raise ConfigurationError(
                "path",
                f"{path} is a simulator file of schema {version['value']}, "
                f"this code reads schema {SCHEMA_VERSION}",
            )
        return False
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("schema", SCHEMA_VERSION),
            ("salt", secrets.token_hex(8)),
            ("knobs", initial.to_json()),
            ("instance_counter", "0"),
            ("public_counter", "0"),
        ],
    )
    conn.executemany(
        "INSERT INTO realms (name, available, reason) VALUES (?, 1, '')",
        [(name,) for name in REALMS],
    )
    return True


def next_counter(conn: sqlite3.Connection, key: str) -> int:
    """Take the next value of a counter kept in ``meta`` (inside the caller's transaction)."""
    value = int(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()["value"])
    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(value + 1), key))
    return value
