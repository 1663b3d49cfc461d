"""``cloudstate subscription ...``: webhooks, their delivery log, and sending events again.

A signing secret is printed once, alone on stdout, by ``add`` and ``rotate-secret`` (what it
belongs to goes to stderr), as ``token create`` prints a token; ``--json`` prints the API's
answer with the secret in it instead.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from cloudstate.cli.connect import Account, Json, Labels, OrderId, as_uuid, connect, pairs
from cloudstate.cli.following import Instances, Types
from cloudstate.cli.output import (
    deliveries_table,
    err,
    out,
    print_json,
    subscription_details,
    subscriptions_table,
)
from cloudstate.client import DeliveryPage, RotatedSubscription, Subscription

subscription_app = typer.Typer(
    help="Webhook subscriptions and their deliveries.", no_args_is_help=True
)

Id = Annotated[str, typer.Argument(metavar="ID", help="The subscription id.")]


@subscription_app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The http(s) URL events are POSTed to.")],
    types: Types = None,
    instance: Instances = None,
    order: OrderId = None,
    account: Account = None,
    label: Labels = None,
    secret: Annotated[
        str | None, typer.Option(help="Your whsec_… signing secret (default: a new one).")
    ] = None,
    description: Annotated[str, typer.Option(help="A note for people.")] = "",
    as_json: Json = False,
) -> None:
    """Subscribe URL to events from now on (every filter given must match); secret shown once."""
    filters: dict[str, Any] = {
        "types": list(types or []),
        "instances": list(instance or []),
        "order": order,
        "account": account,
        "labels": pairs(label, "--label"),
    }
    with connect(ctx) as client:
        created = client.subscribe(
            url,
            filters={key: value for key, value in filters.items() if value},
            secret=secret,
            description=description,
        )
    _show_secret(created, "subscribed", as_json)


@subscription_app.command("list")
def list_(ctx: typer.Context, as_json: Json = False) -> None:
    """Every subscription, enabled or not (and why not)."""
    with connect(ctx) as client:
        found = client.subscriptions()
    if as_json:
        print_json(found)
    else:
        out.print(subscriptions_table(found))


@subscription_app.command("show")
def show(ctx: typer.Context, subscription_id: Id, as_json: Json = False) -> None:
    """One subscription in full (never its secret)."""
    with connect(ctx) as client:
        found = client.get_subscription(as_uuid(subscription_id, "id"))
    if as_json:
        print_json(found)
    else:
        out.print(subscription_details(found))


@subscription_app.command("rm")
def rm(ctx: typer.Context, subscription_id: Id) -> None:
    """Remove a subscription and its delivery log."""
    with connect(ctx) as client:
        client.unsubscribe(as_uuid(subscription_id, "id"))
    err.print(f"subscription {escape(subscription_id)} removed")


@subscription_app.command("enable")
def enable(ctx: typer.Context, subscription_id: Id, as_json: Json = False) -> None:
    """Re-enable a disabled subscription (a 410 disables one); replay to catch up."""
    with connect(ctx) as client:
        found = client.enable_subscription(as_uuid(subscription_id, "id"))
    if as_json:
        print_json(found)
    else:
        err.print(f"subscription {found.id} enabled")


@subscription_app.command("rotate-secret")
def rotate_secret(
    ctx: typer.Context,
    subscription_id: Id,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds the old secret keeps signing beside the new one."),
    ] = 86400.0,
    secret: Annotated[
        str | None, typer.Option(help="The new whsec_… secret (default: a new one).")
    ] = None,
    as_json: Json = False,
) -> None:
    """A new signing secret, printed once; the old one also signs for --grace seconds."""
    with connect(ctx) as client:
        rotated = client.rotate_secret(
            as_uuid(subscription_id, "id"), secret=secret, grace_seconds=grace
        )
    _show_secret(rotated, "secret rotated", as_json)


@subscription_app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    subscription_id: Id,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", "-s", help="pending, delivering, delivered, dead or cancelled (repeatable)."
        ),
    ] = None,
    after: Annotated[int, typer.Option(min=0, help="Only events after this seq.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Walk every page.")] = False,
    as_json: Json = False,
) -> None:
    """The delivery log, oldest event first (JSON: {items, next_after})."""
    chosen = as_uuid(subscription_id, "id")
    with connect(ctx) as client:
        if all_pages:
            items = list(client.iter_deliveries(chosen, status=status, after=after))
            page = DeliveryPage(items=items, next_after=None)
        else:
            page = client.deliveries(chosen, status=status, after=after, limit=limit)
    if as_json:
        print_json(page)
        return
    out.print(deliveries_table(page.items))
    if page.next_after is not None:
        err.print(f"more: --after {page.next_after} (or --all)", style="dim")


@subscription_app.command("retry")
def retry(
    ctx: typer.Context,
    delivery_id: Annotated[int, typer.Argument(min=1, help="The delivery id (see deliveries).")],
    as_json: Json = False,
) -> None:
    """Send one dead, cancelled or pending delivery again now (its attempts are kept)."""
    with connect(ctx) as client:
        delivery = client.retry_delivery(delivery_id)
    if as_json:
        print_json(delivery)
    else:
        err.print(f"delivery {delivery.id} (event {delivery.event_seq}) queued again")


@subscription_app.command("replay")
def replay(
    ctx: typer.Context,
    subscription_id: Id,
    after: Annotated[int, typer.Option(min=0, help="Replay the events after this seq.")],
    limit: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="At most this many events.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Deliver again every retained event after --after that the subscription matches."""
    with connect(ctx) as client:
        result = client.replay(as_uuid(subscription_id, "id"), after, limit=limit)
    if as_json:
        print_json(result)
        return
    err.print(
        f"{result.queued} event(s) queued again ({result.created} new), after {result.after} "
        f"through {result.through}"
    )
    if result.more:
        err.print(f"more: replay --after {result.through}", style="dim")


def _show_secret(
    subscription: Subscription | RotatedSubscription, what: str, as_json: bool
) -> None:
    if as_json:
        print_json(subscription)
        return
    err.print(f"{what}: [bold]{subscription.id}[/bold] → {escape(subscription.url)}")
    if isinstance(subscription, RotatedSubscription):
        until = subscription.previous_secret_expires_at
        err.print(
            f"the old secret also signs until {until.astimezone():%Y-%m-%d %H:%M:%S}"
            if until
            else "the old secret no longer signs"
        )
    err.print("the signing secret, shown once; store it now:")
    out.print(subscription.secret or "", soft_wrap=True)
