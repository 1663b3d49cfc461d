"""Persistence: tables, repositories, the unit of work (outbox) and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from cloudstate.config import Settings
from cloudstate.exceptions import ConcurrentUpdateError
from cloudstate.store.crypto import SecretBox
from cloudstate.store.database import Database
from cloudstate.store.uow import UnitOfWork


class Store:
    """The database plus the key that protects secrets in it: what use cases are given."""

    def __init__(self, database: Database, secrets: SecretBox) -> None:
        self.database = database
        self.secrets = secrets

    @classmethod
    def from_settings(
        cls, settings: Settings, *, pool_size: int = 10, max_overflow: int | None = None
    ) -> Store:
        database = Database(settings.database_url, pool_size=pool_size, max_overflow=max_overflow)
        return cls(database, SecretBox.from_settings(settings))

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.database, self.secrets)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.database.read() as session:
            yield session

    def upgrade(self) -> None:
        self.database.upgrade()

    def close(self) -> None:
        self.database.dispose()


__all__ = ["ConcurrentUpdateError", "Database", "SecretBox", "Store", "UnitOfWork"]
