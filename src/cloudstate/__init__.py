"""cloudstate: a stateful control plane for cloud instances.

Launch without duplicates, track every instance, record every change as an event in the same
transaction, and deliver it to whoever subscribed: embedded in a Python program (``CloudState``)
or as a service (``Client`` / ``AsyncClient`` over its REST API).

The heavy names are imported on first use, so ``import cloudstate`` (and every CLI call) stays
quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cloudstate.exceptions import (
    ActionNotAllowedError,
    CloudStateError,
    ConfigurationError,
    NotFoundError,
    ProviderError,
    ValidationError,
)
from cloudstate.version import __version__

if TYPE_CHECKING:
    from cloudstate.client import AsyncClient, Client
    from cloudstate.config import Settings, load_settings
    from cloudstate.domain.events import EventRecord
    from cloudstate.embedded import CloudState

_LAZY = {
    "AsyncClient": "cloudstate.client",
    "Client": "cloudstate.client",
    "CloudState": "cloudstate.embedded",
    "EventRecord": "cloudstate.domain.events",
    "Settings": "cloudstate.config",
    "load_settings": "cloudstate.config",
}

__all__ = [
    "ActionNotAllowedError",
    "AsyncClient",
    "Client",
    "CloudState",
    "CloudStateError",
    "ConfigurationError",
    "EventRecord",
    "NotFoundError",
    "ProviderError",
    "Settings",
    "ValidationError",
    "__version__",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cloudstate' has no attribute {name!r}")
