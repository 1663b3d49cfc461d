"""How results look: Rich tables and lines for people, the API models' JSON for scripts.

Results go to stdout; progress, hints and errors go to stderr, so ``--json`` output can be
piped as it is. Secrets are never printed, except a token or a subscription secret in the
response that created it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Column, Table
from rich.text import Text

from cloudstate.client import (
    Account,
    BulkResult,
    Delivery,
    Event,
    ExternalResult,
    Instance,
    Order,
    SimulatedInstance,
    Subscription,
    Token,
    Worker,
)

PIPE_WIDTH = 120
"""Table width when stdout is not a terminal and ``COLUMNS`` is unset (Rich would use 80)."""


class _Console(Console):
    """Prints without cropping: a table wider than the screen (see ``WordTable``) keeps every
    character, and the terminal folds its lines."""

    def print(self, *objects: Any, **options: Any) -> None:
        options.setdefault("crop", False)
        super().print(*objects, **options)


def _console(*, stderr: bool) -> Console:
    console = _Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


out = _console(stderr=False)
err = _console(stderr=True)

STATE_STYLES = {
    "running": "green",
    "new": "yellow",
    "pending": "yellow",
    "stopping": "yellow",
    "rebooting": "yellow",
    "shutting_down": "yellow",
    "stopped": "blue",
    "terminated": "dim",
    "error": "bold red",
    "unknown": "magenta",
}

ORDER_STYLES = {
    "accepted": "yellow",
    "launching": "yellow",
    "running": "green",
    "partial": "bold yellow",
    "failed": "bold red",
    "rolling_back": "yellow",
    "rolled_back": "red",
    "cancelled": "dim",
}


ACTION_OF = {
    "launching": "launch",
    "starting": "start",
    "stopping": "stop",
    "rebooting": "reboot",
    "destroying": "destroy",
}
"""An in-flight operation's name → the action that started it."""


PROSE = frozenset(
    {"WHAT", "DETAIL", "LAST ERROR", "FILTERS", "CONFIG", "HOLDS", "LAST", "ADDRESSES"}
    | {"INSTANCES", "RESULT", "STATUS", "CREDENTIALS", "SCOPES", "STATE", "URL"}
)
"""Columns of free text: the first to wrap (between words) when a table is too wide."""


class WordTable(Table):
    """A table that never splits a word: an id, a UUID, an address, an event type.

    Each column is at least as wide as its longest word. When the table is too wide, prose
    columns wrap first, then the others, only ever between words; if that is not enough the
    ``optional`` columns are left out, in order, with a note saying so. A table that still
    does not fit is drawn wider than the screen (the terminal folds the lines, every word whole).
    """

    def __init__(self, *args: Any, optional: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optional = list(optional)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        hidden: list[str] = []
        shown = self._without(hidden)
        widths = _fit(shown, options.max_width)
        for name in self.optional:
            if widths is not None:
                break
            hidden.append(name)
            shown = self._without(hidden)
            widths = _fit(shown, options.max_width)
        if widths is None:
            widths = fitted(shown.columns, 0)
        spacing = _spacing(shown)
        for column, width in zip(shown.columns, widths, strict=True):
            column.width = width
        wide = max(sum(widths) + spacing, options.max_width)
        yield from shown.__rich_console__(console, options.update_width(wide))
        if hidden:
            yield Text(
                f"(not shown at this width: {', '.join(hidden)}; --json has every field)",
                style="dim",
            )

    def _without(self, hidden: Sequence[str]) -> Table:
        """A copy of this table without the ``hidden`` columns (this one is left as it is)."""
        shown = Table(box=self.box, show_edge=self.show_edge, pad_edge=self.pad_edge)
        shown.padding = self.padding
        kept = [column for column in self.columns if column.header not in hidden]
        shown.columns = [replace(column, _index=index) for index, column in enumerate(kept)]
        shown.rows = self.rows
        return shown


def _spacing(table: Table) -> int:
    """What a table adds to its columns' widths: padding and the gaps between columns."""
    return table._extra_width + sum(map(table._get_padding_width, range(len(table.columns))))


def _fit(table: Table, width: int) -> list[int] | None:
    """Column widths within ``width`` that keep every word whole, or None if there are none."""
    room = width - _spacing(table)
    widths = fitted(table.columns, room)
    return widths if sum(widths) <= room else None


def _plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else "" if cell is None else str(cell)


def fitted(columns: Sequence[Column], room: int) -> list[int]:
    """Column widths that keep every word whole, within ``room`` if they can: prose columns
    give way first, then any other, the widest first each time."""
    longest_line: list[int] = []
    longest_word: list[int] = []
    for column in columns:
        texts = [str(column.header), *(_plain(cell) for cell in column._cells)]
        lines = [line for text in texts for line in text.splitlines()]
        longest_line.append(max((cell_len(line) for line in lines), default=0))
        words = [word for line in lines for word in line.split()]
        longest_word.append(max((cell_len(word) for word in words), default=0))
    widths = list(longest_line)
    for prose_only in (True, False):
        while sum(widths) > room:
            shrinkable = [
                i
                for i, column in enumerate(columns)
                if widths[i] > longest_word[i] and (column.header in PROSE or not prose_only)
            ]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: widths[i])] -= 1
    return widths


