"""The commands that talk to the API: launch, ls, show, start/stop/reboot/destroy, watch, events.

Every one goes through ``cloudstate.client.Client``; none touches the database. ``register``
puts them (and ``token``/``account``/``subscription``/``orders``) on the root app with the
global ``--url``/``--token``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from cloudstate.cli import launching
from cloudstate.cli.admin import account_app, token_app
from cloudstate.cli.connect import (
    EXIT_CODES,
    Account,
    ExitCode,
    Json,
    Labels,
    OrderId,
    as_uuid,
    connect,
    fail,
    pairs,
    root,
)
from cloudstate.cli.following import events, watch
from cloudstate.cli.orders import orders_app
from cloudstate.cli.output import (
    action_results_table,
    err,
    events_table,
    instance_details,
    instance_rows,
    instances_table,
    order_line,
    out,
    print_json,
    workers_table,
)
from cloudstate.cli.subscriptions import subscription_app
from cloudstate.client import (
    ActionResult,
    BulkResult,
    Client,
    Instance,
    InstanceFilters,
    InstancePage,
    Order,
)
from cloudstate.exceptions import ActionNotAllowedError, NotFoundError, ValidationError


def register(app: typer.Typer) -> None:
    """Add the API commands and the global ``--url``/``--token`` options to ``app``."""
    app.callback(epilog=EXIT_CODES)(root)
    app.add_typer(token_app, name="token")
    app.add_typer(account_app, name="account")
    app.add_typer(subscription_app, name="subscription")
    app.add_typer(orders_app, name="orders")
    app.command()(launch)
    app.command("ls")(ls)
    app.command()(workers)
    app.command()(show)
    for action, helptext in ACTIONS.items():
        app.command(action)(_action_command(action, helptext))
    app.command()(watch)
    app.command()(events)


# --- launch ---------------------------------------------------------------------------------


def launch(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="A YAML or JSON order; flags override its fields."),
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", "-a", help="Default: simulator, or the only one.")
    ] = None,
    image: Annotated[str | None, typer.Option(help="Image id, e.g. img-web.")] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Hardware profile, e.g. small.")
    ] = None,
    memory: Annotated[int | None, typer.Option(help="MiB (override).")] = None,
    cpu: Annotated[int | None, typer.Option(help="Cores (override).")] = None,
    storage: Annotated[int | None, typer.Option(help="GiB (override).")] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Instances, with fresh UUIDs.")
    ] = None,
    uuid: Annotated[
        list[str] | None, typer.Option("--uuid", help="Your instance UUID (repeatable).")
    ] = None,
    name_prefix: Annotated[
        str | None, typer.Option(help="Name them PREFIX-1, PREFIX-2, ...")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", metavar="KEY=VALUE", help="A label to set (repeatable)."),
    ] = None,
    user_data: Annotated[
        str | None, typer.Option(help="Text, or @FILE to read it from a file.")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Key pair name.")] = None,
    realm: Annotated[str | None, typer.Option(help="Realm (availability zone).")] = None,
    policy: Annotated[str | None, typer.Option(help="partial (default) or all_or_nothing.")] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait with a progress bar until the order has finished.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait (then exit 6).")] = 300.0,
    as_json: Json = False,
) -> None:
    """Launch instances, and wait with a progress bar until the order has finished.

    Exit 0 when the order ended running; 3 when it ended partial, failed, rolled_back or
    cancelled; 6 when --timeout passed first (the launch goes on).
    """
    flags = launching.Flags(
        account=account,
        image=image,
        hardware_profile=profile,
        memory=memory,
        cpu=cpu,
        storage=storage,
        keyname=key,
        realm=realm,
        user_data=user_data,
        policy=policy,
        labels=pairs(label, "--label"),
        count=count,
        uuids=list(uuid or []),
        name_prefix=name_prefix,
    )
    order = launching.build_order(file, flags)
    with connect(ctx) as client:
        if launching.needs_account(order):
            order["account"] = launching.default_account(client)
        try:
            accepted = client.launch(order)
        except ValidationError as exc:
            raise (exc if file else launching.as_flags(exc)) from None
        err.print(f"order {accepted.id}: {len(accepted.instances)} instance(s)", style="dim")
        for note in launching.granted_otherwise(flags, accepted):
            err.print(f"note: {note}", style="yellow")
        if not wait:
            _show_order(accepted, as_json)
            return
        final, finished = launching.wait(client, accepted, timeout)
    _show_order(final, as_json)
    code, why = launching.outcome(final, finished, timeout)
    if code:
        fail(why, code)


def _show_order(order: Order, as_json: bool) -> None:
    if as_json:
        print_json(order)
        return
    out.print(instances_table(instance_rows(order.instances)))
    out.print(order_line(order), soft_wrap=True)


# --- workers ----------------------------------------------------------------------------------


def workers(
    ctx: typer.Context,
    include_stopped: Annotated[
        bool, typer.Option("--all", help="Also workers that stopped in the last day.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Worker processes: host, pid, last heartbeat and what each holds."""
    with connect(ctx) as client:
        found = client.workers(include_stopped=include_stopped)
    if as_json:
        print_json(found)
        return
    out.print(workers_table(found))


