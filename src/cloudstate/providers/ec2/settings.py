"""The ``ec2`` account's config and credentials, validated before any client is built.

The config is a pydantic model (``providers.options``): every problem is reported at once,
naming the key (never a credential's value). botocore's own
retries are off: cloudstate's engine retries with backoff and keeps to the account's call
budget, and a second retry layer underneath would hide throttling from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from pydantic import Field, StringConstraints, field_validator

from cloudstate.exceptions import FieldError, ValidationError
from cloudstate.providers.ec2.limits import CLASSES, DEFAULT_BURSTS, DEFAULT_RATES
from cloudstate.providers.options import Options, pages_of, parse

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
CREDENTIALS = ("access_key_id", "secret_access_key", "session_token")

_LOADER = botocore.loaders.create_loader()
"""Shared by every driver's session: EC2's service model is large, and each session would
otherwise parse (and keep) its own copy. The loader only reads and caches files."""

RequestClass = Annotated[str, Field(pattern=f"^({'|'.join(CLASSES)})$")]
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Burst = Annotated[float, Field(ge=1, allow_inf_nan=False)]
Names = Annotated[
    tuple[Annotated[str, Field(min_length=1)], ...], Field(strict=False, min_length=1)
]
_CLASSES = ", ".join(CLASSES)
MESSAGES = {
    "region": "required: the AWS region, e.g. us-east-1",
    "endpoint_url": "must be an http(s) URL",
    "instance_types": "must be a non-empty list of non-empty strings",
    "images": "must be a non-empty list of non-empty strings",
    "page_size": f"must be an integer, {MIN_PAGE_SIZE}..{MAX_PAGE_SIZE}",
    "request_rates": f"must map request classes ({_CLASSES}) to numbers",
    "request_rates.*": "must be a positive number",
    "request_rates.[key]": f"unknown request class; classes: {_CLASSES}",
    "request_bursts": f"must map request classes ({_CLASSES}) to numbers",
    "request_bursts.*": "must be a number >= 1",
    "request_bursts.[key]": f"unknown request class; classes: {_CLASSES}",
}
"""What each option must be, as the refusal says it."""


class Ec2Settings(Options):
    """An ``ec2`` account's config (``parse_settings`` reads it)."""

    region: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    endpoint_url: str | None = None
    instance_types: Names = DEFAULT_INSTANCE_TYPES
    images: Names = ()  # empty: the account's own AMIs (DescribeImages Owners=self)
    page_size: Annotated[int, pages_of(MIN_PAGE_SIZE, MAX_PAGE_SIZE)] = MAX_PAGE_SIZE
    request_rates: Annotated[dict[RequestClass, Rate], Field(min_length=1)] = Field(
        default_factory=lambda: dict(DEFAULT_RATES)
    )
    """Calls per second per request class (``limits.CLASSES``), every class present."""
    request_bursts: Annotated[dict[RequestClass, Burst], Field(min_length=1)] = Field(
        default_factory=lambda: dict(DEFAULT_BURSTS)
    )
    """Calls per request class allowed at once (each at least 1), every class present."""

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "http://x")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("not an http(s) URL")
        return value

    @field_validator("instance_types", "images")
    @classmethod
    def _once_each(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @field_validator("request_rates")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_RATES, **value}

    @field_validator("request_bursts")
    @classmethod
    def _bursts(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_BURSTS, **value}


def parse_settings(config: Mapping[str, Any]) -> Ec2Settings:
    """Validate the account config; a ``ValidationError`` lists every bad key."""
    return parse(Ec2Settings, config, "ec2", MESSAGES)


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
