"""Request dependencies: the context, and bearer-token authentication with scopes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloudstate.api.context import ApiContext
from cloudstate.domain.auth import Scope
from cloudstate.service.tokens import TokenView, authenticate

_bearer = HTTPBearer(auto_error=False, description="an API token: cloudstate token create")


def context(request: Request) -> ApiContext:
    found: ApiContext = request.app.state.context
    return found


Context = Annotated[ApiContext, Depends(context)]


def require(scope: Scope) -> Callable[..., TokenView]:
    """A dependency that admits a live token holding ``scope`` (401 without one, 403 below)."""

    def check(
        ctx: Context,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> TokenView:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required")
        token = authenticate(ctx.store, credentials.credentials)
        if token is None:
            raise HTTPException(401, "the token is unknown or revoked")
        if not token.allows(scope):
            raise HTTPException(403, f"this token lacks the {scope} scope")
        return token

    return check


Reader = Annotated[TokenView, Depends(require(Scope.READ))]
Writer = Annotated[TokenView, Depends(require(Scope.WRITE))]
Admin = Annotated[TokenView, Depends(require(Scope.ADMIN))]
