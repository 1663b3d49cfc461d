"""The app factory: routes, problem+json errors, the body limit, request logging, and the
operator dashboard's static files at ``/ui`` (the page loads without a token; its API calls
carry one)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from anyio import to_thread
from fastapi import FastAPI, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    simulator,
    subscriptions,
    tokens,
    workers,
)
from cloudstate.api.streams import StreamHub
from cloudstate.version import __version__

log = logging.getLogger("cloudstate.api")

DESCRIPTION = """A stateful control plane for cloud instances.

Authenticate with `Authorization: Bearer <token>` (scopes `read`, `write`, `admin`).
Errors are RFC 9457 `application/problem+json`. The operator dashboard is at `/ui/`.
"""

UI_DIRECTORY = Path(__file__).resolve().parent.parent / "ui"
DOCS_DIRECTORY = Path(__file__).resolve().parent / "docs"
"""Swagger UI's files, vendored with their licence (see its README.md), and our page for it."""
UI_HEADERS = {
    # Scripts and styles only from files of our own (no inline code), API calls to this origin.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag), so an upgrade shows at once
}


POOL_SIZE = 20
"""Database connections of a ``cloudstate api`` process, all kept (no overflow): as many as its
pool allowed at most before (10 kept + 10 overflow), so the server's connection budget shared
with the workers is unchanged, but none is opened and closed per request any more."""


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="cloudstate",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # ours below: Swagger UI from the package, under the dashboard's CSP
        redoc_url=None,
        lifespan=_lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.context = context
    app.state.streams = StreamHub(
        context.store,
        max_per_token=context.settings.stream_max_per_token,
        max_total=context.settings.stream_max_total,
    )
    for module in (
        orders,
        instances,
        accounts,
        subscriptions,
        deliveries,
        events,
        realms,
        simulator,
        workers,
        tokens,
        health,
    ):
        app.include_router(module.router)
    app.mount("/ui", _Dashboard(directory=UI_DIRECTORY, html=True), name="ui")
    app.mount("/docs/assets", _Dashboard(directory=DOCS_DIRECTORY), name="docs-assets")
    app.add_api_route("/docs", _docs, include_in_schema=False)
    app.add_api_route("/", _to_dashboard, include_in_schema=False)
    errors.install(app)
    app.add_middleware(RequestLog)  # added last: outermost, so 413 and 431 are logged too
    return app


def operation_id(route: APIRoute) -> str:
    """An operation's id is its endpoint's name (``create_order``, ``get_instance``): what
    generated clients name their methods after, so names are unique across the API."""
    return route.name


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run at most as many request threads as the store has database connections.

    Synchronous endpoints and dependencies run on AnyIO's default thread limiter (40 threads),
    and almost each of them needs a connection. We bound the threads by the pool rather than
    grow the pool to 40: a thread beyond the pool's connections could only wait for one
    (holding its thread, up to the pool's timeout), while a bigger pool per API process would
    eat into the database's ``max_connections``, which the API processes share with every
    worker. Requests beyond the limit wait on the event loop instead.
    """
    context: ApiContext = app.state.context
    connections = context.store.database.max_connections
    if connections is not None:
        to_thread.current_default_thread_limiter().total_tokens = connections
    yield


class RequestLog:
    """One line per request: method, path, status, duration (never headers or bodies).

    A plain ASGI middleware (``BaseHTTPMiddleware`` runs each request through a task group
    and memory streams, a tenth of the API's event-loop time in profiles). The line is
    written when the response starts, with the time taken until then (for a stream, its
    headers); a request that fails before it starts logs nothing here: the error handler
    logs it, and the exception goes on as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                _log_request(scope, message["status"], started)
            await send(message)

        await self.app(scope, receive, logged)


def _log_request(scope: Scope, status: int, started: float) -> None:
    elapsed = (time.perf_counter() - started) * 1000
    method, path = scope["method"], URL(scope=scope).path
    log.info(
        "%s %s %d %.1fms",
        method,
        path,
        status,
        elapsed,
        extra={"method": method, "path": path, "status": status},
    )


class _Dashboard(StaticFiles):
    """The dashboard's (or the docs') files, each answered with ``UI_HEADERS``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(UI_HEADERS)
        return response


def _docs() -> FileResponse:
    """The API documentation: Swagger UI, every file from this package, with ``UI_HEADERS``."""
    return FileResponse(DOCS_DIRECTORY / "index.html", headers=UI_HEADERS)


def _to_dashboard() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=307)  # relative: works behind a path prefix
