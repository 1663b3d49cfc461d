"""Realm (availability zone) availability per account, as last observed."""

from __future__ import annotations

from fastapi import APIRouter

from cloudstate.api.deps import Context, Reader
from cloudstate.api.routes import responses
from cloudstate.api.schemas import RealmOut
from cloudstate.service import queries

router = APIRouter(prefix="/v1/realms", tags=["realms"])


@router.get("", responses=responses(404))
def list_realms(ctx: Context, _: Reader, account: str | None = None) -> list[RealmOut]:
    return [
        RealmOut(
            account=view.account,
            name=view.name,
            available=view.available,
            reason=view.reason,
            updated_at=view.updated_at,
        )
        for view in queries.list_realms(ctx.store, account)
    ]
