"""The CLI's tables never split an id, a UUID, an address or an event type (issue 19, defect 4).

Each table is rendered at 80, 100 and 120 columns with realistic rows (long names, error text,
both addresses, every event type); every such word must come out whole on one line, and the
table must fit the width whenever the words allow it.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from cloudstate.cli.output import (
    deliveries_table,
    event_line,
    events_table,
    instances_table,
    simulated_instances_table,
)
from cloudstate.client import Delivery, Event, SimulatedInstance
from cloudstate.domain.events import EventType

WIDTHS = (80, 100, 120)
NOW = datetime(2026, 11, 24, 22, 2, 3, tzinfo=UTC)
ERROR = (
    "InsufficientInstanceCapacity: there is not enough capacity in realm sim-a for the "
    "requested hardware profile; try another realm or a smaller profile later"
)


def render(table: Any, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    console.print(table, crop=False)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in output.splitlines()]


def assert_whole(lines: list[str], words: list[str]) -> None:
    for word in words:
        assert any(word in line for line in lines), f"{word!r} was split:\n" + "\n".join(lines)


def instance_rows(count: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "uuid": str(uuid.uuid4()),
            "name": f"web-frontend-{n}",
            "state": "error" if n == 0 else "running",
            "state_reason": "",
            "account": "simulator",
            "public_addresses": [f"203.0.113.{n + 6}"],
            "private_addresses": [f"10.0.0.{n + 6}"],
            "operation": None,
            "last_error": ERROR if n == 0 else "",
        }
        for n in range(count)
    ]


def event(kind: str, seq: int, subject: str, data: dict[str, Any]) -> Event:
    return Event.model_validate(
        {
            "seq": seq,
            "id": str(uuid.uuid4()),
            "type": kind,
            "subject": subject,
            "time": NOW.isoformat(),
            "instance_uuid": subject if kind.startswith("instance.") else None,
            "instance_seq": seq if kind.startswith("instance.") else None,
            "order_id": None,
            "account": "simulator",
            "data": data,
        }
    )


def every_event() -> list[Event]:
    instance = {"name": "web-1", "state": "running", "public_addresses": ["203.0.113.6"]}
    found = []
    for seq, kind in enumerate(EventType, start=1):
        data: dict[str, Any] = {"instance": instance, "error": ERROR, "previous_state": "new"}
        found.append(event(str(kind), seq, str(uuid.uuid4()), data))
    return found


@pytest.mark.parametrize("width", WIDTHS)
def test_ls_keeps_uuids_addresses_and_names_whole_and_wraps_errors_between_words(
    width: int,
) -> None:
    """``ls`` with a long error: UUIDs, names and addresses whole (or, where they cannot
    be, addresses left out with a note saying so); the error wraps between words, never one
    letter per line; the table fits 100 and 120 columns."""
    rows = instance_rows()
    lines = render(instances_table(rows), width)
    words = [str(row["uuid"]) for row in rows] + [str(row["name"]) for row in rows]
    if "ADDRESSES" in lines[0]:
        words += [address for row in rows for address in row["public_addresses"]]
    else:
        assert "ADDRESSES" in lines[-1]
        assert "not shown at this width" in lines[-1]
    assert (width == 120) == ("ADDRESSES" in lines[0])
    assert_whole(lines, words)
    assert_whole(lines, ERROR.split())
    if width >= 100:  # at 80, a UUID, a name and a 29-letter word cannot share a line
        assert all(len(line) <= width for line in lines)


@pytest.mark.parametrize("width", WIDTHS)
def test_events_keep_every_event_type_and_uuid_whole(width: int) -> None:
    """``events``: every event type and every subject UUID stays on one line."""
    events = every_event()
    lines = render(events_table(events), width)
    assert_whole(lines, [str(kind) for kind in EventType])


@pytest.mark.parametrize("width", WIDTHS)
def test_deliveries_keep_uuids_and_event_types_whole_and_fit(width: int) -> None:
    """``subscription deliveries``: subject UUIDs and event types whole, within the width."""
    deliveries = [
        Delivery.model_validate(
            {
                "id": n,
                "subscription_id": str(uuid.uuid4()),
                "event_seq": 1000 + n,
                "event_id": str(uuid.uuid4()),
                "event_type": "instance.addresses_changed",
                "subject": str(uuid.uuid4()),
                "instance_seq": n,
                "event_time": NOW.isoformat(),
                "status": "delivered" if n else "dead",
                "attempts": n + 1,
                "last_status_code": 200 if n else None,
                "last_error": "" if n else "connection refused by the receiver",
                "next_attempt_at": None,
                "last_attempt_at": NOW.isoformat(),
                "delivered_at": NOW.isoformat() if n else None,
            }
        )
        for n in range(3)
    ]
    lines = render(deliveries_table(deliveries), width)
    assert_whole(lines, [d.subject for d in deliveries] + ["instance.addresses_changed"])
    assert all(len(line) <= width for line in lines)


@pytest.mark.parametrize("width", WIDTHS)
def test_simulator_ls_keeps_provider_ids_whole_and_says_what_it_left_out(width: int) -> None:
    """``simulator ls``: provider ids and names whole; at a width too narrow for every
    column, the ones left out are named in a note (``--json`` has them)."""
    held = [
        SimulatedInstance(
            account="simulator",
            provider_id=f"i-{uuid.uuid4().hex[:17]}",
            name=f"web-{n}",
            state="running",
            uuid=str(uuid.uuid4()),
            realm="sim-a",
            public_addresses=[f"203.0.113.{n}"],
            private_addresses=[f"10.0.0.{n}"],
            labels={},
        )
        for n in range(3)
    ]
    lines = render(simulated_instances_table(held), width)
    assert_whole(lines, [item.provider_id for item in held] + ["web-0", "web-1", "web-2"])
    assert all(len(line) <= width for line in lines)
    if width == 120:
        assert_whole(lines, [str(item.uuid) for item in held])
    else:
        assert "not shown at this width" in lines[-1]


def test_a_table_that_cannot_fit_is_drawn_wider_with_every_word_whole() -> None:
    """At 40 columns not even a UUID and a name fit: the lines run longer than the screen
    (the terminal folds them) and no UUID is split or cut."""
    rows = instance_rows(2)
    lines = render(instances_table(rows), 40)
    assert_whole(lines, [str(row["uuid"]) for row in rows])
    assert max(len(line) for line in lines) > 40


def test_watch_lines_keep_their_columns_aligned_whatever_the_subject() -> None:
    """In ``watch``, a long subject (an order's UUID) comes after the fixed-width fields, so
    the event type starts in the same column on every line."""
    order = event("order.state_changed", 1, str(uuid.uuid4()), {"state": "launching"})
    named = event("instance.created", 2, str(uuid.uuid4()), {"instance": {"name": "web-1"}})
    lines = [event_line(e).plain for e in (order, named)]
    assert lines[0].index("order.") == lines[1].index("instance.")
    assert lines[0].index(order.subject) > lines[0].index("order.state_changed")
