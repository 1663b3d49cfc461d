"""Instances: list with filters and cursor pagination, get, actions (single and bulk), destroy."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from cloudstate.api.deps import Context, Reader, Writer
from cloudstate.api.routes import CURSOR_PATTERN, decode_cursor, encode_cursor, responses
from cloudstate.api.schemas import (
    ActionRequest,
    ActionResponse,
    ActionResultOut,
    BulkActionRequest,
    BulkActionResponse,
    InstanceOut,
    InstancePage,
)
from cloudstate.domain.states import EFFECTS, Action, InstanceState
from cloudstate.exceptions import FieldError, ValidationError
from cloudstate.service import actions, queries

router = APIRouter(prefix="/v1/instances", tags=["instances"])


@router.get("", responses=responses())
def list_instances(
    ctx: Context,
    _: Reader,
    state: Annotated[list[InstanceState], Query()] = [],  # noqa: B006 (FastAPI copies it)
    account: str | None = None,
    order: UUID | None = None,
    label: Annotated[list[str], Query(description="key=value; repeat to AND")] = [],  # noqa: B006
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> InstancePage:
    views = queries.list_instances(
        ctx.store,
        states=[str(s) for s in state],
        account=account,
        order_id=order,
        labels=parse_labels(label),
        after=decode_cursor(cursor),
        limit=limit,
    )
    next_cursor = encode_cursor(views[-1].uuid) if len(views) == limit else None
    return InstancePage(items=[InstanceOut.of(v) for v in views], next_cursor=next_cursor)


@router.post("/actions", responses=responses(413))
def bulk_action(body: BulkActionRequest, ctx: Context, _: Writer) -> BulkActionResponse:
    """One action on many instances; each gets its own result (refusals do not block others)."""
    results = actions.request_actions(ctx.store, body.uuids, body.action, strict=False)
    ctx.wake()
    accepted = sum(1 for r in results if r.accepted)
    return BulkActionResponse(
        accepted=accepted,
        refused=len(results) - accepted,
        results=[ActionResultOut.of(r) for r in results],
    )


@router.get("/{instance_uuid}", responses=responses(404))
def get_instance(instance_uuid: UUID, ctx: Context, _: Reader) -> InstanceOut:
    return InstanceOut.of(queries.get_instance(ctx.store, instance_uuid))


@router.delete("/{instance_uuid}", status_code=202, responses=responses(404, 409))
def destroy_instance(instance_uuid: UUID, ctx: Context, _: Writer) -> ActionResponse:
    """Destroy (asynchronously): the instance goes ``shutting_down`` → ``terminated``."""
    return _act(ctx, instance_uuid, Action.DESTROY)


_REACHED: dict[int | str, dict[str, Any]] = {
    200: {"model": ActionResponse, "description": "with wait: the target state reached"}
}


@router.post(
    "/{instance_uuid}/actions",
    status_code=202,
    responses={**_REACHED, **responses(404, 409, 413, 504)},
)
async def instance_action(
    instance_uuid: UUID, body: ActionRequest, ctx: Context, _: Writer, response: Response
) -> ActionResponse:
    """Start, stop, reboot or destroy. With ``wait`` the answer comes once the target state is
    reached (200) or the timeout passes (504); without, at once (202). A wait is served on the
    event loop: it holds no request thread, however long it lasts."""
    answer = await run_in_threadpool(_act, ctx, instance_uuid, body.action)
    if body.wait:
        target = EFFECTS[body.action].target
        [view] = await queries.wait_for_state_async(
            ctx.store, [instance_uuid], target, timeout=body.timeout
        )
        response.status_code = 200
        return ActionResponse(result=answer.result, instance=InstanceOut.of(view))
    return answer


def _act(ctx: Context, instance_uuid: UUID, action: Action) -> ActionResponse:
    [result] = actions.request_actions(ctx.store, [instance_uuid], action)
    ctx.wake()
    view = queries.get_instance(ctx.store, instance_uuid)
    return ActionResponse(result=ActionResultOut.of(result), instance=InstanceOut.of(view))


def parse_labels(values: list[str]) -> dict[str, str]:
    """``["role=web", "env=prod"]`` → a dict; a value without '=' is a 422 naming it."""
    bad = [value for value in values if "=" not in value]
    if bad:
        raise ValidationError([FieldError("label", f"{v!r} is not key=value") for v in bad])
    return dict(value.split("=", 1) for value in values)
