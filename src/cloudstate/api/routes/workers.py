"""The worker registry: every worker process, its last heartbeat and what it holds."""

from __future__ import annotations

from fastapi import APIRouter

from cloudstate.api.deps import Context, Reader
from cloudstate.api.routes import responses
from cloudstate.api.schemas import WorkerOut
from cloudstate.service import workers

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", responses=responses())
def list_workers(ctx: Context, _: Reader, include_stopped: bool = False) -> list[WorkerOut]:
    """Running workers (with ``include_stopped``, also those that shut down in the last day).
    ``alive`` is false when a worker missed three heartbeats: it is presumed dead, and what
    it held is taken over as its leases expire."""
    return [
        WorkerOut.of(view)
        for view in workers.list_workers(ctx.store, include_stopped=include_stopped)
    ]
