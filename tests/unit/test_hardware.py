"""Hardware profiles and the Deltacloud override rules: fixed wins, range clamps, enum rounds up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudstate.domain.hardware import (
    HardwareProfile,
    ProfileProperty,
    PropertyKind,
    ResolvedHardware,
)
from cloudstate.exceptions import FieldError, HardwareProfileError, ValidationError


@pytest.fixture
def profile() -> HardwareProfile:
    """memory: enum, cpu: range, storage: fixed. One of each rule."""
    return HardwareProfile(
        "m1.flex",
        {
            "memory": ProfileProperty.enum((512, 1024, 2048, 4096), default=1024),
            "cpu": ProfileProperty.range(2, 16, default=4),
            "storage": ProfileProperty.fixed(20),
        },
    )


def errors_of(caught: pytest.ExceptionInfo[HardwareProfileError]) -> dict[str, str]:
    return {error.field: error.message for error in caught.value.errors}


class TestDefaults:
    @pytest.mark.parametrize("overrides", [None, {}, {"memory": None, "cpu": None}])
    def test_no_overrides_gives_the_defaults(
        self, profile: HardwareProfile, overrides: dict[str, int | None] | None
    ) -> None:
        assert profile.resolve(overrides) == ResolvedHardware("m1.flex", 1024, 4, 20)

    def test_resolve_without_arguments_gives_the_defaults(self, profile: HardwareProfile) -> None:
        assert profile.resolve() == ResolvedHardware("m1.flex", memory=1024, cpu=4, storage=20)

    def test_a_profile_without_properties_resolves_to_nothing(self) -> None:
        assert HardwareProfile("bare").resolve() == ResolvedHardware("bare")
        assert HardwareProfile("bare").resolve().as_dict() == {}

    def test_a_none_override_of_a_missing_property_is_no_override(self) -> None:
        assert HardwareProfile("bare").resolve({"memory": None}) == ResolvedHardware("bare")


class TestFixed:
    @pytest.mark.parametrize("requested", [1, 19, 20, 21, 10_000])
    def test_fixed_wins_and_the_override_is_ignored(
        self, profile: HardwareProfile, requested: int
    ) -> None:
        assert profile.resolve({"storage": requested}).storage == 20


class TestRange:
    @pytest.mark.parametrize(
        ("requested", "granted"),
        [
            (1, 2),  # below: clamped up to first
            (2, 2),  # at first
            (7, 7),  # inside: as asked
            (16, 16),  # at last
            (17, 16),  # above: clamped down to last
            (1_000_000, 16),
        ],
    )
    def test_a_range_clamps_into_first_and_last(
        self, profile: HardwareProfile, requested: int, granted: int
    ) -> None:
        assert profile.resolve({"cpu": requested}).cpu == granted


class TestEnum:
    @pytest.mark.parametrize(
        ("requested", "granted"),
        [
            (1, 512),  # below the smallest: the smallest
            (511, 512),
            (512, 512),  # exact match
            (513, 1024),  # between: the next one up
            (1024, 1024),
            (2000, 2048),
            (4096, 4096),  # the largest, exactly
        ],
    )
    def test_an_enum_picks_the_smallest_value_at_least_the_request(
        self, profile: HardwareProfile, requested: int, granted: int
    ) -> None:
        assert profile.resolve({"memory": requested}).memory == granted

    def test_a_request_above_every_value_is_impossible(self, profile: HardwareProfile) -> None:
        """The error names the field, the request and what the profile offers."""
        with pytest.raises(HardwareProfileError) as caught:
            profile.resolve({"memory": 4097})
        assert caught.value.errors == [
            FieldError(
                "memory",
                "4097 exceeds what profile 'm1.flex' offers (one of 512, 1024, 2048, 4096)",
            )
        ]
        assert str(caught.value) == (
            "memory: 4097 exceeds what profile 'm1.flex' offers (one of 512, 1024, 2048, 4096)"
        )

    def test_an_impossible_request_is_a_validation_error(self, profile: HardwareProfile) -> None:
        """Callers that catch ValidationError (HTTP 422) catch this too."""
        with pytest.raises(ValidationError):
            profile.resolve({"memory": 8192})


class TestBadOverrides:
    def test_overriding_a_property_the_profile_lacks_is_an_error(self) -> None:
        small = HardwareProfile("t.small", {"memory": ProfileProperty.fixed(512)})
        with pytest.raises(HardwareProfileError) as caught:
            small.resolve({"storage": 10})
        assert caught.value.errors == [
            FieldError("storage", "hardware profile 't.small' has no storage to override")
        ]

    def test_overriding_an_unknown_property_is_an_error(self, profile: HardwareProfile) -> None:
        with pytest.raises(HardwareProfileError) as caught:
            profile.resolve({"gpu": 1})
        assert errors_of(caught) == {"gpu": "hardware profile 'm1.flex' has no gpu to override"}

    @pytest.mark.parametrize("field", ["memory", "cpu", "storage"])
    @pytest.mark.parametrize("value", [0, -1])
    def test_a_non_positive_override_is_an_error_for_every_kind(
        self, profile: HardwareProfile, field: str, value: int
    ) -> None:
        """Even a fixed property, whose override would be ignored, refuses a nonsense value."""
        with pytest.raises(HardwareProfileError) as caught:
            profile.resolve({field: value})
        assert errors_of(caught) == {field: f"must be a positive integer, got {value}"}

    def test_several_bad_fields_are_reported_together(self, profile: HardwareProfile) -> None:
        with pytest.raises(HardwareProfileError) as caught:
            profile.resolve({"memory": 9000, "cpu": 0, "gpu": 2})
        assert errors_of(caught) == {
            "memory": "9000 exceeds what profile 'm1.flex' offers (one of 512, 1024, 2048, 4096)",
            "cpu": "must be a positive integer, got 0",
            "gpu": "hardware profile 'm1.flex' has no gpu to override",
        }
        message = str(caught.value)
        for field in ("memory", "cpu", "gpu"):
            assert f"{field}: " in message


class TestProfileProperty:
    def test_fixed_holds_one_value(self) -> None:
        prop = ProfileProperty.fixed(8)
        assert (prop.kind, prop.default, prop.first, prop.last, prop.values) == (
            PropertyKind.FIXED,
            8,
            8,
            8,
            (8,),
        )
        assert prop.describe() == "fixed 8"

    def test_range_defaults_to_first(self) -> None:
        prop = ProfileProperty.range(1, 8)
        assert (prop.kind, prop.default, prop.first, prop.last) == (PropertyKind.RANGE, 1, 1, 8)
        assert prop.describe() == "range 1..8"

    def test_range_keeps_a_given_default(self) -> None:
        assert ProfileProperty.range(1, 8, default=8).default == 8

    def test_a_single_value_range_is_allowed(self) -> None:
        assert ProfileProperty.range(4, 4).resolve(100) == 4

    def test_enum_sorts_and_deduplicates_and_defaults_to_the_smallest(self) -> None:
        prop = ProfileProperty.enum((4, 1, 2, 2))
        assert (prop.kind, prop.values, prop.default, prop.first, prop.last) == (
            PropertyKind.ENUM,
            (1, 2, 4),
            1,
            1,
            4,
        )
        assert prop.describe() == "one of 1, 2, 4"

    @pytest.mark.parametrize(
        ("first", "last", "default", "message"),
        [
            (0, 4, None, "range needs 0 < first <= last, got 0..4"),
            (-2, 4, None, "range needs 0 < first <= last, got -2..4"),
            (5, 4, None, "range needs 0 < first <= last, got 5..4"),
            (1, 4, 5, "default 5 outside 1..4"),
            (2, 4, 1, "default 1 outside 2..4"),
        ],
    )
    def test_range_rejects_bad_bounds_and_defaults(
        self, first: int, last: int, default: int | None, message: str
    ) -> None:
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            ProfileProperty.range(first, last, default)

    @pytest.mark.parametrize(
        ("values", "default", "message"),
        [
            ((), None, r"enum needs positive values, got \(\)"),
            ((0, 1), None, r"enum needs positive values, got \(0, 1\)"),
            ((-4, 8), None, r"enum needs positive values"),
            ((1, 2), 3, r"default 3 not among \(1, 2\)"),
        ],
    )
    def test_enum_rejects_empty_non_positive_values_and_foreign_defaults(
        self, values: tuple[int, ...], default: int | None, message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            ProfileProperty.enum(values, default)


class TestResolvedHardware:
    def test_as_dict_lists_every_granted_property(self) -> None:
        assert ResolvedHardware("p", memory=1024, cpu=2, storage=20).as_dict() == {
            "memory": 1024,
            "cpu": 2,
            "storage": 20,
        }

    def test_as_dict_leaves_out_what_the_profile_does_not_describe(self) -> None:
        assert ResolvedHardware("p", cpu=2).as_dict() == {"cpu": 2}

    def test_a_resolved_profile_round_trips_through_as_dict(self, profile: HardwareProfile) -> None:
        resolved = profile.resolve({"memory": 1500, "cpu": 40})
        assert resolved.profile == "m1.flex"
        assert resolved.as_dict() == {"memory": 2048, "cpu": 16, "storage": 20}


positive = st.integers(min_value=1, max_value=1_000_000)


@given(bounds=st.tuples(positive, positive).map(sorted), requested=positive)
def test_a_range_result_is_always_within_first_and_last(bounds: list[int], requested: int) -> None:
    first, last = bounds
    granted = ProfileProperty.range(first, last).resolve(requested)
    assert granted is not None
    assert first <= granted <= last
    if first <= requested <= last:
        assert granted == requested


@given(values=st.sets(positive, min_size=1, max_size=8), requested=positive)
def test_an_enum_result_is_the_smallest_listed_value_at_least_the_request(
    values: set[int], requested: int
) -> None:
    profile = HardwareProfile("p", {"memory": ProfileProperty.enum(tuple(values))})
    if requested > max(values):
        with pytest.raises(HardwareProfileError) as caught:
            profile.resolve({"memory": requested})
        assert [error.field for error in caught.value.errors] == ["memory"]
        return
    granted = profile.resolve({"memory": requested}).memory
    assert granted in values
    assert granted >= requested
    assert not [value for value in values if requested <= value < granted]


@given(value=positive, requested=positive)
def test_a_fixed_property_always_grants_its_value(value: int, requested: int) -> None:
    profile = HardwareProfile("p", {"cpu": ProfileProperty.fixed(value)})
    assert profile.resolve({"cpu": requested}).cpu == value
