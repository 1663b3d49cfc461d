"""Webhook subscriptions. A signing secret is shown once: in the response that created it, or
that rotated it. Below admin scope a URL's user, password, query and fragment are redacted.
Re-enabling and rotation are here; the delivery log, retry and replay are in ``deliveries``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Response

from cloudstate.api.deps import Context, Reader, Writer
from cloudstate.api.routes import responses
from cloudstate.api.schemas import (
    RotatedSubscriptionOut,
    SecretRotation,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionUpdate,
)
from cloudstate.domain.auth import Scope
from cloudstate.service import accounts
from cloudstate.service.tokens import TokenView
from cloudstate.service.views import SubscriptionView
from cloudstate.webhooks.safety import WebhookPolicy

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


@router.get("", responses=responses())
def list_subscriptions(ctx: Context, token: Reader) -> list[SubscriptionOut]:
    return [_shown(view, token) for view in accounts.list_subscriptions(ctx.store)]


@router.post("", status_code=201, responses=responses(413))
def create_subscription(body: SubscriptionCreate, ctx: Context, token: Writer) -> SubscriptionOut:
    view = accounts.add_subscription(
        ctx.store,
        "http",
        body.url,
        body.filters.model_dump(mode="json"),
        secret=body.secret,
        include_keys=body.include_keys,
        description=body.description,
        policy=WebhookPolicy.from_settings(ctx.settings),
    )
    return _shown(view, token)


@router.get("/{subscription_id}", responses=responses(404))
def get_subscription(subscription_id: UUID, ctx: Context, token: Reader) -> SubscriptionOut:
    return _shown(accounts.get_subscription(ctx.store, subscription_id), token)


@router.patch("/{subscription_id}", responses=responses(404, 413))
def update_subscription(
    subscription_id: UUID, body: SubscriptionUpdate, ctx: Context, token: Writer
) -> SubscriptionOut:
    """Change the URL, filters or description; ``enabled: true`` re-enables it."""
    view = accounts.update_subscription(
        ctx.store,
        subscription_id,
        target=body.url,
        filters=body.filters.model_dump(mode="json") if body.filters else None,
        enabled=body.enabled,
        description=body.description,
        policy=WebhookPolicy.from_settings(ctx.settings),
    )
    return _shown(view, token)


@router.delete("/{subscription_id}", status_code=204, responses=responses(404))
def delete_subscription(subscription_id: UUID, ctx: Context, _: Writer) -> Response:
    accounts.remove_subscription(ctx.store, subscription_id)
    return Response(status_code=204)


@router.post("/{subscription_id}/enable", responses=responses(404))
def enable_subscription(subscription_id: UUID, ctx: Context, token: Writer) -> SubscriptionOut:
    """Re-enable a disabled subscription (a 410 disables one). New events are queued for it
    from now on; replay a cursor to get what was cancelled or missed meanwhile."""
    view = accounts.enable_subscription(ctx.store, subscription_id)
    ctx.wake()
    return _shown(view, token)


@router.post("/{subscription_id}/rotate-secret", responses=responses(404, 409, 413))
def rotate_secret(
    subscription_id: UUID,
    ctx: Context,
    token: Writer,
    body: Annotated[SecretRotation | None, Body()] = None,
) -> RotatedSubscriptionOut:
    """A new signing secret, shown in this response only. The old one keeps signing beside it
    (two signatures in ``webhook-signature``) for ``grace_seconds``. 409 for a callable."""
    body = body or SecretRotation()
    grace = timedelta(seconds=body.grace_seconds)
    view, expires = accounts.rotate_subscription_secret(
        ctx.store, subscription_id, body.secret, grace=grace
    )
    seen = accounts.as_seen_by(view, admin=token.allows(Scope.ADMIN))
    return RotatedSubscriptionOut.rotated(seen, expires)


def _shown(view: SubscriptionView, token: TokenView) -> SubscriptionOut:
    return SubscriptionOut.of(accounts.as_seen_by(view, admin=token.allows(Scope.ADMIN)))
