"""The REST API (FastAPI): ``create_app(context)`` builds it; ``cloudstate api|serve`` run it.

``cloudstate.api.app`` is imported on first use, so the client can use ``api.schemas``
without building a web application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudstate.api.app import create_app
    from cloudstate.api.context import ApiContext

__all__ = ["ApiContext", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cloudstate.api.app import create_app

        return create_app
    if name == "ApiContext":
        from cloudstate.api.context import ApiContext

        return ApiContext
    raise AttributeError(f"module 'cloudstate.api' has no attribute {name!r}")
