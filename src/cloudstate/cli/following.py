"""``cloudstate watch`` and ``cloudstate events``: the change log, paged or followed live.

Following uses ``AsyncClient.stream``, which reconnects by itself with ``Last-Event-ID``; a
``--timeout`` ends it quietly, and so does Ctrl-C (exit 0: it is how a watch ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from contextlib import aclosing
from typing import Annotated, Any, Protocol
from uuid import UUID

import typer
from rich.live import Live

from cloudstate.cli.connect import (
    Account,
    Json,
    Labels,
    OrderId,
    Target,
    as_uuid,
    connect,
    exit_codes,
    pairs,
    target,
)
from cloudstate.cli.output import (
    err,
    event_line,
    events_table,
    instances_table,
    out,
    print_json,
    print_json_line,
)
from cloudstate.client import AsyncClient, Event, EventFilters, InstanceFilters

Types = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="Only these event types, e.g. instance.state_changed."),
]
Instances = Annotated[
    list[str] | None, typer.Option("--instance", "-i", help="Only these instances (repeatable).")
]
STOP_GRACE = 2.0  # seconds the stream gets to close cleanly after Ctrl-C or --timeout

Until = Annotated[
    float | None, typer.Option("--timeout", help="Stop after this many seconds (exit 0).")
]


def watch(
    ctx: typer.Context,
    table: Annotated[
        bool, typer.Option("--table", help="A live table of instance states instead of lines.")
    ] = False,
    after: Annotated[
        int | None, typer.Option(help="Replay from this seq (0: everything); default: now.")
    ] = None,
    types: Types = None,
    instance: Instances = None,
    order: OrderId = None,
    account: Account = None,
    label: Labels = None,
    timeout: Until = None,
    as_json: Json = False,
) -> None:
    """Follow changes live: a line per event (--json: JSON lines); Ctrl-C ends it (exit 0).

    A lost connection resumes where it left off, with no gap and no repeat.
    """
    filters = event_filters(types, instance, order, account, pairs(label, "--label"))
    sink: Sink = JsonLines() if as_json else Lines()
    if table and not as_json:
        filters.pop("types", None)
        sink = LiveTable(filters)
    follow(target(ctx), after, filters, timeout, sink)


def events(
    ctx: typer.Context,
    after: Annotated[int, typer.Option(help="Events after this seq (the cursor).")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    types: Types = None,
    instance: Instances = None,
    order: OrderId = None,
    account: Account = None,
    label: Labels = None,
    follow_on: Annotated[
        bool, typer.Option("--follow", "-f", help="Then keep following live (Ctrl-C stops).")
    ] = False,
    timeout: Until = None,
    as_json: Json = False,
) -> None:
    """The change log: a page of events after a cursor (JSON: {items, next_after})."""
    filters = event_filters(types, instance, order, account, pairs(label, "--label"))
    if follow_on:
        follow(target(ctx), after, filters, timeout, JsonLines() if as_json else Lines())
        return
    with connect(ctx) as client:
        page = client.events(after, limit, **filters)
        if not page.items:
            for chosen in instance or []:
                client.get(as_uuid(chosen, "--instance"))  # an unknown one is "not found"
    if as_json:
        print_json(page)
        return
    out.print(events_table(page.items))
    if len(page.items) == limit:
        err.print(f"more: --after {page.next_after}", style="dim")


def event_filters(
    types: list[str] | None,
    instances: list[str] | None,
    order: str | None,
    account: str | None,
    labels: dict[str, str],
) -> EventFilters:
    filters: EventFilters = {}
    if types:
        filters["types"] = types
    if instances:
        filters["instances"] = instances
    if order:
        filters["order"] = order
    if account:
        filters["account"] = account
    if labels:
        filters["labels"] = labels
    return filters


# --- following ------------------------------------------------------------------------------


class Sink(Protocol):
    async def begin(self, client: AsyncClient) -> None: ...

    def add(self, event: Event) -> None: ...

    def end(self) -> None: ...


def follow(
    chosen: Target, after: int | None, filters: EventFilters, timeout: float | None, sink: Sink
) -> None:
    """Run the stream until ``timeout`` or Ctrl-C (both exit 0), feeding ``sink``.

    Ctrl-C is the loop's own signal handler, not a task cancellation: it wakes the loop
    whichever thread the signal lands on, and stopping does not depend on the HTTP stack
    passing a cancellation through (one that swallowed it would leave ``watch`` hanging).
    """
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    try:
        with exit_codes():
            loop.add_signal_handler(signal.SIGINT, stop.set)
            loop.run_until_complete(_follow(chosen, after, filters, timeout, sink, stop))
    finally:
        sink.end()
        _close(loop)


async def _follow(
    chosen: Target,
    after: int | None,
    filters: EventFilters,
    timeout: float | None,
    sink: Sink,
    stop: asyncio.Event,
) -> None:
    client = AsyncClient(chosen.url, chosen.token)
    work = asyncio.ensure_future(_feed(client, after, filters, sink))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {work, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if work in done:
            work.result()  # the stream ended with an error: raise it (exit code)
    finally:
        for task in (work, stopped):
            task.cancel()
        await asyncio.wait({work, stopped}, timeout=STOP_GRACE)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), STOP_GRACE)


async def _feed(client: AsyncClient, after: int | None, filters: EventFilters, sink: Sink) -> None:
    start = await client.last_event_seq() if after is None else after
    await sink.begin(client)  # after taking the cursor: no change can slip between
    err.print(f"following events after #{start} on {client.url} (Ctrl-C stops)", style="dim")
    async with aclosing(client.stream(start, **filters)) as feed:
        async for event in feed:
            sink.add(event)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Give what is still running a moment to finish, then close the loop regardless."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=STOP_GRACE))
    loop.close()


class Lines:
    async def begin(self, client: AsyncClient) -> None:
        return None

    def add(self, event: Event) -> None:
        out.print(event_line(event), soft_wrap=True)

    def end(self) -> None:
        return None


class JsonLines(Lines):
    def add(self, event: Event) -> None:
        print_json_line(event)


class LiveTable:
    """The instances as they are, updated by each event's ``data["instance"]``.

    The listing comes after the stream's cursor was taken, so an event may be older than the
    listed row; the per-instance sequence (``event_seq``) decides which is newer.
    """

    def __init__(self, filters: EventFilters) -> None:
        self.listing: InstanceFilters = {}
        if "account" in filters:
            self.listing["account"] = filters["account"]
        if "order" in filters:
            self.listing["order"] = filters["order"]
        if "labels" in filters:
            self.listing["labels"] = filters["labels"]
        only = filters.get("instances") or []
        self.only = {str(item) for item in ([only] if isinstance(only, str | UUID) else only)}
        self.rows: dict[str, dict[str, Any]] = {}
        self.live: Live | None = None

    async def begin(self, client: AsyncClient) -> None:
        async for instance in client.iter_instances(**self.listing):
            self._put(instance.model_dump(mode="json"))
        self.live = Live(self._render(), console=out, auto_refresh=False)
        self.live.start()

    def add(self, event: Event) -> None:
        described = event.data.get("instance")
        if not isinstance(described, dict) or event.instance_seq is None:
            return
        known = self.rows.get(str(described.get("uuid")), {})
        if known.get("event_seq", 0) >= event.instance_seq:
            return
        self._put({**known, **described, "event_seq": event.instance_seq})
        if self.live is not None:
            self.live.update(self._render(), refresh=True)

    def _put(self, row: dict[str, Any]) -> None:
        if not self.only or str(row["uuid"]) in self.only:
            self.rows[str(row["uuid"])] = row

    def _render(self) -> Any:
        return instances_table(list(self.rows.values()))

    def end(self) -> None:
        if self.live is not None:
            self.live.stop()
            if not out.is_terminal:
                out.line()  # a terminal gets its newline from Live; a pipe does not
