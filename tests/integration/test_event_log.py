"""The change log on PostgreSQL: writers never wait on each other, readers never skip.

Events get their cursor (``seq``) after commit, from a sequencer (``store.eventlog``): a
transaction that writes events takes no lock that another such transaction needs, and a reader
at cursor N never passes an event still in flight, because that event's number comes later.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from cloudstate.domain.events import EventDraft, EventType
from cloudstate.engine.sequencer import number_events
from cloudstate.service.queries import events_after
from cloudstate.store import Store

pytestmark = pytest.mark.postgres

# The other process: writes one event, holds its transaction open until told, then commits.
_HOLDER = textwrap.dedent(
    """
    import sys
    from cloudstate.config import load_settings
    from cloudstate.domain.events import EventDraft, EventType
    from cloudstate.store import Store

    store = Store.from_settings(load_settings(database_url=sys.argv[1]))
    with store.unit_of_work() as uow:
        uow.record(EventDraft(EventType.REALM_AVAILABILITY_CHANGED, {"realm": "held"}))
        uow.write()
        print("written", flush=True)
        sys.stdin.readline()
        uow.commit()
    print("committed", flush=True)
    store.close()
    """
)


@pytest.fixture
def holder(postgres_store: Store) -> Iterator[subprocess.Popen[str]]:
    url = postgres_store.database.url
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with process:
        try:
            yield process
        finally:
            process.kill()


def _write(store: Store, realm: str) -> None:
    with store.unit_of_work() as uow:
        uow.record(EventDraft(EventType.REALM_AVAILABILITY_CHANGED, {"realm": realm}))
        uow.commit()


def test_an_open_writer_neither_blocks_another_nor_is_passed_by_a_reader(
    postgres_store: Store, holder: subprocess.Popen[str]
) -> None:
    """Process B holds a transaction with one event written; this process commits another:
    the commit does not wait, a reader sees it and stops there (B's event has no cursor yet);
    once B commits, its event comes next: every event read once, in seq order, no gap."""
    store = postgres_store
    _write(store, "before")
    number_events(store)
    [first] = events_after(store, 0)
    assert holder.stdout is not None
    assert holder.stdin is not None
    assert holder.stdout.readline().strip() == "written"

    started = time.monotonic()
    _write(store, "while-held")
    waited = time.monotonic() - started
    seen = events_after(store, first.seq)  # numbers what has committed, then reads

    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "committed"
    later = events_after(store, seen[-1].seq)
    every = events_after(store, 0)

    assert waited < 0.5, f"a writer waited {waited:.3f} s on another's open transaction"
    assert [e.data["realm"] for e in seen] == ["while-held"]
    assert [e.data["realm"] for e in later] == ["held"]
    assert [e.seq for e in every] == [first.seq, first.seq + 1, first.seq + 2]
    assert [e.data["realm"] for e in every] == ["before", "while-held", "held"]


def test_two_sequencers_at_once_number_each_event_once(postgres_store: Store) -> None:
    """Whoever holds the counter numbers; a second sequencer finds it taken and leaves:
    every event ends with one cursor, the cursors 1..n without a gap."""
    store = postgres_store
    for n in range(50):
        _write(store, f"r{n}")
    with store.unit_of_work() as first, store.unit_of_work() as second:
        numbered = first.changelog.number_committed()
        assert second.changelog.number_committed() == 0  # the counter is held: it leaves
        first.commit()
    assert numbered == 50
    assert [e.seq for e in events_after(store, 0, limit=100)] == list(range(1, 51))
