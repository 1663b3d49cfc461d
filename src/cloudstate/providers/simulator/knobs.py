"""The simulator's knobs: timings, failure injection, throttling, capacity.

Knobs live in the cloud's own SQLite file (as JSON), so every process sharing the cloud sees
the same ones and any of them can change them at run time (``SimulatedCloud.configure``).
A ``SimulatorKnobs`` is always valid: construction checks every field and raises one
``ValidationError`` listing every bad one, including names that are not knobs at all.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cloudstate.exceptions import FieldError, ValidationError

CALL_NAMES: tuple[str, ...] = (
    "create_many",
    "list_page",
    "act",
    "list_realms",
    "list_images",
    "list_hardware_profiles",
)
"""The driver calls; ``call_failure_rates`` and the call counters are keyed by these names."""

_SECONDS = (
    "boot_seconds",
    "stop_seconds",
    "reboot_seconds",
    "shutdown_seconds",
    "terminated_retention_seconds",
    "visibility_delay_seconds",
    "latency_seconds",
)
_RATES = ("launch_failure_rate", "lost_response_rate")
_FLAGS = ("unreachable", "honor_client_token")


@dataclass(frozen=True)
class SimulatorKnobs:
    """Everything a test can turn. Defaults are a slow, well-behaved cloud; see ``fast()``."""

    boot_seconds: float = 3.0  # pending → running
    stop_seconds: float = 2.0  # stopping → stopped
    reboot_seconds: float = 2.0  # rebooting → running
    shutdown_seconds: float = 2.0  # shutting-down → terminated
    terminated_retention_seconds: float = 60.0  # listed as terminated this long, then gone
    visibility_delay_seconds: float = 1.0  # a new instance is absent from listings this long
    page_size: int = 100
    latency_seconds: float = 0.0  # added to every driver call
    call_failure_rates: Mapping[str, float] = field(default_factory=dict)  # call → probability
    launch_failure_rate: float = 0.0  # per instance in create_many
    lost_response_rate: float = 0.0  # create_many/act happen, but the caller gets an error
    throttle_rate: float | None = None  # tokens per second per namespace; None = unlimited
    throttle_burst: int = 10
    unreachable: bool = False
    rejected_namespaces: tuple[str, ...] = ()  # their credentials are refused (ProviderAuthError)
    capacity: int | None = None  # live instances per namespace; None = unlimited
    honor_client_token: bool = True  # a repeated create for a live UUID returns that instance
    seed: int | None = None  # seeds the failure dice, so a test is repeatable

    def __post_init__(self) -> None:
        errors = _check(self)
        if errors:
            raise ValidationError(errors)
        object.__setattr__(
            self, "call_failure_rates", MappingProxyType(dict(self.call_failure_rates))
        )
        object.__setattr__(self, "rejected_namespaces", tuple(self.rejected_namespaces))

    @classmethod
    def fast(cls, **changes: Any) -> SimulatorKnobs:
        """Timings for tests: every transition takes 50 ms and new instances are visible at once."""
        return cls.from_mapping(
            {
                "boot_seconds": 0.05,
                "stop_seconds": 0.05,
                "reboot_seconds": 0.05,
                "shutdown_seconds": 0.05,
                "terminated_retention_seconds": 0.5,
                "visibility_delay_seconds": 0.0,
                **changes,
            }
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SimulatorKnobs:
        """Build knobs from names and values; an unknown name is a ``ValidationError``."""
        unknown = sorted(set(values) - set(knob_names()))
        if unknown:
            raise ValidationError(
                [
                    FieldError(name, f"unknown simulator knob; knobs: {', '.join(knob_names())}")
                    for name in unknown
                ]
            )
        return cls(**values)

    def replace(self, **changes: Any) -> SimulatorKnobs:
        """These knobs with some changed; checked like a new construction."""
        return SimulatorKnobs.from_mapping({**self.as_dict(), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready): the rates as a dict, the namespaces as a list."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["call_failure_rates"] = dict(self.call_failure_rates)
        values["rejected_namespaces"] = list(self.rejected_namespaces)
        return values

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimulatorKnobs:
        return cls.from_mapping(json.loads(text))


def knob_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(SimulatorKnobs))


def _check(knobs: SimulatorKnobs) -> list[FieldError]:
    errors = [_check_seconds(name, getattr(knobs, name)) for name in _SECONDS]
    errors += [_check_rate(name, getattr(knobs, name)) for name in _RATES]
    errors += [_check_flag(name, getattr(knobs, name)) for name in _FLAGS]
    errors += _check_failure_rates(knobs.call_failure_rates)
    errors.append(_check_names("rejected_namespaces", knobs.rejected_namespaces))
    errors.append(_check_int("page_size", knobs.page_size, minimum=1))
    errors.append(_check_int("throttle_burst", knobs.throttle_burst, minimum=1))
    if knobs.capacity is not None:
        errors.append(_check_int("capacity", knobs.capacity, minimum=0))
    if knobs.seed is not None:
        errors.append(_check_int("seed", knobs.seed, minimum=-(2**63)))
    if knobs.throttle_rate is not None:
        errors.append(_check_seconds("throttle_rate", knobs.throttle_rate, positive=True))
    return [error for error in errors if error is not None]


def _as_number(value: object) -> float | None:
    """The value as a finite float, or None when it is not a number (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _check_seconds(name: str, value: object, *, positive: bool = False) -> FieldError | None:
    number = _as_number(value)
    if number is None or number < 0 or (positive and number == 0):
        bound = "a positive" if positive else "a non-negative"
        return FieldError(name, f"must be {bound} number, got {value!r}")
    return None


def _check_rate(name: str, value: object) -> FieldError | None:
    number = _as_number(value)
    if number is None or not 0 <= number <= 1:
        return FieldError(name, f"must be a probability between 0 and 1, got {value!r}")
    return None


def _check_flag(name: str, value: object) -> FieldError | None:
    if not isinstance(value, bool):
        return FieldError(name, f"must be true or false, got {value!r}")
    return None


def _check_int(name: str, value: object, *, minimum: int) -> FieldError | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        return FieldError(name, f"must be an integer ≥ {minimum}, got {value!r}")
    return None


def _check_names(name: str, value: object) -> FieldError | None:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        return FieldError(name, f"must be a list of names, got {value!r}")
    if not all(isinstance(item, str) for item in value):
        return FieldError(name, f"must contain only names, got {value!r}")
    return None


def _check_failure_rates(rates: object) -> list[FieldError]:
    if not isinstance(rates, Mapping):
        return [FieldError("call_failure_rates", f"must be a mapping, got {rates!r}")]
    errors = [
        FieldError(f"call_failure_rates.{name}", f"unknown call; calls: {', '.join(CALL_NAMES)}")
        for name in rates
        if name not in CALL_NAMES
    ]
    errors += [
        error
        for name, rate in rates.items()
        if (error := _check_rate(f"call_failure_rates.{name}", rate)) is not None
    ]
    return errors