def _table(*columns: str, optional: Sequence[str] = ()) -> WordTable:
    """A table of ``columns``; the ``optional`` ones are left out, in that order, when the
    screen is too narrow for the others to keep their words whole."""
    table = WordTable(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        optional=optional,
    )
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


# --- JSON ---------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def print_json(value: Any) -> None:
    """Indented JSON on stdout (written plainly: Rich would wrap long lines)."""
    sys.stdout.write(json.dumps(jsonable(value), indent=2) + "\n")


def print_json_line(value: Any) -> None:
    """One compact JSON document per line, flushed (for followers: ``watch --json``)."""
    sys.stdout.write(json.dumps(jsonable(value), separators=(",", ":")) + "\n")
    sys.stdout.flush()


# --- instances ----------------------------------------------------------------------------------


def state_text(state: str, reason: str = "") -> Text:
    text = Text(state, style=STATE_STYLES.get(state, ""))
    if reason:
        text.append(f" ({reason})", style="dim")
    return text


def addresses(row: Mapping[str, Any]) -> str:
    return ", ".join([*row.get("public_addresses", []), *row.get("private_addresses", [])])


def instance_rows(instances: Iterable[Instance]) -> list[dict[str, Any]]:
    return [instance.model_dump(mode="json") for instance in instances]


def instances_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """One row per instance: uuid, name, state, account, addresses; the operation in flight
    and the last error when any row has one."""
    errors = any(row.get("last_error") for row in rows)
    operations = any(row.get("operation") for row in rows)
    columns = ("UUID", "NAME", "STATE", "ACCOUNT", "ADDRESSES")
    table = _table(
        *columns,
        *(["OPERATION"] if operations else []),
        *(["LAST ERROR"] if errors else []),
        optional=("ACCOUNT", "OPERATION", "ADDRESSES"),
    )
    for row in rows:
        reason = str(row.get("state_reason") or "")
        cells: list[str | Text] = [
            str(row["uuid"]),
            Text(str(row.get("name") or "")),
            state_text(str(row["state"]), "" if reason == row.get("last_error") else reason),
            str(row.get("account") or ""),
            addresses(row),
        ]
        if operations:
            cells.append(str(row.get("operation") or ""))
        if errors:
            cells.append(Text(str(row.get("last_error") or "")))
        table.add_row(*cells)
    return table


def action_results_table(result: BulkResult, states: Mapping[UUID, Instance]) -> Table:
    """Accepted or refused (and why), per instance; the state too when it was waited for."""
    table = _table("UUID", "RESULT", *(["STATE"] if states else []), "DETAIL")
    for item in result.results:
        outcome = Text("accepted", style="green") if item.accepted else Text("refused", "red")
        state = states.get(item.uuid)
        shown = [state_text(str(state.state)) if state else Text("")] if states else []
        detail = item.error.replace(f"instance {item.uuid} is ", "")  # the row names it
        table.add_row(str(item.uuid), outcome, *shown, Text(detail))
    return table


