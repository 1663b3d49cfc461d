"""The ``libcloud`` account's config and credentials, validated before any driver is built.

``driver`` names a Libcloud compute provider (``openstack``, ``gce``, ``azure_arm``, ``dummy``,
``libvirt``, ...); ``args``/``kwargs`` are its constructor's non-secret arguments and the
account's credentials are merged into ``kwargs`` (so they live only in the encrypted store).
Every problem is reported at once, naming the key, never a credential's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from libcloud.compute.providers import DRIVERS

from cloudstate.exceptions import FieldError, ValidationError

OPTIONS = ("driver", "args", "kwargs", "location", "size", "image", "uuid_in", "page_size")
UUID_PLACES = ("metadata", "tags", "name")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def driver_names() -> list[str]:
    """Every compute provider name this Libcloud knows."""
    return sorted(str(getattr(provider, "value", provider)) for provider in DRIVERS)


@dataclass(frozen=True)
class LibcloudSettings:
    driver: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    location: str | None = None  # default realm when a launch names none
    size: str | None = None  # default hardware profile for catalogue-less drivers
    image: str | None = None
    uuid_in: str | None = None  # None: chosen from the driver's create_node (driver.py)
    page_size: int = DEFAULT_PAGE_SIZE


def parse_settings(config: Mapping[str, Any]) -> LibcloudSettings:
    """Validate the account config; a ``ValidationError`` lists every bad key."""
    errors = [
        FieldError(key, f"unknown libcloud option; options: {', '.join(OPTIONS)}")
        for key in sorted(config)
        if key not in OPTIONS
    ]
    driver = config.get("driver")
    known = driver_names()
    if not isinstance(driver, str) or driver not in known:
        errors.append(
            FieldError("driver", f"must be a Libcloud driver, one of: {', '.join(known)}")
        )
    args = config.get("args", [])
    if isinstance(args, str) or not isinstance(args, Sequence):
        errors.append(FieldError("args", "must be a list of constructor arguments"))
    kwargs = config.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        errors.append(FieldError("kwargs", "must be a mapping of constructor keyword arguments"))
    for key in ("location", "size", "image"):
        if key in config and not isinstance(config[key], str | int):
            errors.append(FieldError(key, "must be an id or a name"))
    uuid_in = config.get("uuid_in")
    if uuid_in is not None and uuid_in not in UUID_PLACES:
        errors.append(FieldError("uuid_in", f"must be one of: {', '.join(UUID_PLACES)}"))
    page_size = config.get("page_size", DEFAULT_PAGE_SIZE)
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        errors.append(FieldError("page_size", "must be an integer"))
    elif not 1 <= page_size <= MAX_PAGE_SIZE:
        errors.append(FieldError("page_size", f"must be 1..{MAX_PAGE_SIZE}"))
    if errors:
        raise ValidationError(errors)
    return LibcloudSettings(
        driver=str(driver),
        args=tuple(args),
        kwargs=dict(kwargs),
        location=_optional(config.get("location")),
        size=_optional(config.get("size")),
        image=_optional(config.get("image")),
        uuid_in=uuid_in,
        page_size=int(page_size),
    )


def constructor_kwargs(
    settings: LibcloudSettings, credentials: Mapping[str, str]
) -> dict[str, Any]:
    """``kwargs`` with the credentials merged in; a credential may not shadow a config key."""
    errors = [
        FieldError(key, "set both as a credential and in kwargs; keep secrets in credentials")
        for key in sorted(credentials)
        if key in settings.kwargs
    ]
    errors += [
        FieldError(key, "must be a non-empty string")
        for key, value in sorted(credentials.items())
        if not isinstance(value, str) or not value
    ]
    if errors:
        raise ValidationError(errors)
    return {**settings.kwargs, **credentials}


def _optional(value: object) -> str | None:
    return None if value is None else str(value)
