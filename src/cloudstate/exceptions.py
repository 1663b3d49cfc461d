"""Every error cloudstate raises, in one tree.

Callers catch ``CloudStateError`` for "anything from cloudstate", or a narrower class for a
decision. Foreign errors (SQLAlchemy, boto3, libcloud, aiohttp) are translated at the seam that
meets them, with ``raise ... from exc``, so nothing outside this tree escapes a public call::

    CloudStateError
    ├── ConfigurationError          a setting is missing or invalid (names the setting)
    ├── ValidationError             caller input is wrong (lists every bad field)
    │   └── HardwareProfileError    an override no profile can satisfy
    ├── NotFoundError               an id names nothing
    ├── ConflictError               the request clashes with what exists
    │   ├── AlreadyExistsError      a caller-chosen id or name is taken
    │   ├── ActionNotAllowedError   the instance's state forbids the action (lists allowed ones)
    │   └── ConcurrentUpdateError   another writer changed the row first (reload, try again)
    ├── WaitTimeoutError            a wait for a target state ran out of time
    ├── AuthenticationError         the API refused the token (401) or its scope (403)
    ├── CursorExpiredError          an event cursor older than the retained events (410)
    ├── ServerError                 the API answered a status the client does not map
    ├── UnreachableError            no answer from the API (refused, DNS, timeout)
    ├── CryptoError                 stored secret cannot be decrypted with any configured key
    ├── StoreError                  the database failed or is not at the expected migration
    ├── LeaseLostError              a worker's lease on an account expired and was taken over
    └── ProviderError               a cloud call failed (see ``retryable``)
        ├── ProviderThrottledError  the provider asked us to slow down            retryable
        ├── ProviderUnavailableError the provider cannot be reached / 5xx / timeout retryable
        ├── ProviderNotFoundError   the provider does not know the resource
        ├── ProviderAuthError       credentials rejected or expired
        ├── ProviderCapacityError   no capacity / quota for this launch (fail over)
        ├── ActionNotSupportedError the driver cannot do this action at all
        └── ProviderPermanentError  any other refusal (bad image, bad profile, ...)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class CloudStateError(Exception):
    """Root of every error cloudstate raises."""


class ConfigurationError(CloudStateError):
    """A setting is missing or invalid; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


@dataclass(frozen=True)
class FieldError:
    """One bad field: a dotted path into the input (``instances.3.user_data``) and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationError(CloudStateError):
    """Caller input is wrong. ``errors`` lists every bad field, not just the first."""

    def __init__(self, errors: Iterable[FieldError] | str, *, field: str = "") -> None:
        if isinstance(errors, str):
            errors = [FieldError(field, errors)]
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(str(error) for error in self.errors) or "invalid input")


class HardwareProfileError(ValidationError):
    """A memory/cpu/storage override that the hardware profile cannot satisfy."""


class NotFoundError(CloudStateError):
    """An id or name that names nothing."""

    def __init__(self, kind: str, key: object) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!s} not found")


class ConflictError(CloudStateError):
    """The request is well-formed but clashes with what exists."""


class AlreadyExistsError(ConflictError):
    """A caller-chosen id or name is already taken."""

    def __init__(self, kind: str, key: object) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!s} already exists")


class ActionNotAllowedError(ConflictError):
    """The instance's current state forbids the action; ``allowed`` says what it permits."""

    def __init__(self, action: str, state: str, allowed: Sequence[str], subject: str = "") -> None:
        self.action = action
        self.state = state
        self.allowed = tuple(allowed)
        who = f"instance {subject} is " if subject else ""
        options = ", ".join(self.allowed) if self.allowed else "none"
        super().__init__(f"cannot {action}: {who}{state}; allowed actions: {options}")


class WaitTimeoutError(CloudStateError):
    """A wait for instances to reach a state ran out of time (the work goes on)."""


class ConcurrentUpdateError(ConflictError):
    """Another writer changed the same row first; the caller may reload and try again."""


class CryptoError(CloudStateError):
    """A stored secret could not be decrypted with any configured key."""


class StoreError(CloudStateError):
    """The database failed, or its schema is not at the migration this code expects."""


class LeaseLostError(CloudStateError):
    """A worker's lease on an account ran out (another worker may hold it now): the write it
    fenced was not made, and the worker must stop working on that account."""

    def __init__(self, account_id: int, worker: str) -> None:
        self.account_id = account_id
        self.worker = worker
        super().__init__(f"account {account_id}: {worker} no longer holds its lease")


class ProviderError(CloudStateError):
    """A call to a cloud provider failed.

    ``retryable`` tells the engine whether trying again later can succeed; ``reason`` is the
    provider's own words, kept for the instance's ``last_error``.
    """

    retryable = False

    def __init__(self, reason: str, *, code: str = "") -> None:
        self.reason = reason
        self.code = code
        super().__init__(f"{code}: {reason}" if code else reason)


class ProviderThrottledError(ProviderError):
    """The provider asked us to slow down (HTTP 429, RequestLimitExceeded, ...)."""

    retryable = True


class ProviderUnavailableError(ProviderError):
    """The provider could not be reached, timed out, or answered 5xx."""

    retryable = True


class ProviderNotFoundError(ProviderError):
    """The provider does not know the instance, image or other resource."""


class ProviderAuthError(ProviderError):
    """Credentials were rejected or have expired."""


class ProviderCapacityError(ProviderError):
    """No capacity or quota for this launch here; another account may succeed."""


class ActionNotSupportedError(ProviderError):
    """The driver cannot perform this action at all (for example stop on some clouds)."""


class ProviderPermanentError(ProviderError):
    """Any other refusal that retrying will not fix (bad image, unknown profile, ...)."""


class AuthenticationError(CloudStateError):
    """The server refused the token: missing, unknown, revoked (401) or lacking a scope (403)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        hint = "" if status == 403 else " (set CLOUDSTATE_TOKEN, or pass --token)"
        super().__init__(f"{detail}{hint}")


class CursorExpiredError(CloudStateError):
    """The event cursor is older than the retained events: re-list current state, start over."""


class ServerError(CloudStateError):
    """The server answered with a status this client does not map (5xx, mostly)."""

    def __init__(self, status: int, title: str, detail: str = "") -> None:
        self.status = status
        self.title = title
        self.detail = detail
        super().__init__(f"HTTP {status} {title}" + (f": {detail}" if detail else ""))


class UnreachableError(CloudStateError):
    """No answer from the server: connection refused, name not resolved, timeout, reset."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach cloudstate at {url}: {reason}")
