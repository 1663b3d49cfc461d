"""Every error as RFC 9457 ``application/problem+json``; bad input is never a 500.

The exception tree maps onto statuses here, once: validation → 422 (each bad field listed),
not found → 404, conflicts → 409 (a forbidden action lists the allowed ones), provider trouble
→ 502/503, a body over the limit → 413. Unexpected errors are logged with a reference and
answered 500 without internals.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudstate.api.deps import is_json, refusal
from cloudstate.domain.orders import cross_field_errors
from cloudstate.exceptions import (
    ActionNotAllowedError,
    CloudStateError,
    ConfigurationError,
    ConflictError,
    CursorExpiredError,
    NotFoundError,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailableError,
    StoreError,
    ValidationError,
    WaitTimeoutError,
)

log = logging.getLogger("cloudstate.api")

PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 32 * 1024

_STATUS: list[tuple[type[CloudStateError], int, str]] = [
    (ValidationError, 422, "Invalid input"),
    (ConfigurationError, 422, "Invalid configuration"),
    (NotFoundError, 404, "Not found"),
    (ActionNotAllowedError, 409, "Action not allowed"),
    (ConflictError, 409, "Conflict"),
    (CursorExpiredError, 410, "Gone"),
    (WaitTimeoutError, 504, "Timed out waiting"),
    (ProviderAuthError, 502, "Provider refused the credentials"),
    (ProviderUnavailableError, 503, "Provider unavailable"),
    (ProviderError, 502, "Provider error"),
    (StoreError, 503, "Database unavailable"),
]


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    429: "Too many requests",
    410: "Gone",
    413: "Request body too large",
    415: "Unsupported media type",
}


def problem(
    status: int,
    title: str,
    detail: str = "",
    *,
    request: Request | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    body.update({key: value for key, value in extra.items() if value is not None})
    sent = dict(headers or {})
    if status == 401:
        sent["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=sent or None)


async def _cloudstate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudStateError)
    status, title = _status(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationError):
        extra["errors"] = [{"field": e.field, "message": e.message} for e in exc.errors]
    if isinstance(exc, ActionNotAllowedError):
        extra["allowed_actions"] = list(exc.allowed)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(status, title, str(exc), request=request, **extra)


def _status(exc: CloudStateError) -> tuple[int, str]:
    for cls, status, title in _STATUS:
        if isinstance(exc, cls):
            return status, title
    return 500, "Internal error"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = await refusal(request)
    if refused is not None:
        return await _http_error(request, refused)
    errors = _not_json(request, exc) or [
        {"field": _field(error), "message": str(error["msg"]).removeprefix("Value error, ")}
        for error in exc.errors()
    ]
    if request.method == "POST" and request.url.path == "/v1/orders":
        # One typo must not hide the order's other problems (missing fields, repeated uuids).
        reported = {error["field"] for error in errors}
        errors += [
            {"field": e.field, "message": e.message}
            for e in cross_field_errors(exc.body)
            if e.field not in reported
        ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "Invalid input", detail, request=request, errors=errors)


def _not_json(request: Request, exc: RequestValidationError) -> list[dict[str, str]]:
    """A body sent as anything but JSON reaches validation as bytes and fails as a whole, in
    pydantic's words for bytes ("a valid dictionary"); say what is wrong instead. (422, as for
    every body that is not the JSON an operation takes; not 415.)"""
    sent = request.headers.get("content-type", "")
    whole = [e for e in exc.errors() if tuple(e["loc"]) == ("body",) and e["type"] != "missing"]
    if is_json(sent) or not whole:
        return []
    given = f"not {sent}" if sent else "none was given"
    return [
        {"field": "body", "message": f"must be JSON, as Content-Type: application/json ({given})"}
    ]


def _field(error: Any) -> str:
    """The dotted path of a bad field; a body that is not JSON at all is ``body`` (its ``loc``
    ends in the offending character's position, which names no field)."""
    if error["type"] == "json_invalid":
        return "body"
    parts = list(error["loc"])
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts[:1]
    return ".".join(str(part) for part in parts)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        return await _unparsable_body(request, exc.__cause__)
    title = _TITLES.get(exc.status_code, "Error")
    detail = str(exc.detail or "")
    # the exception's own headers stay: 405's Allow (RFC 9110), 429's Retry-After
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed(request) or headers.get("Allow", "")
    return problem(exc.status_code, title, detail, request=request, headers=headers)


def _allowed(request: Request) -> str:
    """Every method the API documents at this path. Starlette's own ``Allow`` names only the
    methods of the first route that matched the path, and a path often has several (``GET``
    and ``POST`` of a collection are two routes)."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        table = [
            (re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path))), set(operations))
            for path, operations in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allow_table = table
    path = request.url.path
    methods = {m.upper() for pattern, found in table if pattern.fullmatch(path) for m in found}
    return ", ".join(sorted(methods))


async def _unparsable_body(request: Request, cause: BaseException) -> JSONResponse:
    """FastAPI's 400 for a body ``json.loads`` fails on with something other than a decode
    error (bytes that are not UTF-8, nesting deeper than the recursion limit): the same 422 on
    ``body`` as any other malformed JSON, and like it only for a caller who may use the route."""
    refused = await refusal(request)
    if refused is not None:
        return await _http_error(request, refused)
    message = "nested too deeply" if isinstance(cause, RecursionError) else "JSON decode error"
    errors = [{"field": "body", "message": message}]
    return problem(422, "Invalid input", f"body: {message}", request=request, errors=errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    reference = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", reference, request.method, request.url.path)
    return problem(500, "Internal error", f"reference {reference}", request=request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CloudStateError, _cloudstate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(HeaderLimit, limit=MAX_HEADER_BYTES)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"the limit is {self.limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "Request body too large", f"the limit is {self.limit} bytes")
        await response(scope, receive, send)


class HeaderLimit:
    """Refuse requests whose header names and values total over ``limit`` bytes with 431.

    uvicorn's own bound (h11's, on a request head not yet complete) holds only while the head
    arrives in pieces; one that arrives in a single read passes it, whatever its size.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers") or []
        if scope["type"] == "http" and sum(len(k) + len(v) for k, v in headers) > self.limit:
            title = "Request header fields too large"
            response = problem(431, title, f"the limit is {self.limit} bytes")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
