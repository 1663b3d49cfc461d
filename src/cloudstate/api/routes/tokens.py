"""API tokens (admin). The plaintext is in the creating response only."""

from __future__ import annotations

from fastapi import APIRouter

from cloudstate.api.deps import Admin, Context
from cloudstate.api.routes import responses
from cloudstate.api.schemas import TokenCreate, TokenOut
from cloudstate.service import tokens

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.get("", responses=responses())
def list_tokens(ctx: Context, _: Admin) -> list[TokenOut]:
    return [TokenOut.of(view) for view in tokens.list_tokens(ctx.store)]


@router.post("", status_code=201, responses=responses(409, 413))
def create_token(body: TokenCreate, ctx: Context, _: Admin) -> TokenOut:
    view, plaintext = tokens.create_token(ctx.store, body.name, [str(s) for s in body.scopes])
    return TokenOut.of(view, plaintext)


@router.delete("/{name}", responses=responses(404, 409))
def revoke_token(name: str, ctx: Context, _: Admin) -> TokenOut:
    """Revoke by name or id; requests with it are refused from now on. The last live admin
    token cannot be revoked (409): create another first."""
    return TokenOut.of(tokens.revoke_token(ctx.store, name))