# --- ls and show ----------------------------------------------------------------------------


def ls(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None, typer.Option("--state", "-s", help="Only these states (repeatable).")
    ] = None,
    account: Account = None,
    order: OrderId = None,
    label: Labels = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Walk every page.")] = False,
    as_json: Json = False,
) -> None:
    """List instances (one page unless --all; JSON: {items, next_cursor})."""
    filters = _instance_filters(state, account, order, pairs(label, "--label"))
    with connect(ctx) as client:
        if all_pages:
            items = list(client.iter_instances(page_size=limit, **filters))
            page = InstancePage(items=items, next_cursor=None)
        else:
            page = client.list(limit=limit, cursor=cursor, **filters)
    if as_json:
        print_json(page)
        return
    out.print(instances_table(instance_rows(page.items)))
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor} (or --all)", style="dim")


def _instance_filters(
    states: list[str] | None, account: str | None, order: str | None, labels: dict[str, str]
) -> InstanceFilters:
    filters: InstanceFilters = {}
    if states:
        filters["state"] = states
    if account:
        filters["account"] = account
    if order:
        filters["order"] = order
    if labels:
        filters["labels"] = labels
    return filters


def show(
    ctx: typer.Context,
    uuid: str,
    with_events: Annotated[
        bool, typer.Option("--events", "-e", help="Also its timeline (every event).")
    ] = False,
    as_json: Json = False,
) -> None:
    """One instance in full (JSON: the instance, or {instance, events} with --events)."""
    with connect(ctx) as client:
        instance = client.get(as_uuid(uuid))
        timeline = list(client.iter_events(instances=instance.uuid)) if with_events else None
    if as_json:
        print_json(instance if timeline is None else {"instance": instance, "events": timeline})
        return
    out.print(instance_details(instance))
    if timeline is not None:
        out.print(events_table(timeline))


# --- actions --------------------------------------------------------------------------------

ACTIONS = {
    "start": "Start stopped instances.",
    "stop": "Stop running instances.",
    "reboot": "Reboot running instances.",
    "destroy": "Destroy instances (they go shutting_down, then terminated).",
}
ACTION_NOTE = (
    "\n\nOne UUID uses the instance's action endpoint, several the bulk one; --json prints the "
    "bulk answer {accepted, refused, results} either way. Exit 4 if any is refused (an "
    "unknown UUID counts as refused)."
)

Uuids = Annotated[list[str], typer.Argument(metavar="UUID", help="One or more instances.")]
Wait = Annotated[
    bool, typer.Option("--wait", "-w", help="Block until each accepted action is done.")
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait (then exit 6).")]


def _action_command(action: str, helptext: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        uuids: Uuids,
        wait: Wait = False,
        timeout: Timeout = 60.0,
        as_json: Json = False,
    ) -> None:
        act(ctx, action, uuids, wait=wait, timeout=timeout, as_json=as_json)

    command.__doc__ = helptext + ACTION_NOTE
    command.__name__ = action
    return command


def act(
    ctx: typer.Context, action: str, uuids: list[str], *, wait: bool, timeout: float, as_json: bool
) -> None:
    chosen = [as_uuid(value) for value in uuids]
    with connect(ctx) as client:
        if len(chosen) == 1:
            result, states = _act_on_one(client, action, chosen[0], wait, timeout)
        else:
            result = client.bulk_action(chosen, action)
            states = _wait_for(client, result, timeout) if wait else {}
    if as_json:
        print_json(result)
    else:
        out.print(action_results_table(result, states))
    if result.refused:
        fail(f"{result.refused} of {len(chosen)} refused", ExitCode.REFUSED)


def _act_on_one(
    client: Client, action: str, uuid: UUID, wait: bool, timeout: float
) -> tuple[BulkResult, dict[UUID, Instance]]:
    """The single-instance endpoint (the server waits), answered in the bulk shape."""
    try:
        outcome = client.action(uuid, action, wait=wait, timeout=timeout)
    except ActionNotAllowedError as exc:
        refused = ActionResult(
            uuid=uuid, accepted=False, error=str(exc), allowed_actions=list(exc.allowed)
        )
        return BulkResult(accepted=0, refused=1, results=[refused]), {}
    except NotFoundError as exc:
        refused = ActionResult(uuid=uuid, accepted=False, error=str(exc))
        return BulkResult(accepted=0, refused=1, results=[refused]), {}
    return BulkResult(accepted=1, refused=0, results=[outcome.result]), {uuid: outcome.instance}


def _wait_for(client: Client, result: BulkResult, timeout: float) -> dict[UUID, Instance]:
    """Poll every accepted instance until its operation is over, or fail with exit 6."""
    deadline = time.monotonic() + timeout
    states: dict[UUID, Instance] = {}
    waiting = [item.uuid for item in result.results if item.accepted]
    while waiting:
        states.update({uuid: client.get(uuid) for uuid in waiting})
        waiting = [uuid for uuid in waiting if states[uuid].operation is not None]
        if waiting and time.monotonic() >= deadline:
            fail(f"{len(waiting)} still in progress after {timeout:g}s", ExitCode.TIMEOUT)
        if waiting:
            time.sleep(0.25)
    return states