def instance_details(instance: Instance) -> Table:
    """Every field of one instance, one per line."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in instance.model_dump(mode="json").items():
        if name == "state":
            table.add_row(name, state_text(str(value), instance.state_reason))
            continue
        shown = value if isinstance(value, str) else json.dumps(value)
        table.add_row(name, Text("" if value is None else shown))
    return table


# --- orders -------------------------------------------------------------------------------------


def counts_text(counts: Mapping[str, int]) -> str:
    """Instances by state, the most first: ``3 running, 1 pending``."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {state}" for state, count in ranked)


def order_state_text(state: str, reason: str = "") -> Text:
    text = Text(state, style=ORDER_STYLES.get(state, ""))
    if reason:
        text.append(f" ({reason})", style="dim")
    return text


def order_line(order: Order) -> Text:
    """``order 4f1c…: rolled_back (instance … failed: …); 2 terminated``."""
    line = Text(f"order {order.id}: ")
    line.append_text(order_state_text(str(order.state), order.reason))
    return line.append(f"; {counts_text(order.counts)}" if order.counts else "")


def orders_table(orders: Iterable[Order]) -> Table:
    """One row per order: id, state (and why it ended so), policy, its instances, when."""
    table = _table(
        "ID", "STATE", "POLICY", "INSTANCES", "CREATED", "FINISHED", optional=("FINISHED",)
    )
    for order in orders:
        table.add_row(
            str(order.id),
            order_state_text(str(order.state), order.reason),
            str(order.policy),
            counts_text(order.counts),
            _when(order.created_at),
            _when(order.finished_at),
        )
    return table


