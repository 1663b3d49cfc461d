"""The one exception tree: every error derives from CloudStateError and says what went wrong."""

from __future__ import annotations

import inspect

import pytest

from cloudstate import exceptions
from cloudstate.exceptions import (
    ActionNotAllowedError,
    ActionNotSupportedError,
    AlreadyExistsError,
    AuthenticationError,
    CloudStateError,
    ConcurrentUpdateError,
    ConfigurationError,
    ConflictError,
    CryptoError,
    CursorExpiredError,
    FieldError,
    HardwareProfileError,
    LeaseLostError,
    NotFoundError,
    ProviderAuthError,
    ProviderCapacityError,
    ProviderError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
    ServerError,
    StoreError,
    UnreachableError,
    ValidationError,
    WaitTimeoutError,
)

PARENTS: dict[type[Exception], type[Exception]] = {
    CloudStateError: Exception,
    ConfigurationError: CloudStateError,
    ValidationError: CloudStateError,
    HardwareProfileError: ValidationError,
    NotFoundError: CloudStateError,
    ConflictError: CloudStateError,
    AlreadyExistsError: ConflictError,
    ActionNotAllowedError: ConflictError,
    ConcurrentUpdateError: ConflictError,
    WaitTimeoutError: CloudStateError,
    AuthenticationError: CloudStateError,
    CursorExpiredError: CloudStateError,
    ServerError: CloudStateError,
    UnreachableError: CloudStateError,
    CryptoError: CloudStateError,
    StoreError: CloudStateError,
    LeaseLostError: CloudStateError,
    ProviderError: CloudStateError,
    ProviderThrottledError: ProviderError,
    ProviderUnavailableError: ProviderError,
    ProviderNotFoundError: ProviderError,
    ProviderAuthError: ProviderError,
    ProviderCapacityError: ProviderError,
    ActionNotSupportedError: ProviderError,
    ProviderPermanentError: ProviderError,
}

DEFINED = [
    cls
    for _, cls in inspect.getmembers(exceptions, inspect.isclass)
    if issubclass(cls, Exception) and cls.__module__ == exceptions.__name__
]


def test_the_table_covers_every_error_the_module_defines() -> None:
    assert set(DEFINED) == set(PARENTS)


@pytest.mark.parametrize(("cls", "parent"), PARENTS.items(), ids=lambda c: c.__name__)
def test_each_error_sits_under_its_parent(cls: type[Exception], parent: type[Exception]) -> None:
    assert cls.__bases__ == (parent,)
    assert issubclass(cls, CloudStateError) or cls is CloudStateError


@pytest.mark.parametrize("cls", DEFINED, ids=lambda c: c.__name__)
def test_the_module_docstring_draws_every_error(cls: type[Exception]) -> None:
    assert cls.__name__ in (exceptions.__doc__ or "")


@pytest.mark.parametrize(
    ("cls", "retryable"),
    [
        (ProviderError, False),
        (ProviderThrottledError, True),
        (ProviderUnavailableError, True),
        (ProviderNotFoundError, False),
        (ProviderAuthError, False),
        (ProviderCapacityError, False),
        (ActionNotSupportedError, False),
        (ProviderPermanentError, False),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_only_throttling_and_unavailability_are_retryable(
    cls: type[ProviderError], retryable: bool
) -> None:
    assert cls("x").retryable is retryable


def test_a_provider_error_keeps_the_providers_words_and_code() -> None:
    error = ProviderPermanentError("image not found", code="InvalidAMIID.NotFound")
    assert (error.reason, error.code) == ("image not found", "InvalidAMIID.NotFound")
    assert str(error) == "InvalidAMIID.NotFound: image not found"
    assert str(ProviderError("boom")) == "boom"


def test_a_validation_error_lists_every_field_in_its_message() -> None:
    error = ValidationError(
        [FieldError("instances.3.user_data", "too big"), FieldError("id", "bad")]
    )
    assert error.errors == [FieldError("instances.3.user_data", "too big"), FieldError("id", "bad")]
    assert str(error) == "instances.3.user_data: too big; id: bad"


def test_a_validation_error_from_a_string_names_its_field() -> None:
    error = ValidationError("must be positive", field="memory")
    assert error.errors == [FieldError("memory", "must be positive")]
    assert str(error) == "memory: must be positive"


def test_a_validation_error_without_errors_still_says_something() -> None:
    assert str(ValidationError([])) == "invalid input"


def test_a_hardware_profile_error_is_a_validation_error_with_fields() -> None:
    error = HardwareProfileError([FieldError("cpu", "no")])
    assert isinstance(error, ValidationError)
    assert error.errors == [FieldError("cpu", "no")]


def test_configuration_error_names_the_setting() -> None:
    error = ConfigurationError("CLOUDSTATE_SECRET_KEY", "is a placeholder")
    assert (error.setting, error.problem) == ("CLOUDSTATE_SECRET_KEY", "is a placeholder")
    assert str(error) == "CLOUDSTATE_SECRET_KEY: is a placeholder"


def test_not_found_and_already_exists_name_the_kind_and_key() -> None:
    assert str(NotFoundError("instance", 42)) == "instance 42 not found"
    error = AlreadyExistsError("account", "prod")
    assert (error.kind, error.key) == ("account", "prod")
    assert str(error) == "account prod already exists"


def test_action_not_allowed_lists_the_allowed_actions() -> None:
    error = ActionNotAllowedError("start", "running", ["stop", "destroy"], subject="abc")
    assert (error.action, error.state, error.allowed) == ("start", "running", ("stop", "destroy"))
    assert str(error) == "cannot start: instance abc is running; allowed actions: stop, destroy"
    assert str(ActionNotAllowedError("stop", "terminated", [])) == (
        "cannot stop: terminated; allowed actions: none"
    )
