"""The ``libcloud`` provider: any Apache Libcloud compute driver, chosen by name.

Imported only when a ``libcloud`` account is used (the registry loads it lazily), so cloudstate
without such accounts never imports libcloud. ``docs/providers.md`` describes the account keys.
Absolute imports of ``libcloud.*`` in this package mean the top-level Libcloud, never this one.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from typing import Any

from libcloud.compute.providers import get_driver

from cloudstate.exceptions import ConfigurationError, ProviderError, ValidationError
from cloudstate.providers.base import DriverContext, DriverFactory
from cloudstate.providers.libcloud.driver import LibcloudDriver, not_supported
from cloudstate.providers.libcloud.errors import call, translate
from cloudstate.providers.libcloud.mapping import STATE_MAP, name_with_uuid, uuid_of
from cloudstate.providers.libcloud.quirks import Quirks
from cloudstate.providers.libcloud.settings import (
    LibcloudSettings,
    constructor_kwargs,
    driver_names,
    parse_settings,
)

__all__ = [
    "STATE_MAP",
    "LibcloudDriver",
    "LibcloudSettings",
    "create_driver",
    "driver_names",
    "name_with_uuid",
    "not_supported",
    "parse_settings",
    "translate",
    "uuid_of",
]

NEEDS = {"libvirt": ("libvirt", "pip install 'cloudstate[libvirt]' (needs libvirt-dev)")}
"""Drivers whose Python binding is not a dependency of Libcloud itself."""


def create_driver(
    config: Mapping[str, Any], credentials: Mapping[str, str], context: DriverContext
) -> LibcloudDriver:
    """Validate the account, build the Libcloud driver and wrap it.

    Bad config is a ``ValidationError`` naming the keys; a missing binding a
    ``ConfigurationError``; a driver that fails while connecting (libvirt connects in its
    constructor) raises its translated ``ProviderError``.
    """
    settings = parse_settings(config)
    kwargs = constructor_kwargs(settings, credentials)
    module, hint = NEEDS.get(settings.driver, ("", ""))
    if module and importlib.util.find_spec(module) is None:
        raise ConfigurationError("driver", f"{settings.driver} needs {module!r}: {hint}")
    try:
        cls = get_driver(settings.driver)
    except ImportError as exc:
        raise ConfigurationError("driver", f"{settings.driver} cannot be loaded: {exc}") from exc
    try:
        node_driver = call(lambda: cls(*settings.args, **kwargs))
    except ProviderError as exc:
        if isinstance(exc.__cause__, TypeError):  # wrong constructor arguments
            raise ValidationError(str(exc.__cause__), field="kwargs") from exc
        raise
    quirks = Quirks(settings.driver)
    quirks.prepare(node_driver)
    account = re.sub(r"[^A-Za-z0-9_.-]", "_", context.account or "default")
    side_file = context.home / f"libcloud-{account}.uuids.json"
    return LibcloudDriver(node_driver, settings, quirks, side_file)


_FACTORY: DriverFactory = create_driver
