"""The change log: appending events, numbering them in commit order, reading after a cursor.

Writers never wait on each other for it. Every event row gets ``number`` at insert (an
identity: unique, but handed out before commit, so two writers may commit out of its order)
and, once committed, ``seq``: the public cursor, gap-free and in commit order. Readers
(``after``) see only numbered events, so a reader at cursor N can never pass an event that
commits later: that event gets a number above every one already given.

Numbering is *sequence assignment after commit*, the technique of event stores that must not
serialize their writers: a single sequencer at a time (whoever holds the one-row
``event_counter``; another finds it locked and leaves, ``SKIP LOCKED``) gives the committed,
unnumbered events the next numbers, in ``number`` order. Only the sequencer touches the
counter, so no writer ever waits on it. Events of one instance keep their commit order:
their writers hold the instance row (its event counter) while inserting, so a later event of
an instance always has a larger ``number``, and the sequencer numbers in that order.

SQLite has one writer at a time anyway: an event is numbered in the transaction that writes it
(``seq = number``, the rowid, which a rolled-back transaction gives back), with no sequencer.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from cloudstate.store.claims import claim_one
from cloudstate.store.tables import Event, EventCounter

SEQUENCER_BATCH = 5000
WORK_CHANNEL = "cloudstate_work"  # NOTIFY'd with every commit that records events

_NUMBER = text(
    "UPDATE events SET seq = :last + numbered.position"
    " FROM (SELECT number, row_number() OVER (ORDER BY number) AS position"
    "       FROM events WHERE seq IS NULL ORDER BY number LIMIT :limit) AS numbered"
    " WHERE events.number = numbered.number"
)

_COUNTER_AGAIN = text(
    "INSERT INTO event_counter (id, last_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events"
    " ON CONFLICT (id) DO NOTHING"
)


class ChangeLog:
    """The event log inside one transaction (``session``); never commits."""

    def __init__(self, session: Session, *, sqlite: bool) -> None:
        self.session = session
        self.sqlite = sqlite

    def append(self, rows: Sequence[Event]) -> None:
        """Insert ``rows`` (their ``number`` is set on return). SQLite numbers them at once."""
        if self.sqlite:  # this transaction holds the only write lock: number in order now
            first = (self.session.scalar(select(func.max(Event.number))) or 0) + 1
            for offset, row in enumerate(rows):
                row.number = row.seq = first + offset
        self.session.add_all(rows)
        self.session.flush()
        if not self.sqlite:  # idle workers elsewhere wake at commit (LISTEN), the sequencer too
            self.session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WORK_CHANNEL})

    def number_committed(self, limit: int = SEQUENCER_BATCH) -> int:
        """Give up to ``limit`` committed, unnumbered events their ``seq`` (PostgreSQL; the
        caller commits). 0 when none wait, or when another sequencer is at work."""
        if self.sqlite or not self.waiting():
            return 0
        counter = self._counter()
        if counter is None:
            return 0  # another sequencer holds the counter; it numbers these
        result = self.session.execute(_NUMBER, {"last": counter.last_seq, "limit": limit})
        numbered = int(getattr(result, "rowcount", 0) or 0)
        if numbered:
            self.session.execute(
                update(EventCounter)
                .where(EventCounter.id == 1)
                .values(last_seq=EventCounter.last_seq + numbered)
                .execution_options(synchronize_session=False)
            )
        return numbered

    def _counter(self) -> EventCounter | None:
        """The counter row, claimed; None while another sequencer holds it. A missing row
        (the migration makes it; an operator emptied the table) is made again from the highest
        cursor given; two sequencers doing that at once take turns."""
        claim = select(EventCounter).where(EventCounter.id == 1)
        counter: EventCounter | None = claim_one(self.session, claim)
        if counter is None and self.session.scalar(select(EventCounter.id)) is None:
            self.session.execute(_COUNTER_AGAIN)  # missing, not merely held by another
            counter = claim_one(self.session, claim)
        return counter

    def waiting(self) -> bool:
        """Are committed events waiting for their ``seq``? (One probe of a partial index.)"""
        if self.sqlite:
            return False
        probe = select(Event.number).where(Event.seq.is_(None)).limit(1)
        return self.session.scalar(probe) is not None

    def last_seq(self) -> int:
        return self.session.scalar(select(func.max(Event.seq))) or 0

    def first_seq(self) -> int:
        return self.session.scalar(select(func.min(Event.seq))) or 0
