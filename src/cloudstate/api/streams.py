"""Live event streams of one API process: one reader, fanned out to every open stream.

The reader reads the change log through the service (``queries.events_after``, the same call
a page of ``GET /v1/events`` makes) once per ``POLL_SECONDS`` while any stream is open, keeps
the newest ``BUFFER`` events in memory, and wakes the streams. A stream then takes what it has
not sent from that buffer and filters it in memory: idle streams cost nothing, and a thousand
streams cost the database what one does. A stream whose cursor is older than the buffer, or
that filters by label (labels are an instance's current ones, known to the database), reads its
own page from the database, once per change the reader saw, never on a timer.

Admission: at most ``stream_max_per_token`` streams per token and ``stream_max_total`` per
process; beyond, 429 with ``Retry-After``. Revocation: every ``REVALIDATE_SECONDS`` the reader
asks, in one query, which tokens of open streams are revoked, and ends their streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from anyio import to_thread
from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from cloudstate.domain.events import EventRecord
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.domain.validation import parse
from cloudstate.service import queries, tokens
from cloudstate.store import Store
from cloudstate.webhooks.envelope import cloud_event

log = logging.getLogger("cloudstate.api.streams")

PAGE = 500
BUFFER = 10_000
POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0
REVALIDATE_SECONDS = 5.0
DISCONNECT_CHECK_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5


@dataclass(eq=False)
class Subscriber:
    """One open stream: whose token it is, and whether the hub has ended it."""

    token_id: UUID
    closed: bool = False
    reason: str = ""


@dataclass
class StreamHub:
    """The process's one event reader and the streams it feeds (see the module docstring)."""

    store: Store
    max_per_token: int
    max_total: int
    poll_seconds: float = POLL_SECONDS
    revalidate_seconds: float = REVALIDATE_SECONDS
    head: int = -1  # the newest seq read; -1: not started
    floor: int = 0  # the buffer holds every event in (floor, head]
    buffer: deque[EventRecord] = field(default_factory=lambda: deque(maxlen=BUFFER))
    subscribers: set[Subscriber] = field(default_factory=set)
    per_token: Counter[UUID] = field(default_factory=Counter)
    _changed: asyncio.Condition | None = None
    _reader: asyncio.Task[None] | None = None

    # admission ----------------------------------------------------------------------------

    def admit(self, token_id: UUID) -> Subscriber:
        """A place for one more stream of ``token_id``, or 429 with ``Retry-After``."""
        if len(self.subscribers) >= self.max_total:
            raise _busy(f"this server has {self.max_total} open event streams, its limit")
        if self.per_token[token_id] >= self.max_per_token:
            raise _busy(f"this token has {self.max_per_token} open event streams, its limit")
        subscriber = Subscriber(token_id)
        self.subscribers.add(subscriber)
        self.per_token[token_id] += 1
        return subscriber

    def release(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            self.per_token[subscriber.token_id] -= 1
            if self.per_token[subscriber.token_id] <= 0:
                del self.per_token[subscriber.token_id]

    # the reader ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the reader if it is not running (the first stream of a quiet spell does)."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        if self._reader is None or self._reader.done():
            if self.head < 0:
                self.head = self.floor = await to_thread.run_sync(queries.last_seq, self.store)
            self._reader = asyncio.create_task(self._read(), name="event-stream-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        checked = time.monotonic()
        while self.subscribers:
            try:
                records = await to_thread.run_sync(self._page)
                if time.monotonic() - checked >= self.revalidate_seconds:
                    checked = time.monotonic()
                    await self._revalidate()
            except Exception:  # the database is away: streams wait, the reader goes on
                log.warning("event stream reader: reading failed; retrying", exc_info=True)
                records = []
            if records:
                self._take(records)
                await self._notify()
            if len(records) < PAGE:
                await asyncio.sleep(self.poll_seconds)
        self._reader = None

    def _page(self) -> list[EventRecord]:
        return queries.events_after(self.store, self.head, limit=PAGE)

    def _take(self, records: list[EventRecord]) -> None:
        for record in records:
            if len(self.buffer) == self.buffer.maxlen:
                self.floor = self.buffer.popleft().seq
            self.buffer.append(record)
        self.head = records[-1].seq

    async def _revalidate(self) -> None:
        ids = {s.token_id for s in self.subscribers}
        revoked = await to_thread.run_sync(tokens.revoked_among, self.store, ids) if ids else set()
        ended = [s for s in self.subscribers if s.token_id in revoked]
        for subscriber in ended:
            subscriber.closed, subscriber.reason = True, "the token was revoked"
        if ended:
            await self._notify()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, subscriber: Subscriber, scanned: int, timeout: float) -> bool:
        """Until the reader has read past ``scanned`` or ended this stream; False on timeout."""
        assert self._changed is not None
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.head > scanned or subscriber.closed),
                    timeout,
                )
        return self.head > scanned or subscriber.closed

    # one stream ---------------------------------------------------------------------------

    async def events(
        self,
        subscriber: Subscriber,
        cursor: int,
        filters: Mapping[str, Any],
        gone: Callable[[], Awaitable[bool]],
    ) -> AsyncIterator[str]:
        """The SSE text of one stream: every event after ``cursor`` that passes ``filters``,
        as it is read, with keep-alive comments while quiet; ends when the hub ends it or the
        client has gone (``gone``, asked at least every ``DISCONNECT_CHECK_SECONDS``)."""
        await self.start()
        where = parse(SubscriptionFilter, dict(filters)) if filters else None
        by_label = where is not None and bool(where.labels)
        scanned = cursor
        quiet = 0.0
        yield "retry: 2000\n\n"
        while not subscriber.closed and not await gone():
            if scanned < self.head:
                if not by_label and scanned >= self.floor:
                    records, scanned = self._from_buffer(scanned, where)
                else:
                    records, scanned = await self._from_database(scanned, filters)
                for record in records:
                    yield _frame(record)
                quiet = 0.0
                continue
            if not await self.wait(subscriber, scanned, DISCONNECT_CHECK_SECONDS):
                quiet += DISCONNECT_CHECK_SECONDS
                if quiet >= HEARTBEAT_SECONDS:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

    def _from_buffer(
        self, scanned: int, where: SubscriptionFilter | None
    ) -> tuple[list[EventRecord], int]:
        head = self.head
        found = [r for r in self.buffer if scanned < r.seq <= head and _passes(r, where)]
        return found, head

    async def _from_database(
        self, scanned: int, filters: Mapping[str, Any]
    ) -> tuple[list[EventRecord], int]:
        head = self.head  # read before the query: everything up to it is in what it sees
        records = await to_thread.run_sync(
            lambda: queries.events_after(self.store, scanned, limit=PAGE, where=filters or None)
        )
        if len(records) == PAGE:
            return records, records[-1].seq
        return records, max(head, records[-1].seq if records else scanned)


def _passes(record: EventRecord, where: SubscriptionFilter | None) -> bool:
    return where is None or where.matches(
        record.type,
        instance_uuid=record.instance_uuid,
        order_id=record.order_id,
        account=record.account,
    )


def _frame(record: EventRecord) -> str:
    data = json.dumps(cloud_event(record, source="/cloudstate"), separators=(",", ":"))
    return f"id: {record.seq}\nevent: {record.type}\ndata: {data}\n\n"


def _busy(detail: str) -> HTTPException:
    return HTTPException(
        429, f"{detail}; try again later", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


class HubStream(StreamingResponse):
    """A streaming response that gives its place back to the hub however it ends (even when
    the client went away before the first byte)."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
