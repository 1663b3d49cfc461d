"""One module per resource; ``responses(...)`` declares each route's problem responses."""

from __future__ import annotations

from typing import Any

from cloudstate.api.schemas import Problem

_DESCRIPTIONS = {
    401: "Missing, unknown or revoked token",
    403: "The token lacks the needed scope",
    404: "No such resource",
    409: "Conflicts with the current state",
    410: "The cursor is older than the retained events",
    413: "Request body too large",
    422: "Invalid input: each bad field is listed",
    502: "The provider refused",
    503: "The provider or the database is unavailable",
    504: "Timed out waiting for the target state",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Problem-details responses for ``codes`` plus the ones every protected route can give."""
    wanted = sorted({401, 403, 422, *codes})
    return {
        code: {
            "model": Problem,
            "description": _DESCRIPTIONS[code],
            "content": {"application/problem+json": {}},
        }
        for code in wanted
    }
