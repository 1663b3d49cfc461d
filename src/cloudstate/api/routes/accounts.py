"""Provider accounts (admin). Credentials are write-only."""

from __future__ import annotations

from fastapi import APIRouter, Response

from cloudstate.api.deps import Admin, Context, Reader
from cloudstate.api.routes import responses
from cloudstate.api.schemas import AccountCreate, AccountOut, AccountUpdate, AccountVerified
from cloudstate.service import accounts

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.get("", responses=responses())
def list_accounts(ctx: Context, _: Reader) -> list[AccountOut]:
    return [AccountOut.of(view) for view in accounts.list_accounts(ctx.store)]


@router.post("", status_code=201, responses=responses(409, 413, 502, 503))
def create_account(body: AccountCreate, ctx: Context, _: Admin) -> AccountOut:
    """Add an account; the driver is built once to check its settings (and, with ``verify``,
    to check its credentials with the provider: refused, nothing is stored)."""
    ctx.pool.validate(body.provider, body.config, body.credentials, body.name, probe=body.verify)
    view = accounts.add_account(
        ctx.store,
        body.name,
        body.provider,
        config=body.config,
        credentials=body.credentials or None,
        credentials_expire_at=body.credentials_expire_at,
    )
    ctx.wake()
    return AccountOut.of(view)


@router.get("/{name}", responses=responses(404))
def get_account(name: str, ctx: Context, _: Reader) -> AccountOut:
    return AccountOut.of(accounts.get_account(ctx.store, name))


@router.patch("/{name}", responses=responses(404, 413))
def update_account(name: str, body: AccountUpdate, ctx: Context, _: Admin) -> AccountOut:
    if body.config is not None:
        current = accounts.get_account(ctx.store, name)
        ctx.pool.validate(current.provider, body.config, body.credentials or {}, name)
    view = accounts.update_account(
        ctx.store,
        name,
        config=body.config,
        credentials=body.credentials,
        credentials_expire_at=body.credentials_expire_at,
    )
    if body.credentials is not None:
        ctx.wake()
    return AccountOut.of(view)


@router.post("/{name}/verify", responses=responses(404, 502, 503))
def verify_account(name: str, ctx: Context, _: Admin) -> AccountVerified:
    """Check the stored credentials with one cheap provider call. Refused: a 502 problem, and
    the account's status becomes ``credentials``; accepted: that status is cleared."""
    ctx.pool.verify(name)
    ctx.wake()
    return AccountVerified(ok=True)


@router.delete("/{name}", status_code=204, responses=responses(404, 409))
def delete_account(name: str, ctx: Context, _: Admin) -> Response:
    """Remove an account that has no live instances (destroy them first)."""
    accounts.remove_account(ctx.store, name)
    return Response(status_code=204)
