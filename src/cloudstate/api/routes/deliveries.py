"""Operating deliveries: a subscription's delivery log, retrying one delivery, replaying a cursor.

Reading the log needs the read scope; sending anything again needs write. Retry and replay
answer 202: the deliverer does the sending, at once (in-process workers are woken).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query

from cloudstate.api.deps import Context, Reader, Writer
from cloudstate.api.routes import responses
from cloudstate.api.schemas import (
    MAX_SEQ,
    DeliveryOut,
    DeliveryPage,
    DeliveryState,
    ReplayOut,
    ReplayRequest,
)
from cloudstate.service import deliveries

router = APIRouter(tags=["deliveries"])


@router.get("/v1/subscriptions/{subscription_id}/deliveries", responses=responses(404))
def list_deliveries(
    subscription_id: UUID,
    ctx: Context,
    _: Reader,
    status: Annotated[
        list[DeliveryState], Query(description="only these statuses (repeat for several)")
    ] = [],  # noqa: B006 (FastAPI copies the default)
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="the last event seq you have")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryPage:
    """The delivery log: one row per event queued for the subscription, oldest event first,
    with its status, attempts and the receiver's last answer."""
    page = deliveries.list_deliveries(
        ctx.store, subscription_id, statuses=status, after=after, limit=limit
    )
    return DeliveryPage(
        items=[DeliveryOut.of(view) for view in page.items], next_after=page.next_after
    )


@router.post("/v1/deliveries/{delivery_id}/retry", status_code=202, responses=responses(404, 409))
def retry_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=MAX_SEQ)], ctx: Context, _: Writer
) -> DeliveryOut:
    """Send one delivery again now (dead, cancelled or pending), keeping its attempts. 409 when
    it was delivered (replay it instead), is in flight, or its subscription is disabled."""
    view = deliveries.retry_delivery(ctx.store, delivery_id)
    ctx.wake()
    return DeliveryOut.of(view)


@router.post(
    "/v1/subscriptions/{subscription_id}/replay",
    status_code=202,
    responses=responses(404, 409, 410, 413),
)
def replay(subscription_id: UUID, body: ReplayRequest, ctx: Context, _: Writer) -> ReplayOut:
    """Deliver again every retained event after ``after`` that matches the subscription's
    filters, in order, with a fresh retry schedule; missing deliveries are created. 410 when
    events after the cursor are no longer retained; 409 while the subscription is disabled."""
    result = deliveries.replay(ctx.store, subscription_id, body.after, limit=body.limit)
    ctx.wake()
    return ReplayOut.of(result)
