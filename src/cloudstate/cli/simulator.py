"""``cloudstate simulator ...``: play "someone else" on the simulated cloud, through the API.

Every command goes to the server (``--url``, ``CLOUDSTATE_URL``), so it works against a service
on another host as well as against ``cloudstate serve`` here. ``stop``, ``start``, ``reboot``
and ``terminate`` take many provider ids in one request, or select with filters.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cloudstate.cli.connect import ExitCode, Json, Labels, connect, fail, pairs
from cloudstate.cli.output import (
    err,
    external_results_table,
    out,
    print_json,
    simulated_instances_table,
)
from cloudstate.exceptions import ValidationError

sim_app = typer.Typer(
    help="Play someone else on the simulated cloud (stop instances, take realms down).",
    no_args_is_help=True,
)

SimAccount = Annotated[
    str | None,
    typer.Option("--account", "-a", help="Only this simulator account (default: every one)."),
]
CloudAccount = Annotated[
    str | None,
    typer.Option("--account", "-a", help="The simulator account whose cloud (default: simulator)."),
]


@sim_app.command("ls")
def sim_ls(ctx: typer.Context, account: SimAccount = None, as_json: Json = False) -> None:
    """Every instance the simulated cloud holds, as the cloud sees it (raw states)."""
    with connect(ctx) as client:
        found = client.simulator_instances(account)
    if as_json:
        print_json(found)
        return
    out.print(simulated_instances_table(found))


ProviderIds = Annotated[
    list[str] | None,
    typer.Argument(metavar="PROVIDER_ID", help="The cloud's ids (simulator ls shows them)."),
]
Every = Annotated[bool, typer.Option("--all", help="Every instance the action applies to.")]
Name = Annotated[str | None, typer.Option("--name", help="Only instances with this name.")]

EXTERNAL = {
    "stop": "Stop instances outside cloudstate (running ones, with filters).",
    "start": "Start stopped instances outside cloudstate.",
    "reboot": "Reboot running instances outside cloudstate.",
    "terminate": "Terminate instances outside cloudstate.",
}
EXTERNAL_NOTE = (
    "\n\nGive provider ids, or select with --all, --account, --label and --name (every filter "
    "given must match). cloudstate notices at its next reconcile cycle. Exit 4 if any was "
    "refused."
)


def _external_command(action: str) -> Any:
    def command(
        ctx: typer.Context,
        provider_ids: ProviderIds = None,
        every: Every = False,
        account: SimAccount = None,
        label: Labels = None,
        name: Name = None,
        as_json: Json = False,
    ) -> None:
        labels = pairs(label, "--label")
        if not provider_ids and not (every or account or labels or name):
            raise ValidationError(
                "give provider ids, or select with --all, --account, --label or --name",
                field="PROVIDER_ID",
            )
        with connect(ctx) as client:
            result = client.simulator_act(
                action, provider_ids or [], every=every, account=account, labels=labels, name=name
            )
        if as_json:
            print_json(result)
        elif result.results:
            out.print(external_results_table(result.results))
        else:
            err.print("no instance matched", style="dim")
        if result.refused:
            fail(f"{result.refused} of {len(result.results)} refused", ExitCode.REFUSED)

    command.__doc__ = EXTERNAL[action] + EXTERNAL_NOTE
    command.__name__ = f"sim_{action}"
    return command


for _action in EXTERNAL:
    sim_app.command(_action)(_external_command(_action))


@sim_app.command("realm")
def sim_realm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="REALM", help="e.g. sim-a.")],
    available: Annotated[bool, typer.Argument(metavar="true|false")],
    reason: Annotated[str, typer.Option(help="Why it is unavailable.")] = "",
    account: CloudAccount = None,
) -> None:
    """Make a realm available or unavailable (launches there fail meanwhile)."""
    with connect(ctx) as client:
        client.simulator_realm(name, available, reason=reason, account=account)
    err.print(f"realm {name}: {'available' if available else 'unavailable'}")


@sim_app.command("configure")
def sim_configure(
    ctx: typer.Context,
    knobs: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME=VALUE", help="Knobs to change; none: show them."),
    ] = None,
    account: CloudAccount = None,
) -> None:
    """Change the simulated cloud's knobs, e.g. unreachable=true (an outage) or
    launch_failure_rate=0.1; prints every knob as it now is (JSON)."""
    changes: dict[str, Any] = {}
    for key, value in pairs(knobs, "NAME=VALUE").items():
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    with connect(ctx) as client:
        now = client.simulator_knobs(account, **changes)
    print_json(now)
