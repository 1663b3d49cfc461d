"""The change log: a page after a cursor, and a live Server-Sent Events stream.

Both take the subscription filters. The stream's ``id:`` is the global sequence, so a client
reconnecting with ``Last-Event-ID`` resumes with no gap and no duplicate. A cursor older than
the retained events gets 410 Gone: the client re-lists current state and starts over.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cloudstate.api.deps import Context, Reader
from cloudstate.api.routes import responses
from cloudstate.api.routes.instances import parse_labels
from cloudstate.api.schemas import MAX_SEQ, EventOut, EventPage
from cloudstate.api.streams import HubStream, StreamHub
from cloudstate.domain.events import EventType
from cloudstate.domain.subscriptions import SubscriptionFilter
from cloudstate.domain.validation import parse
from cloudstate.exceptions import FieldError, ValidationError
from cloudstate.service import queries

router = APIRouter(prefix="/v1/events", tags=["events"])


def _filters(
    type: Annotated[list[EventType], Query()] = [],  # noqa: B006 (the API's name)
    instance: Annotated[list[UUID], Query()] = [],  # noqa: B006
    order: UUID | None = None,
    account: str | None = None,
    label: Annotated[list[str], Query(description="key=value; repeat to AND")] = [],  # noqa: B006
) -> dict[str, Any]:
    chosen: dict[str, Any] = {
        "types": [str(t) for t in type],
        "instances": [str(i) for i in instance],
        "order": str(order) if order else None,
        "account": account,
        "labels": parse_labels(label),
    }
    where = {key: value for key, value in chosen.items() if value}
    _check_filter(where)
    return where


def _check_filter(where: dict[str, Any]) -> None:
    """A 422 naming the query parameter now, not once the query runs: by then a stream has
    answered 200, and an error could only cut it off."""
    try:
        parse(SubscriptionFilter, where)
    except ValidationError as exc:
        renamed = {"labels": "label"}  # the filter's field → the query parameter that set it
        raise ValidationError(
            FieldError(renamed.get(error.field, error.field), error.message) for error in exc.errors
        ) from None


Filters = Annotated[dict[str, Any], Depends(_filters)]


@router.get("", responses=responses(410))
def list_events(
    ctx: Context,
    _: Reader,
    filters: Filters,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="the last seq you have")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    records = queries.events_after(ctx.store, after, limit=limit, where=filters or None)
    next_after = records[-1].seq if records else after
    last = queries.last_seq(ctx.store)
    return EventPage(items=[EventOut.of(r) for r in records], next_after=next_after, last_seq=last)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "CloudEvents, one per event"},
        **responses(410, 429),
    },
)
async def stream_events(
    request: Request,
    ctx: Context,
    token: Reader,
    filters: Filters,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every event after the cursor, then live ones as they commit (``id:`` = seq). Streams
    per token and per server are limited (429 with ``Retry-After``); a stream ends within
    ``REVALIDATE_SECONDS`` of its token's revocation."""
    cursor = _resume_point(after, last_event_id)
    await run_in_threadpool(queries.events_after, ctx.store, cursor, limit=1)  # 410 now
    hub: StreamHub = request.app.state.streams
    place = hub.admit(token.id)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return HubStream(
        hub.events(place, cursor, filters, request.is_disconnected),
        lambda: hub.release(place),
        media_type="text/event-stream",
        headers=headers,
    )


def _resume_point(after: int | None, last_event_id: str | None) -> int:
    if last_event_id:
        value = last_event_id.strip()
        if not (value.isascii() and value.isdigit() and int(value) <= MAX_SEQ):
            raise ValidationError("must be an event sequence number", field="Last-Event-ID")
        return int(value)
    return after or 0
