"""botocore errors → cloudstate's ``ProviderError`` tree: the one place the EC2 driver meets them.

EC2 answers a refusal with an error *code* (``ClientError.response["Error"]["Code"]``); the
code, not the HTTP status, says what it means, except for 5xx, which is always "try later".
Transport failures (refused, reset, timed out) never reach EC2 at all and are all retryable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from cloudstate.exceptions import (
    ProviderAuthError,
    ProviderCapacityError,
    ProviderError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
)

T = TypeVar("T")

THROTTLED = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
    }
)
NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
AUTH = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
    }
)
CAPACITY = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
    }
)
UNAVAILABLE = frozenset(
    {"InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable", "RequestTimeout"}
)

_BY_CODE: tuple[tuple[frozenset[str], type[ProviderError]], ...] = (
    (THROTTLED, ProviderThrottledError),
    (NOT_FOUND, ProviderNotFoundError),
    (AUTH, ProviderAuthError),
    (CAPACITY, ProviderCapacityError),
    (UNAVAILABLE, ProviderUnavailableError),
)


def translate(exc: Exception) -> ProviderError:
    """The cloudstate error for a botocore one (``IncorrectInstanceState``, ``InvalidAMIID.*``,
    ``InvalidParameterValue`` and every other unlisted code are permanent)."""
    if isinstance(exc, ClientError):
        return _client_error(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ProviderAuthError(str(exc), code=type(exc).__name__)
    if isinstance(exc, ParamValidationError):
        return ProviderPermanentError(str(exc), code="ParamValidationError")
    # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError,
    # ResponseParserError, ...: the request did not get a readable answer.
    return ProviderUnavailableError(str(exc) or type(exc).__name__, code=type(exc).__name__)


def _client_error(exc: ClientError) -> ProviderError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or code or "EC2 refused the request"
    for codes, kind in _BY_CODE:
        if code in codes:
            return kind(message, code=code)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if status >= 500:
        return ProviderUnavailableError(message, code=code or f"HTTP {status}")
    if status == 429:
        return ProviderThrottledError(message, code=code or "HTTP 429")
    return ProviderPermanentError(message, code=code)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def call(run: Callable[[], T]) -> T:
    """Run one boto3 call, translating whatever botocore raises."""
    try:
        return run()
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc) from exc
