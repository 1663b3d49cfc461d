"""Caller input checks shared by every entry point (embedded, REST, CLI).

Pydantic does the parsing; ``parse`` turns its errors into our ``ValidationError`` so every
interface reports the same dotted field paths and messages.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel

from cloudstate.exceptions import FieldError, ValidationError

MAX_USER_DATA_BYTES = 16 * 1024
MAX_LABELS = 64

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")
_ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

M = TypeVar("M", bound=BaseModel)


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "must be 1-63 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _check_account_name(value: str) -> str:
    if not _ACCOUNT_NAME.fullmatch(value):
        raise ValueError(
            "must be 1-63 characters of lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"label key {key!r} must be 1-63 characters of lower-case letters, digits, "
                "'.', '_', '/' or '-', starting and ending with a letter or digit"
            )
        if len(value) > 255 or not value.isprintable():
            raise ValueError(f"label {key!r} value must be printable and at most 255 characters")
    return labels


def _check_user_data(value: str) -> str:
    size = len(value.encode("utf-8"))
    if size > MAX_USER_DATA_BYTES:
        raise ValueError(f"is {size} bytes; the limit is {MAX_USER_DATA_BYTES} bytes (16 KiB)")
    return value


def declared(**schema: Any) -> Any:
    """A rule the validators enforce, declared in the JSON Schema (so OpenAPI clients and
    fuzzers know it) without replacing the validator's own message."""
    return pydantic.Field(json_schema_extra=schema)


Name = Annotated[
    str,
    AfterValidator(_check_name),
    declared(pattern=f"^{_NAME.pattern}$", minLength=1, maxLength=63),
]
AccountName = Annotated[
    str,
    AfterValidator(_check_account_name),
    declared(pattern=f"^{_ACCOUNT_NAME.pattern}$", minLength=1, maxLength=63),
]
Labels = Annotated[
    dict[str, str],
    AfterValidator(_check_labels),
    declared(
        maxProperties=MAX_LABELS,
        propertyNames={"pattern": f"^{_LABEL_KEY.pattern}$", "maxLength": 63},
        additionalProperties={
            "type": "string",
            "maxLength": 255,
            "pattern": r"^[^\x00-\x1f\x7f]*$",
        },
    ),
]
UserData = Annotated[str, AfterValidator(_check_user_data)]
ResourceId = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=255)]


def field_errors(exc: pydantic.ValidationError) -> list[FieldError]:
    """Pydantic's errors as ``FieldError``s with dotted paths (``instances.2.uuid``)."""
    errors = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or "body"
        errors.append(FieldError(path, _message(error)))
    return errors


def parse(model: type[M], data: Any) -> M:
    """Validate ``data`` into ``model`` or raise ``ValidationError`` listing every bad field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(field_errors(exc)) from None


def parse_field(annotation: Any, value: Any, field: str) -> Any:
    """Validate one value against an annotated type; errors are reported at ``field``."""
    try:
        return pydantic.TypeAdapter(annotation).validate_python(value)
    except pydantic.ValidationError as exc:
        errors = [
            FieldError(".".join([field, *map(str, error["loc"])]), _message(error))
            for error in exc.errors(include_url=False)
        ]
        raise ValidationError(errors) from None


NUL_MESSAGE = "must not contain NUL (\\u0000) characters"
NOT_FINITE_MESSAGE = "must be a finite number (JSON has no NaN or Infinity)"


def unstorable(value: Any, path: str) -> list[FieldError]:
    """A ``FieldError`` for each part of a JSON-like ``value`` that no database here can store,
    by dotted path from ``path``: a string (key or value) holding NUL, which PostgreSQL takes
    in no text column and no JSONB value, and a NaN or infinite number, which JSONB refuses
    and SQLite's JSON turns into null. Python's JSON parser accepts all of them."""
    if isinstance(value, str):
        return [FieldError(path or "body", NUL_MESSAGE)] if "\x00" in value else []
    if isinstance(value, float) and not math.isfinite(value):
        return [FieldError(path or "body", NOT_FINITE_MESSAGE)]
    if isinstance(value, list):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return []
    errors = []
    for key, item in value.items():
        where = ".".join(filter(None, [path, str(key).replace("\x00", "\\u0000")]))
        if "\x00" in str(key):
            errors.append(FieldError(where, NUL_MESSAGE))
        else:
            errors += unstorable(item, where)
    return errors


def _in_utc(value: datetime) -> datetime:
    """The moment in UTC: a time zone that pushes it past year 1 or 9999 is out of range."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """A date-time string as RFC 3339 writes it (or a ``datetime``, from Python callers): not
    a number, nor a string of one, which pydantic would read as seconds since 1970."""
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339.fullmatch(value)):
        return value
    raise ValueError(
        "must be an RFC 3339 date-time string with a time zone, e.g. 2030-01-31T12:00:00Z"
    )


UtcDatetime = Annotated[
    pydantic.AwareDatetime,
    pydantic.BeforeValidator(_rfc3339),
    AfterValidator(_in_utc),
    declared(pattern=f"^{RFC3339.pattern}$"),
]


def _message(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")
