"""The ``ec2`` account's config and credentials, validated before any client is built.

Every problem is reported at once, naming the key (never a credential's value). botocore's own
retries are off: cloudstate's engine retries with backoff and keeps to the account's call
budget, and a second retry layer underneath would hide throttling from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config

from cloudstate.exceptions import FieldError, ValidationError
from cloudstate.providers.ec2.limits import CLASSES, DEFAULT_BURSTS, DEFAULT_RATES

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

DEFAULT_INSTANCE_TYPES: tuple[str, ...] = (
    "t3.micro",
    "t3.small",
    "t3.medium",
    "t3.large",
    "m5.large",
    "m5.xlarge",
)
"""Offered when ``instance_types`` is not configured: a few common types keep the catalogue
(and the ``DescribeInstanceTypes`` call behind it) small."""

MIN_PAGE_SIZE, MAX_PAGE_SIZE = 5, 1000  # DescribeInstances' own limits on MaxResults
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 30.0
OPTIONS = (
    "region",
    "endpoint_url",
    "instance_types",
    "images",
    "page_size",
    "request_rates",
    "request_bursts",
)
CREDENTIALS = ("access_key_id", "secret_access_key", "session_token")

_LOADER = botocore.loaders.create_loader()
"""Shared by every driver's session: EC2's service model is large, and each session would
otherwise parse (and keep) its own copy. The loader only reads and caches files."""


@dataclass(frozen=True)
class Ec2Settings:
    region: str
    endpoint_url: str | None = None
    instance_types: tuple[str, ...] = DEFAULT_INSTANCE_TYPES
    images: tuple[str, ...] = ()  # empty: the account's own AMIs (DescribeImages Owners=self)
    page_size: int = MAX_PAGE_SIZE
    request_rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    """Calls per second per request class (``limits.CLASSES``), every class present."""
    request_bursts: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BURSTS))
    """Calls per request class allowed at once (each at least 1), every class present."""


def parse_settings(config: Mapping[str, Any]) -> Ec2Settings:
    """Validate the account config; a ``ValidationError`` lists every bad key."""
    errors = [
        FieldError(key, f"unknown ec2 option; options: {', '.join(OPTIONS)}")
        for key in sorted(config)
        if key not in OPTIONS
    ]
    region = config.get("region")
    if not isinstance(region, str) or not region.strip():
        errors.append(FieldError("region", "required: the AWS region, e.g. us-east-1"))
    endpoint = config.get("endpoint_url")
    if endpoint is not None and not _is_http_url(endpoint):
        errors.append(FieldError("endpoint_url", "must be an http(s) URL"))
    types = _names(config, "instance_types", errors)
    images = _names(config, "images", errors)
    page_size = config.get("page_size", MAX_PAGE_SIZE)
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        errors.append(FieldError("page_size", "must be an integer"))
    elif not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        errors.append(FieldError("page_size", f"must be {MIN_PAGE_SIZE}..{MAX_PAGE_SIZE}"))
    rates = _per_class(config, "request_rates", errors, least=0.0)
    bursts = _per_class(config, "request_bursts", errors, least=1.0)
    if errors:
        raise ValidationError(errors)
    return Ec2Settings(
        region=str(region),
        endpoint_url=endpoint,
        instance_types=types or DEFAULT_INSTANCE_TYPES,
        images=images,
        page_size=int(page_size),
        request_rates={**DEFAULT_RATES, **rates},
        request_bursts={**DEFAULT_BURSTS, **bursts},
    )


def check_credentials(credentials: Mapping[str, str]) -> None:
    """Both keys, or neither (boto3's default chain: environment, instance profile, ...)."""
    errors = [
        FieldError(key, f"unknown ec2 credential; credentials: {', '.join(CREDENTIALS)}")
        for key in sorted(credentials)
        if key not in CREDENTIALS
    ]
    for key in CREDENTIALS:
        value = credentials.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            errors.append(FieldError(key, "must be a non-empty string"))
    pair = [key for key in CREDENTIALS[:2] if key in credentials]
    if len(pair) == 1 or (not pair and "session_token" in credentials):
        missing = [key for key in CREDENTIALS[:2] if key not in credentials]
        errors += [FieldError(key, "required with the other ec2 credentials") for key in missing]
    if errors:
        raise ValidationError(errors)


def make_client(settings: Ec2Settings, credentials: Mapping[str, str]) -> EC2Client:
    """One client per driver: boto3 clients are thread-safe, sessions are not."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    session = boto3.session.Session(
        botocore_session=core,
        aws_access_key_id=credentials.get("access_key_id"),
        aws_secret_access_key=credentials.get("secret_access_key"),
        aws_session_token=credentials.get("session_token"),
        region_name=settings.region,
    )
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=20,
    )
    return session.client("ec2", endpoint_url=settings.endpoint_url, config=config)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _names(config: Mapping[str, Any], key: str, errors: list[FieldError]) -> tuple[str, ...]:
    value = config.get(key)
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        errors.append(FieldError(key, "must be a list of names"))
        return ()
    if not value or not all(isinstance(item, str) and item for item in value):
        errors.append(FieldError(key, "must be a non-empty list of non-empty strings"))
        return ()
    return tuple(dict.fromkeys(value))


def _per_class(
    config: Mapping[str, Any], key: str, errors: list[FieldError], *, least: float
) -> dict[str, float]:
    """A ``{class: number}`` mapping over the request classes (``limits.CLASSES``); a number
    must be finite and above 0 and ``least``. Every bad entry is named ``key.class``."""
    value = config.get(key)
    if value is None:
        return {}
    classes = ", ".join(CLASSES)
    if not isinstance(value, Mapping) or not value:
        errors.append(FieldError(key, f"must map request classes ({classes}) to numbers"))
        return {}
    wanted = "a positive number" if least <= 0 else f"a number >= {least:g}"
    found: dict[str, float] = {}
    for name, number in value.items():
        if name not in CLASSES:
            errors.append(FieldError(f"{key}.{name}", f"unknown request class; classes: {classes}"))
        elif _is_number(number) and number > 0 and number >= least:
            found[name] = float(number)
        else:
            errors.append(FieldError(f"{key}.{name}", f"must be {wanted}"))
    return found


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
