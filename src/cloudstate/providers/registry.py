"""Provider kinds by name. A kind is a factory: (account config, credentials, context) → Driver.

Built-in kinds register lazily so that importing cloudstate never imports boto3 or libcloud.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from cloudstate import redaction
from cloudstate.exceptions import ValidationError
from cloudstate.providers.base import Driver, DriverContext, DriverFactory

_BUILTIN: dict[str, str] = {
    "simulator": "cloudstate.providers.simulator:create_driver",
    "ec2": "cloudstate.providers.ec2:create_driver",
    "libcloud": "cloudstate.providers.libcloud:create_driver",
}
_registered: dict[str, DriverFactory] = {}


def register(kind: str, factory: DriverFactory) -> None:
    """Add (or replace) a provider kind; used by plugins and by tests' fakes."""
    _registered[kind] = factory


def kinds() -> list[str]:
    return sorted({*_BUILTIN, *_registered})


def factory_for(kind: str) -> DriverFactory:
    if kind in _registered:
        return _registered[kind]
    if kind not in _BUILTIN:
        raise ValidationError(
            f"unknown provider {kind!r}; known providers: {', '.join(kinds())}", field="provider"
        )
    module_name, _, attribute = _BUILTIN[kind].partition(":")
    factory: DriverFactory = getattr(importlib.import_module(module_name), attribute)
    _registered[kind] = factory
    return factory


def create_driver(
    kind: str,
    config: Mapping[str, Any],
    credentials: Mapping[str, str],
    context: DriverContext,
) -> Driver:
    """A driver for an account. Its credential values are redacted from every log line from
    now on, whatever shape a library prints them in (``cloudstate.redaction``)."""
    redaction.remember(credentials.values())
    return factory_for(kind)(config, credentials, context)
