"""The ``libcloud`` account's config and credentials, validated before any driver is built.

``driver`` names a Libcloud compute provider (``openstack``, ``gce``, ``azure_arm``, ``dummy``,
``libvirt``, ...); ``args``/``kwargs`` are its constructor's non-secret arguments and the
account's credentials are merged into ``kwargs`` (so they live only in the encrypted store).
The config is a pydantic model (``providers.options``): every problem is reported at once,
naming the key, never a credential's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from libcloud.compute.providers import DRIVERS
from pydantic import BeforeValidator, Field, field_validator

from cloudstate.exceptions import FieldError, ValidationError
from cloudstate.providers.options import Options, pages_of, parse

UUID_PLACES = ("metadata", "tags", "name")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def driver_names() -> list[str]:
    """Every compute provider name this Libcloud knows."""
    return sorted(str(getattr(provider, "value", provider)) for provider in DRIVERS)


def _numeric_id(value: object) -> object:
    """A numeric id (``location: 3``) is an id all the same: kept as its text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


IdOrName = Annotated[str, BeforeValidator(_numeric_id)]
MESSAGES = {
    "args": "must be a list of constructor arguments",
    "kwargs": "must be a mapping of constructor keyword arguments",
    "location": "must be an id or a name",
    "size": "must be an id or a name",
    "image": "must be an id or a name",
    "uuid_in": f"must be one of: {', '.join(UUID_PLACES)}",
    "page_size": f"must be an integer, 1..{MAX_PAGE_SIZE}",
}
"""What each option must be, as the refusal says it (``driver``'s lists the drivers)."""


class LibcloudSettings(Options):
    """A ``libcloud`` account's config (``parse_settings`` reads it)."""

    driver: str
    args: Annotated[tuple[Any, ...], Field(strict=False)] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    location: IdOrName | None = None  # default realm when a launch names none
    size: IdOrName | None = None  # default hardware profile for catalogue-less drivers
    image: IdOrName | None = None
    uuid_in: Literal["metadata", "tags", "name"] | None = None  # None: per driver (driver.py)
    page_size: Annotated[int, pages_of(1, MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE

    @field_validator("driver")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in driver_names():
            raise ValueError("not a Libcloud driver")
        return value


def parse_settings(config: Mapping[str, Any]) -> LibcloudSettings:
    """Validate the account config; a ``ValidationError`` lists every bad key."""
    known = f"must be a Libcloud driver, one of: {', '.join(driver_names())}"
    return parse(LibcloudSettings, config, "libcloud", {**MESSAGES, "driver": known})


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
