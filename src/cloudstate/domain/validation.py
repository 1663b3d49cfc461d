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


Name = Annotated[str, AfterValidator(_check_name)]
AccountName = Annotated[str, AfterValidator(_check_account_name)]
Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
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


UtcDatetime = Annotated[pydantic.AwareDatetime, AfterValidator(_in_utc)]


def _message(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")
