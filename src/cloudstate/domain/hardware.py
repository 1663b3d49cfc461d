"""Hardware profiles and the override rules (Deltacloud's, which callers already know).

A profile describes each property (memory in MiB, cpu count, storage in GiB) as one of:

* **fixed**: the value is what you get; an override is ignored (fixed wins);
* **range**: an override is clamped into ``[first, last]``;
* **enum**: an override picks the smallest listed value that is ≥ the request;
  a request above every listed value is impossible.

An override for a property the profile does not describe, a non-positive override, or an
impossible enum request is a ``HardwareProfileError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cloudstate.exceptions import FieldError, HardwareProfileError

PROPERTIES: tuple[str, ...] = ("memory", "cpu", "storage")


class PropertyKind(StrEnum):
    FIXED = "fixed"
    RANGE = "range"
    ENUM = "enum"


@dataclass(frozen=True)
class ProfileProperty:
    """One property of a profile. Build it with ``fixed``, ``range`` or ``enum``."""

    kind: PropertyKind
    default: int
    first: int = 0
    last: int = 0
    values: tuple[int, ...] = ()

    @classmethod
    def fixed(cls, value: int) -> ProfileProperty:
        return cls(PropertyKind.FIXED, value, value, value, (value,))

    @classmethod
    def range(cls, first: int, last: int, default: int | None = None) -> ProfileProperty:
        if not 0 < first <= last:
            raise ValueError(f"range needs 0 < first <= last, got {first}..{last}")
        chosen = first if default is None else default
        if not first <= chosen <= last:
            raise ValueError(f"default {chosen} outside {first}..{last}")
        return cls(PropertyKind.RANGE, chosen, first, last)

    @classmethod
    def enum(cls, values: tuple[int, ...], default: int | None = None) -> ProfileProperty:
        ordered = tuple(sorted(set(values)))
        if not ordered or ordered[0] <= 0:
            raise ValueError(f"enum needs positive values, got {values}")
        chosen = ordered[0] if default is None else default
        if chosen not in ordered:
            raise ValueError(f"default {chosen} not among {ordered}")
        return cls(PropertyKind.ENUM, chosen, ordered[0], ordered[-1], ordered)

    def resolve(self, requested: int | None) -> int | None:
        """The value granted for ``requested``; None means impossible."""
        if requested is None or self.kind is PropertyKind.FIXED:
            return self.default
        if self.kind is PropertyKind.RANGE:
            return min(max(requested, self.first), self.last)
        return next((value for value in self.values if value >= requested), None)

    def describe(self) -> str:
        if self.kind is PropertyKind.FIXED:
            return f"fixed {self.default}"
        if self.kind is PropertyKind.RANGE:
            return f"range {self.first}..{self.last}"
        return "one of " + ", ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class HardwareProfile:
    """A provider's hardware profile (instance type, flavour, size)."""

    id: str
    properties: Mapping[str, ProfileProperty] = field(default_factory=dict)

    def resolve(self, overrides: Mapping[str, int | None] | None = None) -> ResolvedHardware:
        """Apply the override rules; raise ``HardwareProfileError`` listing every bad field."""
        requested = {k: v for k, v in (overrides or {}).items() if v is not None}
        errors = [
            FieldError(name, f"hardware profile {self.id!r} has no {name} to override")
            for name in requested
            if name not in self.properties
        ]
        errors += [
            FieldError(name, f"must be a positive integer, got {value}")
            for name, value in requested.items()
            if name in self.properties and value <= 0
        ]
        granted: dict[str, int] = {}
        for name, prop in self.properties.items():
            value = prop.resolve(requested.get(name))
            if value is None:
                errors.append(
                    FieldError(
                        name,
                        f"{requested[name]} exceeds what profile {self.id!r} offers "
                        f"({prop.describe()})",
                    )
                )
            else:
                granted[name] = value
        if errors:
            raise HardwareProfileError(errors)
        return ResolvedHardware(
            self.id, granted.get("memory"), granted.get("cpu"), granted.get("storage")
        )


@dataclass(frozen=True)
class ResolvedHardware:
    """What an instance will actually get, after the override rules."""

    profile: str
    memory: int | None = None
    cpu: int | None = None
    storage: int | None = None

    def as_dict(self) -> dict[str, int]:
        pairs = {"memory": self.memory, "cpu": self.cpu, "storage": self.storage}
        return {name: value for name, value in pairs.items() if value is not None}
