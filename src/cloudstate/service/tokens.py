"""API tokens: created once (the plaintext is shown then and never again), stored as digests.

Tokens are 256 random bits, so a plain SHA-256 digest is the right storage (a slow password
hash adds nothing against guessing and costs every request). Scopes nest: ``admin`` ⊃
``write`` ⊃ ``read``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudstate.domain.auth import RANK, Scope, grants
from cloudstate.domain.validation import Name, parse_field
from cloudstate.exceptions import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from cloudstate.store import Store
from cloudstate.store.tables import ApiToken, utcnow

TOKEN_PREFIX = "cst_"  # noqa: S105 (a marker that makes leaked tokens greppable, not a secret)
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenView:
    id: UUID
    name: str
    prefix: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def allows(self, needed: Scope) -> bool:
        return self.revoked_at is None and any(grants(s, needed) for s in self.scopes)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    store: Store, name: str, scopes: list[str] | tuple[str, ...]
) -> tuple[TokenView, str]:
    """A new token; returns its view and the plaintext (show it once, store it nowhere)."""
    parse_field(Name, name, "name")
    chosen = _scopes(scopes)
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.unit_of_work() as uow:
        if uow.session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
            raise AlreadyExistsError("token", name)
        row = ApiToken(
            name=name,
            prefix=plaintext[:12],
            digest=digest(plaintext),
            scopes=[str(s) for s in chosen],
        )
        uow.session.add(row)
        uow.commit()
        return _view(row), plaintext


def list_tokens(store: Store) -> list[TokenView]:
    with store.read() as session:
        return [_view(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(store: Store, name_or_id: str) -> TokenView:
    """Revoke by name or id; revoking twice is harmless.

    The last live admin token is never revoked (``ConflictError``): without one nobody could
    make tokens through the API again. Live tokens are read under a row lock, so two
    revocations at once cannot each leave the other as the last one.
    """
    with store.unit_of_work() as uow:
        row = uow.session.scalar(select(ApiToken).where(ApiToken.name == name_or_id))
        if row is None:
            row = _by_id(uow.session, name_or_id)
        if row is None:
            raise NotFoundError("token", name_or_id)
        if row.revoked_at is None and Scope.ADMIN in row.scopes:
            _refuse_last_admin(uow.session, row)
        row.revoked_at = row.revoked_at or utcnow()
        uow.commit()
        return _view(row)


def _refuse_last_admin(session: Session, row: ApiToken) -> None:
    live = session.scalars(
        select(ApiToken).where(ApiToken.revoked_at.is_(None)).with_for_update()
    ).all()
    if not any(other.id != row.id and Scope.ADMIN in other.scopes for other in live):
        raise ConflictError(
            f"token {row.name!r} is the last live admin token; create another admin token "
            "first (on the database host without one: "
            "cloudstate token create NAME --scope admin --local)"
        )


def authenticate(store: Store, plaintext: str) -> TokenView | None:
    """The token's view if the plaintext is a live token, else None (constant-time compare)."""
    wanted = digest(plaintext)
    with store.read() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.digest == wanted))
    if row is None or not hmac.compare_digest(row.digest, wanted) or row.revoked_at is not None:
        return None
    if row.last_used_at is None or utcnow() - row.last_used_at > _TOUCH_EVERY:
        _touch(store, row.id)
    return _view(row)


def revoked_among(store: Store, token_ids: Collection[UUID]) -> set[UUID]:
    """Which of these tokens are revoked (or gone): one query, for the checks that open
    event streams make on their tokens."""
    if not token_ids:
        return set()
    with store.read() as session:
        live = set(
            session.scalars(
                select(ApiToken.id).where(
                    ApiToken.id.in_(list(token_ids)), ApiToken.revoked_at.is_(None)
                )
            )
        )
    return set(token_ids) - live


def _touch(store: Store, token_id: UUID) -> None:
    with store.unit_of_work() as uow:
        row = uow.session.get(ApiToken, token_id)
        if row is not None:
            row.last_used_at = utcnow()
        uow.commit()


def _scopes(values: list[str] | tuple[str, ...]) -> tuple[Scope, ...]:
    if not values:
        raise ValidationError("at least one of read, write, admin", field="scopes")
    try:
        return tuple(sorted({Scope(v) for v in values}, key=RANK.__getitem__))
    except ValueError:
        raise ValidationError(
            f"unknown scope in {list(values)}; use read, write or admin", field="scopes"
        ) from None


def _by_id(session: Session, value: str) -> ApiToken | None:
    try:
        return session.get(ApiToken, UUID(value))
    except ValueError:
        return None


def _view(row: ApiToken) -> TokenView:
    return TokenView(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(Scope(s) for s in row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def bootstrap_admin_token(store: Store, path: Path) -> str | None:
    """On a fresh installation (no token at all), create an admin token and save it to ``path``
    (mode 0600) for the CLI on this machine. Returns the plaintext once, else None."""
    with store.read() as session:
        if session.scalar(select(ApiToken.id).limit(1)) is not None:
            return None
    _, plaintext = create_token(store, "admin", [Scope.ADMIN])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(plaintext + "\n")
    return plaintext
