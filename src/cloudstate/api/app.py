"""The app factory: routes, problem+json errors, the body limit and request logging."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from cloudstate.api import errors
from cloudstate.api.context import ApiContext
from cloudstate.api.routes import (
    accounts,
    deliveries,
    events,
    health,
    instances,
    orders,
    realms,
    subscriptions,
    tokens,
    workers,
)
from cloudstate.version import __version__

log = logging.getLogger("cloudstate.api")

DESCRIPTION = """A stateful control plane for cloud instances.

Authenticate with `Authorization: Bearer <token>` (scopes `read`, `write`, `admin`).
Errors are RFC 9457 `application/problem+json`.
"""


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="cloudstate",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.context = context
    for module in (
        orders,
        instances,
        accounts,
        subscriptions,
        deliveries,
        events,
        realms,
        workers,
        tokens,
        health,
    ):
        app.include_router(module.router)
    errors.install(app)
    app.middleware("http")(_log_request)
    return app


async def _log_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """One line per request: method, path, status, duration (never headers or bodies)."""
    started = time.perf_counter()
    response = await call_next(request)
    elapsed = (time.perf_counter() - started) * 1000
    log.info(
        "%s %s %d %.1fms",
        request.method,
        request.url.path,
        response.status_code,
        elapsed,
        extra={"method": request.method, "path": request.url.path, "status": response.status_code},
    )
    return response
