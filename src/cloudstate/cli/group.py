"""The root command group: global options anywhere on the line, and help that reads cleanly.

Click parses a group's options only before its subcommand, so ``cloudstate ls --token T`` was
"No such option". ``CloudstateGroup`` moves ``--url`` and ``--token`` (which belong to the root)
to the front wherever they are given, and ``--json`` (which belongs to each command) behind the
subcommand when it is given before it: ``cloudstate --json ls`` and ``cloudstate ls --json``
are one command. Everything after ``--`` is left alone.

Typer prints a ``<type>`` beside every option, ``<bool>`` on each flag included; the group gives
each parameter without a metavar of its own a plain one instead (none for a flag, the name in
capitals otherwise), once, before anything is parsed or shown.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption

ROOT_VALUED = ("--url", "--token")
"""The root's options that take a value: accepted before or after the subcommand."""
MOVED_BEHIND = ("--json",)
"""Each command's own flags that are accepted before the subcommand too."""


def hoist(args: list[str]) -> list[str]:
    """``args`` with the root's options first and the commands' flags behind the subcommand."""
    head, tail = _split(args, "--")
    front: list[str] = []
    rest: list[str] = []
    behind: list[str] = []
    seen_command = False
    index = 0
    while index < len(head):
        arg = head[index]
        name = arg.split("=", 1)[0]
        if name in ROOT_VALUED:
            takes_next = "=" not in arg and index + 1 < len(head)
            front += head[index : index + 1 + takes_next]
            index += 1 + takes_next
            continue
        if arg in MOVED_BEHIND and not seen_command:
            behind.append(arg)
        else:
            seen_command = seen_command or not arg.startswith("-")
            rest.append(arg)
        index += 1
    return [*front, *rest, *behind, *tail]


def _split(args: list[str], marker: str) -> tuple[list[str], list[str]]:
    if marker in args:
        at = args.index(marker)
        return args[:at], args[at:]
    return args, []


def readable(command: Any, ctx: Any) -> None:
    """Give every parameter of ``command`` (a click command) and its subcommands, ``--help``
    included, a plain metavar."""
    helper = command.get_help_option(ctx)
    for param in [*command.params, *([helper] if helper else [])]:
        if isinstance(param, TyperArgument):
            setattr(param, "display_type_rich", _no_type)  # noqa: B010 (an instance's own)
        if param.metavar is not None:
            continue
        is_flag = isinstance(param, TyperOption) and param.is_flag
        param.metavar = "" if is_flag else (param.name or "value").upper()
    for sub in getattr(command, "commands", {}).values():
        readable(sub, ctx)


def _no_type(ctx: Any) -> None:
    """An argument's type in the help: none (its name says what it is)."""
    return None


class CloudstateGroup(TyperGroup):
    """The ``cloudstate`` group (see the module docstring)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        readable(self, ctx)
        return super().parse_args(ctx, hoist(list(args)))
