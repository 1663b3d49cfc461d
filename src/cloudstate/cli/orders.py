"""``cloudstate orders ...``: list launch orders, show one with its instances, cancel one."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudstate.cli import launching
from cloudstate.cli.connect import ExitCode, Json, as_uuid, connect, fail
from cloudstate.cli.output import (
    err,
    instance_rows,
    instances_table,
    launch_attempts_table,
    order_details,
    order_line,
    orders_table,
    out,
    print_json,
)
from cloudstate.client import Order, OrderPage

orders_app = typer.Typer(help="Launch orders: list, show, cancel.", no_args_is_help=True)

OrderArgument = Annotated[str, typer.Argument(metavar="ORDER_ID", help="The order's id.")]


@orders_app.command("ls")
def ls(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None, typer.Option("--state", "-s", help="Only these states (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Walk every page.")] = False,
    as_json: Json = False,
) -> None:
    """List orders, newest first (one page unless --all; JSON: {items, next_cursor})."""
    with connect(ctx) as client:
        if all_pages:
            items = list(client.iter_orders(state=state, page_size=limit))
            page = OrderPage(items=items, next_cursor=None)
        else:
            page = client.orders(state=state, limit=limit, cursor=cursor)
    if as_json:
        print_json(page)
        return
    out.print(orders_table(page.items))
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor} (or --all)", style="dim")


@orders_app.command("show")
def show(ctx: typer.Context, order_id: OrderArgument, as_json: Json = False) -> None:
    """One order: its state (and why), policy, deadline and counts, then its instances, and
    every launch attempt of those tried on more than one account (JSON: the order)."""
    with connect(ctx) as client:
        order = client.get_order(as_uuid(order_id, "order_id"))
    if as_json:
        print_json(order)
        return
    show_order(order)


def show_order(order: Order) -> None:
    out.print(order_details(order))
    out.print()
    out.print(instances_table(instance_rows(order.instances)))
    attempts = launch_attempts_table(order.instances)
    if attempts is not None:
        out.print()
        out.print("launch attempts", style="bold")
        out.print(attempts)


@orders_app.command("cancel")
def cancel(
    ctx: typer.Context,
    order_id: OrderArgument,
    wait: Annotated[
        bool, typer.Option(help="Wait until the order is cancelled (all of it destroyed).")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait (then exit 6).")] = 300.0,
    as_json: Json = False,
) -> None:
    """Cancel an order still launching: what was launched is destroyed, the rest never will
    be. Exit 0 once it is cancelled (at once with --no-wait); 1 if it had already finished;
    3 if it ended otherwise (a failure had already started rolling it back)."""
    with connect(ctx) as client:
        order = client.cancel_order(as_uuid(order_id, "order_id"))
        err.print(f"order {order.id}: cancel accepted ({order.state})", style="dim")
        finished = True
        if wait:
            order, finished = launching.wait(
                client, order, timeout, label="cancelling", done=launching.gone
            )
    if as_json:
        print_json(order)
    else:
        out.print(instances_table(instance_rows(order.instances)))
        out.print(order_line(order), soft_wrap=True)
    if not finished:
        fail(f"order still {order.state} after {timeout:g}s (the cancel goes on)", ExitCode.TIMEOUT)
    if wait and str(order.state) != "cancelled":
        fail(f"order ended {order.state}, not cancelled: {order.reason}", ExitCode.LAUNCH_FAILED)
