"""Request dependencies: the context, and bearer-token authentication with scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from cloudstate.api.context import ApiContext
from cloudstate.domain.auth import Scope
from cloudstate.domain.validation import unstorable
from cloudstate.exceptions import ValidationError
from cloudstate.service.tokens import TokenView, authenticate

_bearer = HTTPBearer(auto_error=False, description="an API token: cloudstate token create")


def context(request: Request) -> ApiContext:
    found: ApiContext = request.app.state.context
    return found


Context = Annotated[ApiContext, Depends(context)]

_NEEDED: dict[Callable[..., Awaitable[TokenView]], Scope] = {}
"""Each ``require(scope)`` dependency and its scope, so ``refusal`` can find a route's."""


def require(scope: Scope) -> Callable[..., Awaitable[TokenView]]:
    """A dependency that admits a live token holding ``scope`` (401 without one, 403 below),
    then refuses input that no database can store (422)."""

    async def admit(
        request: Request,
        ctx: Context,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> TokenView:
        token = await run_in_threadpool(authorize, ctx, credentials, scope)
        await refuse_unstorable(request)
        return token

    _NEEDED[admit] = scope
    return admit


def authorize(
    ctx: ApiContext, credentials: HTTPAuthorizationCredentials | None, scope: Scope
) -> TokenView:
    """The live token of ``credentials`` if it holds ``scope``; else the 401 or 403."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required")
    token = authenticate(ctx.store, credentials.credentials)
    if token is None:
        raise HTTPException(401, "the token is unknown or revoked")
    if not token.allows(scope):
        raise HTTPException(403, f"this token lacks the {scope} scope")
    return token


async def refuse_unstorable(request: Request) -> None:
    """A 422 naming each path or query parameter and each JSON body field that no database
    can store (``unstorable``: NUL characters, NaN and infinite numbers).

    Each was a 500 on PostgreSQL wherever it met the database (a name looked up, user data or
    an account's config stored). Checked once here, for every protected route, after
    authentication, on the body FastAPI has parsed already.
    """
    errors = [
        error
        for name, value in [*request.path_params.items(), *request.query_params.multi_items()]
        for error in unstorable(value, name)
    ]
    if is_json(request.headers.get("content-type", "")) and await request.body():
        errors += unstorable(await request.json(), "")
    if errors:
        raise ValidationError(errors)


def is_json(content_type: str) -> bool:
    """FastAPI's rule for a body it parses as JSON (it has, by the time dependencies run)."""
    kind, _, subtype = content_type.split(";")[0].strip().lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def refusal(request: Request) -> HTTPException | None:
    """The 401 or 403 the request's route gives this caller, or None when it may pass.

    FastAPI parses a JSON body before it runs any dependency, so a body that is not JSON fails
    before authentication does. The error handlers ask this first: a caller who may not use a
    route learns nothing about what it accepts.
    """
    dependant = getattr(request.scope.get("route"), "dependant", None)
    calls = [dependency.call for dependency in getattr(dependant, "dependencies", ())]
    needed = [_NEEDED[call] for call in calls if call in _NEEDED]
    if not needed:
        return None
    credentials = await _bearer(request)
    try:
        await run_in_threadpool(authorize, context(request), credentials, needed[0])
    except HTTPException as exc:
        return exc
    return None


Reader = Annotated[TokenView, Depends(require(Scope.READ))]
Writer = Annotated[TokenView, Depends(require(Scope.WRITE))]
Admin = Annotated[TokenView, Depends(require(Scope.ADMIN))]
