"""One module per resource; ``responses(...)`` declares each route's problem responses."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from uuid import UUID

from cloudstate.api.schemas import Problem
from cloudstate.exceptions import ValidationError

_DESCRIPTIONS = {
    401: "Missing, unknown or revoked token",
    403: "The token lacks the needed scope",
    404: "No such resource",
    409: "Conflicts with the current state",
    410: "The cursor is older than the retained events",
    413: "Request body too large",
    422: "Invalid input: each bad field is listed",
    429: "Too many open streams: retry after the Retry-After seconds",
    502: "The provider refused",
    503: "The provider or the database is unavailable",
    504: "Timed out waiting for the target state",
}


PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Problem-details responses for ``codes`` plus the ones every protected route can give."""
    wanted = sorted({401, 403, 422, *codes})
    return {
        code: {
            "model": Problem,
            "description": _DESCRIPTIONS[code],
            # the schema where the body is: ``model`` alone puts it under application/json
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        }
        for code in wanted
    }


CURSOR_PATTERN = r"^([A-Za-z0-9_-]{22}(==)?)?$"
"""A page cursor as ``encode_cursor`` writes it (base64url of 16 bytes); empty: the start."""


def encode_cursor(after: UUID) -> str:
    """An opaque page cursor: the last item's id (list endpoints page by id)."""
    return base64.urlsafe_b64encode(after.bytes).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> UUID | None:
    if not cursor:
        return None
    try:
        return UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise ValidationError("not a cursor this API issued", field="cursor") from None
