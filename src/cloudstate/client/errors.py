"""HTTP answers and transport failures, translated into cloudstate's exception tree.

The API speaks RFC 9457 problem+json; this module maps it back onto the classes the service
raised, so ``except NotFoundError`` means the same embedded and over HTTP::

    401, 403          AuthenticationError
    400, 413, 415     ValidationError
    404               NotFoundError              (kind and key parsed from the detail)
    409               ActionNotAllowedError      with allowed_actions: action, state, allowed
                      AlreadyExistsError         "... already exists"
                      ConflictError              any other conflict
    410               CursorExpiredError         re-list and start over
    422               ValidationError            one FieldError per bad field
    504               WaitTimeoutError
    other             ServerError                carrying the status
    no answer         UnreachableError           refused, DNS, timeout, reset
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from cloudstate.exceptions import (
    ActionNotAllowedError,
    AlreadyExistsError,
    AuthenticationError,
    CloudStateError,
    ConflictError,
    CursorExpiredError,
    FieldError,
    NotFoundError,
    ServerError,
    UnreachableError,
    ValidationError,
    WaitTimeoutError,
)

__all__ = ["AuthenticationError", "CursorExpiredError", "ServerError", "UnreachableError"]


_NOT_FOUND = re.compile(r"(?P<kind>[\w ]+?) (?P<key>\S+) not found")
_EXISTS = re.compile(r"(?P<kind>[\w ]+?) (?P<key>\S+) already exists")
_REFUSED = re.compile(
    r"cannot (?P<action>\w+): (?:instance (?P<subject>\S+) is )?(?P<state>.+?); allowed actions:"
)


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem details of an error response (a plain stand-in when the body is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"title": response.reason_phrase, "status": response.status_code, "detail": ""}


def error_for(status: int, problem: Mapping[str, Any], path: str = "") -> CloudStateError:
    """The exception a problem response stands for."""
    title = str(problem.get("title") or f"HTTP {status}")
    detail = str(problem.get("detail") or title)
    if status in (401, 403):
        return AuthenticationError(status, detail)
    if status == 404:
        return _not_found(detail, path)
    if status == 409:
        return _conflict(detail, problem)
    if status == 410:
        return CursorExpiredError(detail)
    if status in (400, 413, 415, 422):
        return _invalid(detail, problem)
    if status == 504:
        return WaitTimeoutError(detail)
    return ServerError(status, title, str(problem.get("detail") or ""))


def unreachable(url: str, exc: httpx.TransportError) -> UnreachableError:
    """A transport failure, named plainly (httpx's messages can be empty)."""
    kind = {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no answer in time",
        httpx.RemoteProtocolError: "the connection broke",
    }.get(type(exc), type(exc).__name__)
    reason = f"{kind} ({exc})" if str(exc) else kind
    return UnreachableError(url, reason)


def _not_found(detail: str, path: str) -> NotFoundError:
    match = _NOT_FOUND.fullmatch(detail)
    if match:
        return NotFoundError(match["kind"], match["key"])
    return NotFoundError("resource", path or detail)


def _conflict(detail: str, problem: Mapping[str, Any]) -> ConflictError:
    allowed = problem.get("allowed_actions")
    if isinstance(allowed, list):
        match = _REFUSED.match(detail)
        if match:
            return ActionNotAllowedError(
                match["action"], match["state"], allowed, match["subject"] or ""
            )
        return ActionNotAllowedError("act", "unknown", allowed)
    exists = _EXISTS.fullmatch(detail)
    if exists:
        return AlreadyExistsError(exists["kind"], exists["key"])
    return ConflictError(detail)


def _invalid(detail: str, problem: Mapping[str, Any]) -> ValidationError:
    listed = problem.get("errors")
    if isinstance(listed, list) and listed:
        return ValidationError(
            FieldError(str(item.get("field", "")), str(item.get("message", "")))
            for item in listed
            if isinstance(item, dict)
        )
    return ValidationError(detail)
