"""The one claim/lease primitive every kind of work shares, and the only place that knows
SQLite from PostgreSQL when claiming.

Contract, for any table whose rows are work:

- **claim**: ``claimable(statement)`` selects candidate rows so that N workers on N hosts never
  take one row twice: on PostgreSQL ``FOR UPDATE … SKIP LOCKED`` (a row another transaction is
  claiming is passed over, not waited for); on SQLite as it is (one writer at a time). The
  caller marks what it took, with a ``Lease`` (owner and expiry), in the same transaction.
- **expiry and takeover**: a lease whose expiry has passed is free again (``Lease.free``): the
  worker that held it crashed or stalled, and another takes the work over.
- **fencing**: a holder renews (``renew``) or gives back (``release``) only while it still holds
  the lease; a renewal that matches nothing means the lease was lost, and the caller rolls
  back whatever it was about to commit. The renewal's row lock lasts until the commit, so a new
  holder (whose claim skips locked rows) always starts after the old holder's last write.

Managers build on these; none writes ``FOR UPDATE`` for a claim of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claimable(session: Session, statement: _S, *, of: Any = None) -> _S:
    """``statement`` as a claim: rows locked by another claimer are skipped (PostgreSQL)."""
    if not is_postgres(session):
        return statement
    return statement.with_for_update(skip_locked=True, of=of)


def claim_one(session: Session, statement: Select[Any]) -> Any:
    """The first row ``statement`` selects that no other transaction is claiming, or None."""
    return session.scalar(claimable(session, statement.limit(1)))


def locked(session: Session, statement: _S, *, of: Any = None) -> _S:
    """``statement`` with its rows locked until the commit (waiting for them, PostgreSQL):
    for a decision that must not race a claimer or an acknowledgement."""
    if not is_postgres(session):
        return statement
    return statement.with_for_update(of=of)


@dataclass(frozen=True)
class Lease:
    """Where a table keeps who holds a row of work and until when."""

    owner: InstrumentedAttribute[Any]
    until: InstrumentedAttribute[Any]

    def free(self, now: datetime) -> ColumnElement[bool]:
        """Unheld, or held by a lease that has expired (its work may be taken over)."""
        return self.owner.is_(None) | (self.until < now)

    def held_by(self, worker: str, now: datetime) -> ColumnElement[bool]:
        return (self.owner == worker) & (self.until > now)

    def renew(
        self, session: Session, where: ColumnElement[bool], worker: str, now: datetime, until: Any
    ) -> bool:
        """Extend ``worker``'s unexpired lease on the row(s) ``where`` to ``until``; False
        when it holds none (lost: the caller must not commit what the lease was fencing)."""
        result = session.execute(
            update(self.owner.class_)
            .where(where, self.held_by(worker, now))
            .values({self.until.key: until})
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) > 0

    def release(self, session: Session, where: ColumnElement[bool], worker: str) -> bool:
        """Give the lease back, only if ``worker`` still holds it (never a new holder's)."""
        result = session.execute(
            update(self.owner.class_)
            .where(where, self.owner == worker)
            .values({self.owner.key: None, self.until.key: None})
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) > 0


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
