"""The sequencer: gives committed events their place in the change log (PostgreSQL).

Writers insert events without a cursor and never wait on each other; this task numbers what
has committed, in one short transaction, so readers see a gap-free cursor in commit order
(``store.eventlog``). Every worker runs one; at most one numbers at a time, the others find
the counter taken and return at once. SQLite numbers events as they are written: the task
then has nothing to do.
"""

from __future__ import annotations

from cloudstate.engine.loop import TickResult
from cloudstate.store import Store
from cloudstate.store.eventlog import SEQUENCER_BATCH


class Sequencer:
    name = "sequencer"

    def __init__(self, store: Store) -> None:
        self.store = store

    def interval(self) -> float:
        return 0.05  # each commit with events also wakes it at once (NOTIFY)

    def tick(self) -> TickResult:
        if self.store.database.is_sqlite:
            return TickResult()
        numbered = number_events(self.store)
        return TickResult(worked=bool(numbered), more=numbered == SEQUENCER_BATCH)


def number_events(store: Store) -> int:
    """Number the committed events that wait for a cursor; how many were numbered."""
    with store.unit_of_work() as uow:
        numbered = uow.changelog.number_committed()
        if numbered:
            uow.commit()
    return numbered
