"""A provider account's config, read by a pydantic model: every bad key reported at once.

A driver declares its options as an ``Options`` model (unknown keys forbidden, no coercion: a
string is not a number, ``true`` is not 1) and gives, per option, the sentence a person should
read when it is wrong. ``parse`` turns pydantic's errors into cloudstate's ``ValidationError``
with one ``FieldError`` per bad key (``request_rates.describe`` for an entry of a mapping),
never quoting a value, so a credential can never leak into a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from cloudstate.exceptions import FieldError, ValidationError

M = TypeVar("M", bound=BaseModel)


class Options(BaseModel):
    """The base of a driver's config model: unknown keys are refused, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def pages_of(least: int, most: int) -> Any:
    """The rule of a driver's ``page_size`` option, whose listing pages hold ``least..most``
    items: ``page_size: Annotated[int, pages_of(1, 1000)] = 100``."""
    return Field(ge=least, le=most)


def parse(
    model: type[M],
    config: Mapping[str, Any],
    kind: str,
    messages: Mapping[str, str],
) -> M:
    """``config`` as ``model``, or a ValidationError naming each bad key.

    ``messages`` maps an option to what it must be; ``"OPTION.*"`` to what an entry of a
    mapping option must be and ``"OPTION.[key]"`` to what its keys must be. Without one, an
    option gets pydantic's own words.
    """
    try:
        return model.model_validate(dict(config))
    except pydantic.ValidationError as exc:
        options = ", ".join(model.model_fields)
        found: dict[str, FieldError] = {}
        for error in exc.errors():
            name, message = _named(error, messages)
            if error["type"] == "extra_forbidden":
                message = f"unknown {kind} option; options: {options}"
            found.setdefault(name, FieldError(name, message))
        raise ValidationError(found.values()) from None


def _named(error: Any, messages: Mapping[str, str]) -> tuple[str, str]:
    path = [str(part) for part in error["loc"]]
    option = path[0] if path else ""
    if len(path) > 1:
        entry = f"{option}.{path[1]}"
        key = "[key]" if "[key]" in path else "*"
        return entry, messages.get(f"{option}.{key}", str(error["msg"]))
    return option, messages.get(option, str(error["msg"]))
