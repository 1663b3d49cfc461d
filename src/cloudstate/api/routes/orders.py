"""Launch orders."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from cloudstate.api.deps import Context, Reader, Writer
from cloudstate.api.routes import responses
from cloudstate.api.schemas import OrderCreate, OrderOut
from cloudstate.service import orders, queries

router = APIRouter(prefix="/v1/orders", tags=["orders"])


@router.post("", status_code=202, responses=responses(404, 409, 413, 503))
def create_order(body: OrderCreate, ctx: Context, _: Writer) -> OrderOut:
    """Accept a launch order; instances start ``new`` and are launched by the workers."""
    request = body.model_dump(mode="json", exclude_unset=True)
    timeout = ctx.settings.launch_timeout_seconds
    view = orders.accept_order(ctx.store, ctx.pool, request, launch_timeout=timeout)
    ctx.wake()
    return OrderOut.of(view)


@router.get("/{order_id}", responses=responses(404))
def get_order(order_id: UUID, ctx: Context, _: Reader) -> OrderOut:
    return OrderOut.of(queries.get_order(ctx.store, order_id))
