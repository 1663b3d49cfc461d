"""Libcloud's (and its transports') errors → cloudstate's ``ProviderError`` tree.

Libcloud drivers raise its ``common.types`` errors, ``BaseHTTPError`` subclasses, the HTTP
library's own (``requests``), plain ``OSError``s, and, for libvirt, ``libvirt.libvirtError``.
Anything else a driver raises is still a provider's refusal from our side of the seam: it is
reported as a ``ProviderPermanentError`` with the driver's words, never let through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import (
    InvalidCredsError,
    LibcloudError,
    ServiceUnavailableError,
)
from libcloud.common.types import ProviderError as LibcloudProviderError
from requests.exceptions import RequestException

from cloudstate.exceptions import (
    ActionNotSupportedError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
)

T = TypeVar("T")
log = logging.getLogger("cloudstate.providers.libcloud")

# libvirt's virErrorNumber values (stable across versions; libvirt may not be installed).
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_AUTH_FAILED = 45
VIR_UNAVAILABLE = frozenset({1, 38, 39, 68})  # internal, system (I/O), RPC, timeout


def call(operation: Callable[[], T]) -> T:
    """Run one Libcloud call, translating whatever it raises."""
    try:
        return operation()
    except ProviderError:
        raise
    except Exception as exc:
        raise translate(exc) from exc


def translate(exc: BaseException) -> ProviderError:
    """The ``ProviderError`` for one foreign exception (the caller raises it ``from exc``)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, NotImplementedError):  # the driver lacks this feature
        return ActionNotSupportedError(message, code="NotImplemented")
    if isinstance(exc, InvalidCredsError):
        return ProviderAuthError(message, code="InvalidCreds")
    if isinstance(exc, RateLimitReachedError):
        return ProviderThrottledError(message, code="RateLimitReached")
    if isinstance(exc, ServiceUnavailableError):
        return ProviderUnavailableError(message, code="ServiceUnavailable")
    status = _http_status(exc)
    if status is not None:
        return _by_status(status, message)
    if isinstance(exc, RequestException | OSError | TimeoutError):
        return ProviderUnavailableError(message, code=type(exc).__name__)
    if type(exc).__name__ == "libvirtError":
        return _libvirt(exc, message)
    if not isinstance(exc, LibcloudError):
        log.warning("libcloud driver raised %s; reported as permanent", type(exc).__name__)
    return ProviderPermanentError(message)


def _http_status(exc: BaseException) -> int | None:
    if isinstance(exc, LibcloudProviderError):
        return int(exc.http_code)
    if isinstance(exc, BaseHTTPError):
        return int(exc.code)
    return None


def _by_status(status: int, message: str) -> ProviderError:
    code = f"HTTP{status}"
    if status == 429:
        return ProviderThrottledError(message, code=code)
    if status >= 500:
        return ProviderUnavailableError(message, code=code)
    if status in (401, 403):
        return ProviderAuthError(message, code=code)
    if status == 404:
        return ProviderNotFoundError(message, code=code)
    return ProviderPermanentError(message, code=code)


def _libvirt(exc: BaseException, message: str) -> ProviderError:
    get_code = getattr(exc, "get_error_code", None)
    number = get_code() if callable(get_code) else None
    code = f"libvirt:{number}"
    if number == VIR_ERR_NO_DOMAIN:
        return ProviderNotFoundError(message, code=code)
    if number == VIR_ERR_AUTH_FAILED:
        return ProviderAuthError(message, code=code)
    if number in VIR_UNAVAILABLE:
        return ProviderUnavailableError(message, code=code)
    return ProviderPermanentError(message, code=code)
