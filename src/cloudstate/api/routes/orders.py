"""Launch orders: accept, list, read, cancel."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from cloudstate.api.deps import Context, Reader, Writer
from cloudstate.api.routes import CURSOR_PATTERN, decode_cursor, encode_cursor, responses
from cloudstate.api.schemas import OrderCreate, OrderOut, OrderPage
from cloudstate.domain.orders import OrderState
from cloudstate.service import order_control, orders, queries

router = APIRouter(prefix="/v1/orders", tags=["orders"])


@router.post("", status_code=202, responses=responses(404, 409, 413, 503))
def create_order(body: OrderCreate, ctx: Context, _: Writer) -> OrderOut:
    """Accept a launch order; instances start ``new`` and are launched by the workers."""
    request = body.model_dump(mode="json", exclude_unset=True)
    timeout = ctx.settings.launch_timeout_seconds
    view = orders.accept_order(ctx.store, ctx.pool, request, launch_timeout=timeout)
    ctx.wake()
    return OrderOut.of(view)


@router.get("", responses=responses())
def list_orders(
    ctx: Context,
    _: Reader,
    state: Annotated[
        list[OrderState], Query(description="only these states (repeat for several)")
    ] = [],  # noqa: B006 (FastAPI copies it)
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> OrderPage:
    """Orders newest first, each with its instances; ``next_cursor`` continues the listing."""
    views = queries.list_orders(
        ctx.store, states=[str(s) for s in state], after=decode_cursor(cursor), limit=limit
    )
    next_cursor = encode_cursor(views[-1].id) if len(views) == limit else None
    return OrderPage(items=[OrderOut.of(v) for v in views], next_cursor=next_cursor)


@router.get("/{order_id}", responses=responses(404))
def get_order(order_id: UUID, ctx: Context, _: Reader) -> OrderOut:
    return OrderOut.of(queries.get_order(ctx.store, order_id))


@router.post("/{order_id}/cancel", status_code=202, responses=responses(404, 409))
def cancel_order(order_id: UUID, ctx: Context, _: Writer) -> OrderOut:
    """Stop an order that is still launching: what was launched is destroyed, what was not
    never will be. The order is ``rolling_back`` until all of it is gone, then ``cancelled``;
    one already rolling back is answered as it is. 409 once it has finished."""
    view = order_control.cancel_order(ctx.store, order_id)
    ctx.wake()
    return OrderOut.of(view)