def order_details(order: Order) -> Table:
    """The order itself, one field per line (its instances are a table of their own)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("id", str(order.id))
    table.add_row("state", order_state_text(str(order.state), order.reason))
    table.add_row("policy", str(order.policy))
    table.add_row("instances", counts_text(order.counts) or "none")
    table.add_row("created", _moment(order.created_at))
    table.add_row("launch deadline", _moment(order.launch_deadline))
    table.add_row("finished", _moment(order.finished_at))
    return table


def launch_attempts_table(instances: Iterable[Instance]) -> Table | None:
    """Every launch attempt of the instances tried on more than one account (failover), or
    None when each was tried once."""
    retried = [instance for instance in instances if len(instance.launch_attempts) > 1]
    if not retried:
        return None
    table = _table("UUID", "NAME", "ATTEMPT", "ACCOUNT", "WHEN", "RESULT")
    for instance in retried:
        for number, attempt in enumerate(instance.launch_attempts, start=1):
            result = (
                Text(attempt.error, style="red") if attempt.error else Text("launched", "green")
            )
            table.add_row(
                str(instance.uuid),
                instance.name,
                str(number),
                attempt.account,
                _moment(attempt.at),
                result,
            )
    return table


# --- events -------------------------------------------------------------------------------------


def describe_order(kind: str, data: Mapping[str, Any]) -> str:
    counts = counts_text(data.get("instances", {}))
    if kind == "order.completed":
        return f"completed: {data.get('state')} ({counts})"
    return f"{data.get('previous_state')} → {data.get('state')} ({counts})"


def describe(event: Event) -> str:
    """What an event says, in a few words."""
    data = event.data
    now: Mapping[str, Any] = data.get("instance") or {}
    kind = event.type.removeprefix("instance.")
    if kind == "state_changed":
        reason = data.get("reason") or now.get("state_reason")
        return f"{data.get('previous_state')} → {now.get('state')}" + (
            f" ({reason})" if reason else ""
        )
    if kind == "addresses_changed":
        return f"addresses: {addresses(now) or 'none'}"
    if kind == "action_requested":
        return f"{data.get('action')} requested"
    if kind == "action_completed":
        return f"{ACTION_OF.get(str(data.get('operation')), data.get('operation'))} completed"
    if kind in ("action_failed", "launch_failed"):
        return f"{kind.replace('_', ' ')}: {data.get('error') or data.get('reason') or ''}"
    if kind == "created":
        return "created"
    if kind == "key_available":
        return "key available"
    if event.type.startswith("order."):
        return describe_order(event.type, data)
    if event.type == "realm.availability_changed":
        return "available" if data.get("available") else f"unavailable: {data.get('reason')}"
    shown = {key: value for key, value in data.items() if key != "instance"}
    return json.dumps(shown, separators=(",", ":"), default=str)


def event_name(event: Event) -> str:
    instance = event.data.get("instance")
    if isinstance(instance, dict) and instance.get("name"):
        return str(instance["name"])
    return event.subject


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


TYPE_WIDTH = max(len("realm.availability_changed"), len("account.credentials_required"))


def event_line(event: Event) -> Text:
    """``#12    14:03:07  instance.state_changed        web-1  pending → running``: the
    fixed-width fields first, so a long subject (an order's UUID) cannot push them out of line."""
    line = Text(f"#{event.seq:<5} {_clock(event.time)}  ", style="dim")
    line.append(f"{event.type:<{TYPE_WIDTH}}  ")
    line.append(f"{event_name(event)}  ", style="bold")
    line.append(describe(event), style=_event_style(event))
    return line


def _event_style(event: Event) -> str:
    if event.type == "instance.state_changed":
        state = (event.data.get("instance") or {}).get("state", "")
        return STATE_STYLES.get(str(state), "")
    return "red" if event.type.endswith("failed") else ""


def events_table(events: Sequence[Event]) -> Table:
    table = _table("SEQ", "TIME", "SUBJECT", "TYPE", "WHAT")
    for event in events:
        table.add_row(
            str(event.seq),
            event.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            event_name(event),
            event.type,
            Text(describe(event), style=_event_style(event)),
        )
    return table


# --- tokens and accounts ------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else ""


def workers_table(workers: Iterable[Worker]) -> Table:
    table = _table("ID", "HOST", "PID", "ALIVE", "STARTED", "LAST HEARTBEAT", "HOLDS")
    for worker in workers:
        holds = worker.holds
        held = (
            f"accounts: {', '.join(holds.get('accounts', [])) or '-'}; "
            f"actions: {holds.get('operations', 0)}; deliveries: {holds.get('deliveries', 0)}"
        )
        alive = Text("yes", style="green") if worker.alive else Text("no", style="red")
        table.add_row(
            worker.id,
            worker.host,
            str(worker.pid),
            alive,
            _when(worker.started_at),
            worker.heartbeat_at.astimezone().strftime("%H:%M:%S"),
            held,
        )
    return table


def tokens_table(tokens: Iterable[Token]) -> Table:
    table = _table("NAME", "PREFIX", "SCOPES", "CREATED", "LAST USED", "REVOKED")
    for token in tokens:
        table.add_row(
            token.name,
            token.prefix + "…",
            ", ".join(token.scopes),
            _when(token.created_at),
            _when(token.last_used_at),
            _when(token.revoked_at),
        )
    return table


def accounts_table(accounts: Iterable[Account]) -> Table:
    table = _table(
        "NAME", "PROVIDER", "STATUS", "CONFIG", "CREDENTIALS", "CREATED", optional=("CREATED",)
    )
    for account in accounts:
        status = account.status + (f" ({account.status_reason})" if account.status_reason else "")
        table.add_row(
            account.name,
            account.provider,
            Text(status, style="green" if account.status == "ok" else "red"),
            Text(json.dumps(account.config)),
            _credentials(account),
            _when(account.created_at),
        )
    return table


def _credentials(account: Account) -> str:
    if not account.has_credentials:
        return "no"
    source = " (from an order)" if account.credentials_from_order else ""
    until = account.credentials_expire_at
    return f"yes{source}" + (f", until {_when(until)}" if until else "")


# --- subscriptions and deliveries ---------------------------------------------------------------

DELIVERY_STYLES = {
    "delivered": "green",
    "pending": "yellow",
    "delivering": "yellow",
    "dead": "bold red",
    "cancelled": "dim",
}


def _filters(filters: Mapping[str, Any]) -> str:
    """Only the criteria that are set, compactly: ``types=[...] labels={...}``."""
    chosen = {key: value for key, value in filters.items() if value}
    return " ".join(
        f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in chosen.items()
    )


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _moment(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _enabled(subscription: Subscription) -> Text:
    if subscription.enabled:
        return Text("enabled", style="green")
    reason = f" ({subscription.disabled_reason})" if subscription.disabled_reason else ""
    return Text("disabled" + reason, style="red")


def subscriptions_table(subscriptions: Iterable[Subscription]) -> Table:
    table = _table("ID", "URL", "STATUS", "FILTERS", "CREATED", optional=("CREATED",))
    for subscription in subscriptions:
        table.add_row(
            str(subscription.id),
            subscription.url,
            _enabled(subscription),
            Text(_filters(subscription.filters) or "every event"),
            _when(subscription.created_at),
        )
    return table


def subscription_details(subscription: Subscription) -> Table:
    """Every field of one subscription, one per line (its secret never: it is not sent)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in subscription.model_dump(mode="json", exclude={"secret"}).items():
        if name == "enabled":
            table.add_row("status", _enabled(subscription))
            continue
        if name == "disabled_reason":
            continue
        shown = value if isinstance(value, str) else json.dumps(value)
        table.add_row(name, Text("" if value is None else shown))
    return table


def deliveries_table(deliveries: Iterable[Delivery]) -> Table:
    """One row per delivery: which event, its status, attempts and the last answer."""
    table = _table(
        "ID",
        "SEQ",
        "TYPE",
        "SUBJECT",
        "STATUS",
        "ATTEMPTS",
        "LAST",
        "WHEN",
        optional=("WHEN", "ATTEMPTS", "SEQ", "LAST"),
    )
    for delivery in deliveries:
        last = str(delivery.last_status_code or "") or delivery.last_error
        when = delivery.delivered_at or delivery.next_attempt_at or delivery.last_attempt_at
        table.add_row(
            str(delivery.id),
            str(delivery.event_seq),
            delivery.event_type,
            delivery.subject,
            Text(delivery.status, style=DELIVERY_STYLES.get(delivery.status, "")),
            str(delivery.attempts),
            Text(last),
            _moment(when),
        )
    return table


# --- the simulated cloud --------------------------------------------------------------------


def simulated_instances_table(instances: Iterable[SimulatedInstance]) -> Table:
    """What the simulated cloud holds: its ids (for ``simulator stop``) beside the names."""
    table = _table(
        "PROVIDER ID",
        "NAME",
        "STATE",
        "ACCOUNT",
        "REALM",
        "ADDRESSES",
        "UUID",
        optional=("REALM", "UUID", "ADDRESSES"),
    )
    for item in instances:
        table.add_row(
            item.provider_id,
            Text(item.name),
            state_text(item.state),
            item.account,
            item.realm or "",
            ", ".join([*item.public_addresses, *item.private_addresses]),
            item.uuid or Text("not cloudstate's", style="dim"),
        )
    return table


def external_results_table(results: Iterable[ExternalResult]) -> Table:
    """Per instance: done (and the raw state now) or refused (and why)."""
    table = _table("PROVIDER ID", "NAME", "ACCOUNT", "RESULT", "STATE", "DETAIL")
    for item in results:
        outcome = Text("done", style="green") if item.ok else Text("refused", style="red")
        table.add_row(
            item.provider_id,
            Text(item.name),
            item.account,
            outcome,
            state_text(item.state) if item.state else "",
            Text(item.error),
        )
    return table
