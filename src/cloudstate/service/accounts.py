"""Accounts and subscriptions: the configuration callers manage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.domain.validation import parse
from cloudstate.exceptions import ConflictError, ValidationError
from cloudstate.service.observations import clear_credentials_status
from cloudstate.service.views import (
    AccountView,
    SubscriptionView,
    account_view,
    subscription_view,
)
from cloudstate.store import Store
from cloudstate.store.tables import utcnow
from cloudstate.webhooks.safety import WebhookPolicy, redact_url
from cloudstate.webhooks.signing import check_secret, generate_secret


def add_account(
    store: Store,
    name: str,
    provider: str,
    *,
    config: Mapping[str, Any] | None = None,
    credentials: Mapping[str, str] | None = None,
    credentials_expire_at: datetime | None = None,
) -> AccountView:
    """Store an account; its credentials are encrypted and never shown again."""
    with store.unit_of_work() as uow:
        row = uow.accounts.add(
            name,
            provider,
            config=config,
            credentials=credentials,
            credentials_expire_at=credentials_expire_at,
        )
        uow.commit()
        return account_view(row)


def list_accounts(store: Store) -> list[AccountView]:
    with store.unit_of_work() as uow:
        return [account_view(row) for row in uow.accounts.list()]


def get_account(store: Store, name: str) -> AccountView:
    with store.unit_of_work() as uow:
        return account_view(uow.accounts.get(name))


def remove_account(store: Store, name: str) -> None:
    with store.unit_of_work() as uow:
        uow.accounts.remove(uow.accounts.get(name))
        uow.commit()


def add_subscription(
    store: Store,
    kind: str,
    target: str,
    filters: Mapping[str, Any] | SubscriptionFilter | None = None,
    *,
    secret: str | None = None,
    include_keys: bool = False,
    description: str = "",
    from_start: bool = False,
    policy: WebhookPolicy | None = None,
) -> SubscriptionView:
    """Subscribe to events committed from now on (or to all retained events: ``from_start``).

    A webhook (``http``) must pass the URL ``policy`` (default: public addresses only) and is
    signed with ``secret``, or with a generated one (shown in the returned view, this once).
    Every entry point (API, CLI, embedded) gets the same rules here."""
    if kind not in ("http", "callable"):
        raise ValidationError("must be 'http' or 'callable'", field="kind")
    if kind == "http":
        check_url(target, policy)
        secret = secret or generate_secret()
    if secret is not None:
        check_secret(secret)
    where = parse(SubscriptionFilter, filters or {})
    with store.unit_of_work() as uow:
        start = 0 if from_start else uow.changelog.last_seq()
        row = uow.subscriptions.add(
            kind,
            target,
            where,
            secret=secret,
            include_keys=include_keys,
            description=description,
            start_seq=start,
        )
        uow.commit()
        return subscription_view(row, secret)


def check_url(url: str, policy: WebhookPolicy | None) -> None:
    """A ``ValidationError`` on ``url`` unless it is http(s) with a host that does not resolve
    only to addresses the webhook policy refuses (loopback, private, metadata, ... unless the
    operator allowed them). Blocking (DNS, bounded by the policy's timeout). Deliveries check
    again, since DNS can change."""
    problem = (policy or WebhookPolicy()).url_problem(url)
    if problem is not None:
        raise ValidationError(problem, field="url")


def as_seen_by(view: SubscriptionView, *, admin: bool) -> SubscriptionView:
    """A subscription as a caller sees it: below admin, the webhook URL's user, password,
    query string and fragment (where receivers put their own tokens) are redacted."""
    if admin or view.kind != "http":
        return view
    return replace(view, target=redact_url(view.target))


def list_subscriptions(store: Store) -> list[SubscriptionView]:
    with store.unit_of_work() as uow:
        return [subscription_view(row) for row in uow.subscriptions.list()]


def remove_subscription(store: Store, subscription_id: UUID) -> None:
    with store.unit_of_work() as uow:
        uow.subscriptions.remove(uow.subscriptions.get(subscription_id))
        uow.commit()


def update_account(
    store: Store,
    name: str,
    *,
    config: Mapping[str, Any] | None = None,
    credentials: Mapping[str, str] | None = None,
    credentials_expire_at: datetime | None = None,
) -> AccountView:
    """Change an account's driver settings and/or credentials (workers rebuild its driver).

    New credentials replace the expiry too (``None``: they never expire) and clear a
    ``credentials`` status, so the next cycle observes the instances again. An expiry alone
    moves the current credentials' expiry.
    """
    with store.unit_of_work() as uow:
        row = uow.accounts.get(name)
        if config is not None:
            row.config = dict(config)
        if credentials is not None:
            uow.accounts.set_credentials(row, credentials)
            clear_credentials_status(row)
        if credentials is not None or credentials_expire_at is not None:
            row.credentials_expire_at = credentials_expire_at
        row.updated_at = utcnow()
        uow.commit()
        return account_view(row)


def get_subscription(store: Store, subscription_id: UUID) -> SubscriptionView:
    with store.unit_of_work() as uow:
        return subscription_view(uow.subscriptions.get(subscription_id))


def update_subscription(
    store: Store,
    subscription_id: UUID,
    *,
    target: str | None = None,
    filters: Mapping[str, Any] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
    policy: WebhookPolicy | None = None,
) -> SubscriptionView:
    """Change a subscription; ``enabled=True`` re-enables one that a 410 disabled. A new
    webhook URL must pass ``policy`` (see ``add_subscription``)."""
    with store.unit_of_work() as uow:
        row = uow.subscriptions.get(subscription_id)
        if target is not None:
            if row.kind == "http":
                check_url(target, policy)
            row.target = target
        if filters is not None:
            row.filters = parse(SubscriptionFilter, filters).to_json()
        if enabled is not None:
            row.enabled = enabled
            row.disabled_reason = "" if enabled else "disabled by an operator"
        if description is not None:
            row.description = description
        uow.commit()
        return subscription_view(row)


def enable_subscription(store: Store, subscription_id: UUID) -> SubscriptionView:
    """Re-enable a subscription (one a 410 disabled, say). Events from now on are queued for
    it again; what was cancelled or missed meanwhile comes back only by a replay."""
    return update_subscription(store, subscription_id, enabled=True)


def rotate_subscription_secret(
    store: Store, subscription_id: UUID, secret: str | None, *, grace: timedelta
) -> tuple[SubscriptionView, datetime | None]:
    """Make ``secret`` the signing secret; the current one keeps signing beside it for
    ``grace`` (each request then carries both signatures), so receivers can switch at leisure.

    Returns the view with the new secret (shown this once) and when the old one stops signing
    (``None``: at once, for a zero grace or when there was none). A secret still in its grace
    from an earlier rotation is dropped: at most two sign at a time. Callable subscriptions are
    not signed (``ConflictError``). A malformed or short secret is a ``ValidationError``; with
    none, one is generated.
    """
    secret = secret or generate_secret()
    check_secret(secret)
    with store.unit_of_work() as uow:
        row = uow.subscriptions.get(subscription_id)
        if row.kind != "http":
            raise ConflictError(f"subscription {row.id} is a callable; only webhooks are signed")
        now = utcnow()
        keep = row.secret is not None and grace > timedelta(0)
        row.previous_secret = row.secret if keep else None
        row.previous_secret_expires_at = now + grace if keep else None
        row.secret = store.secrets.encrypt(secret.encode())
        row.updated_at = now
        uow.commit()
        return subscription_view(row, secret), row.previous_secret_expires_at
