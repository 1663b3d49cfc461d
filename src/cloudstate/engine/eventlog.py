"""Logs every committed event in one readable line (what ``cloudstate serve`` prints).

It tails the change log after a cursor, so it costs one indexed query per tick and writes
nothing: the log is a reader of the outbox, not a subscriber with deliveries to keep.
"""

from __future__ import annotations

import logging

from cloudstate.domain.events import EventRecord
from cloudstate.engine.loop import TickResult
from cloudstate.service.queries import events_after
from cloudstate.store import Store

log = logging.getLogger("cloudstate.events")

PAGE = 500


def describe(event: EventRecord) -> str:
    """``instance 1b4e… web-1 [simulator] pending → running`` and friends."""
    data = event.data
    instance = data.get("instance") or {}
    if instance:
        who = f"instance {instance.get('uuid')} {instance.get('name')} [{instance.get('account')}]"
        if event.type == "instance.state_changed":
            reason = f" ({data['reason']})" if data.get("reason") else ""
            return f"{who} {data.get('previous_state')} → {instance.get('state')}{reason}"
        if event.type == "instance.addresses_changed":
            return f"{who} addresses public={instance.get('public_addresses')}"
        if event.type == "instance.launch_failed":
            return f"{who} launch failed: {data.get('reason')}"
        details = data.get("error") or data.get("action") or ""
        return f"{who} {event.type.removeprefix('instance.')} {details}".rstrip()
    return f"{event.type} {event.subject} {_plain(data)}"


def _plain(data: dict[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in data.items())


class EventLog:
    name = "eventlog"

    def __init__(self, store: Store, *, after: int) -> None:
        self.store = store
        self.cursor = after

    def interval(self) -> float:
        return 0.25

    def tick(self) -> TickResult:
        events = events_after(self.store, self.cursor, limit=PAGE)
        for event in events:
            log.info("#%d %s", event.seq, describe(event))
            self.cursor = event.seq
        return TickResult(worked=bool(events), more=len(events) == PAGE)
