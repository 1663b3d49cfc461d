"""What every API command shares: where the API is, exit codes, and shared options."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, NoReturn
from uuid import UUID

import typer
from rich.markup import escape

from cloudstate.cli.output import err
from cloudstate.client import AuthenticationError, Client, UnreachableError
from cloudstate.exceptions import FieldError, ValidationError, WaitTimeoutError
from cloudstate.version import __version__


class ExitCode(IntEnum):
    """What a script can rely on; listed in ``cloudstate --help`` and in the README."""

    OK = 0
    ERROR = 1  # a CloudStateError: bad input, not found, conflict, server error
    USAGE = 2  # the command line itself is wrong (click's own code for it)
    LAUNCH_FAILED = 3  # an order ended otherwise than asked (not running; not cancelled)
    REFUSED = 4  # the state machine (or the simulated cloud) refused an action
    UNREACHABLE = 5  # no answer from the server, or it refused the token
    TIMEOUT = 6  # stopped waiting; the work goes on


EXIT_CODE_MEANINGS = {
    ExitCode.OK: "ok",
    ExitCode.ERROR: "error: bad input, not found, conflict, server error",
    ExitCode.USAGE: "usage error: an unknown command or option, a missing argument",
    ExitCode.LAUNCH_FAILED: (
        "a launch ended with its order not running (partial, failed, rolled_back, cancelled), "
        "or orders cancel with its order not cancelled"
    ),
    ExitCode.REFUSED: "an action was refused for some instance",
    ExitCode.UNREACHABLE: "cannot reach the server, or it refused the token",
    ExitCode.TIMEOUT: "timed out waiting (the work goes on)",
}
EXIT_CODES = (
    "Exit codes: "
    + "; ".join(f"{int(code)} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())
    + "."
)


@dataclass(frozen=True)
class Target:
    """The root ``--url`` / ``--token`` (``None``: from the environment or the home)."""

    url: str | None = None
    token: str | None = None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cloudstate {__version__}")
        raise typer.Exit


def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="The API (default: CLOUDSTATE_URL, else http://CLOUDSTATE_HOST:CLOUDSTATE_PORT).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="API token (default: CLOUDSTATE_TOKEN, else the token file in the home).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = Target(url, token)


def target(ctx: typer.Context) -> Target:
    return ctx.find_object(Target) or Target()


def fail(message: object, code: ExitCode) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(str(message))}")
    raise typer.Exit(code)


@contextmanager
def exit_codes() -> Iterator[None]:
    """Errors that have an exit code of their own; any other CloudStateError is 1."""
    try:
        yield
    except (AuthenticationError, UnreachableError) as exc:
        fail(exc, ExitCode.UNREACHABLE)
    except WaitTimeoutError as exc:
        fail(f"{exc} (the work goes on)", ExitCode.TIMEOUT)


@contextmanager
def connect(ctx: typer.Context) -> Iterator[Client]:
    chosen = target(ctx)
    with exit_codes(), Client(chosen.url, chosen.token) as client:
        yield client


def pairs(values: Iterable[str] | None, option: str) -> dict[str, str]:
    """``["k=v", ...]`` → a dict; anything without ``=`` is a ValidationError naming it."""
    found: dict[str, str] = {}
    bad = []
    for value in values or ():
        key, sep, item = value.partition("=")
        if not sep or not key:
            bad.append(FieldError(option, f"{value!r} is not key=value"))
        found[key] = item
    if bad:
        raise ValidationError(bad)
    return found


def as_uuid(value: str, field: str = "uuid") -> UUID:
    """A command-line UUID, or a ValidationError naming ``field``."""
    try:
        return UUID(value)
    except ValueError:
        raise ValidationError([FieldError(field, f"{value!r} is not a UUID")]) from None


Json = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON instead of a table (for scripts).")
]
Labels = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", metavar="KEY=VALUE", help="Only with this label (repeat: all)."),
]
Account = Annotated[str | None, typer.Option("--account", "-a", help="Only this account.")]
OrderId = Annotated[str | None, typer.Option("--order", help="Only this order's instances.")]
