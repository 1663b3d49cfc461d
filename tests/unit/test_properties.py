"""Properties of the pure code, over generated input: the domain and the providers' mappings.

Single rules have example tests beside their modules (``test_orders``, ``test_hardware``,
``test_states``); these state what must hold for *any* input: caller input can only fail as a
``ValidationError``, hardware rules hold property by property at once, the state machine agrees
with itself, observing is idempotent, and a provider's answer of the right types always maps to
a known state.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudstate.domain.hardware import PROPERTIES, HardwareProfile, ProfileProperty, PropertyKind
from cloudstate.domain.observations import (
    Observation,
    Snapshot,
    confirmed_gone,
    observe,
    unobservable,
)
from cloudstate.domain.orders import resolve_order
from cloudstate.domain.states import (
    EFFECTS,
    FINAL,
    TRANSITIONS,
    Action,
    InstanceState,
    Operation,
    UnknownReason,
    allowed_actions,
    check_action,
    operation_done,
)
from cloudstate.domain.validation import unstorable
from cloudstate.exceptions import ActionNotAllowedError, HardwareProfileError, ValidationError
from cloudstate.providers.base import TAG_UUID, TAG_UUID_ALT
from cloudstate.providers.ec2 import mapping as ec2
from cloudstate.providers.libcloud import mapping as libcloud

FAST = settings(max_examples=150, deadline=None)

# --- orders ----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["prod", "img", "small", "partial", str(uuid.UUID(int=1))]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
"""Any JSON-like value, with some of the strings an order's fields want."""
FIELDS = [
    "id",
    "account",
    "accounts",
    "image",
    "hardware_profile",
    "memory",
    "cpu",
    "storage",
    "keyname",
    "realm",
    "user_data",
    "labels",
    "policy",
    "credentials",
    "credentials_ttl",
    "launch_timeout",
    "max_attempts",
]
INSTANCE = st.dictionaries(
    st.sampled_from([*FIELDS, "uuid", "name", "after"]),
    JSON | st.uuids().map(str),
    max_size=6,
)
ORDER = st.fixed_dictionaries(
    {"instances": st.lists(INSTANCE, max_size=4) | JSON},
    optional={name: JSON for name in FIELDS},
)
"""An order's shape with any values: closer to valid than arbitrary JSON, so it goes deeper."""
NEARLY_VALID = st.fixed_dictionaries(
    {
        "account": st.just("prod"),
        "image": st.just("ami-1"),
        "hardware_profile": st.just("m1.small"),
        "instances": st.lists(
            st.fixed_dictionaries(
                {"uuid": st.uuids().map(str)},
                optional={
                    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True),
                    "user_data": st.text(max_size=40),
                    "labels": st.dictionaries(
                        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), st.text(max_size=8)
                    ),
                    "memory": st.integers(-2, 10**6),
                    "after": st.lists(st.uuids().map(str), max_size=2),
                    "accounts": st.lists(st.sampled_from(["prod", "spare", "Bad"]), max_size=3),
                },
            ),
            min_size=1,
            max_size=4,
        ),
    },
    optional={"policy": st.sampled_from(["partial", "all_or_nothing", "most"])},
)
"""A valid order with generated extras, some of them wrong: both outcomes happen."""


@FAST
@given(data=JSON | ORDER | NEARLY_VALID)
def test_resolving_any_order_either_succeeds_or_raises_a_validation_error_naming_fields(
    data: Any,
) -> None:
    """Whatever JSON-like value arrives, ``resolve_order`` returns an order or raises
    ``ValidationError`` with at least one error, each naming a field and saying why."""
    try:
        order = resolve_order(data)
    except ValidationError as exc:
        errors = exc.errors
    else:
        errors = []
    if errors or not isinstance(data, dict):
        assert errors
        assert all(isinstance(e.field, str) and e.message for e in errors)
        return
    uuids = [spec.uuid for spec in order.instances]
    assert order.instances
    assert len(set(uuids)) == len(uuids)
    assert all(spec.account and spec.image and spec.hardware_profile for spec in order.instances)


# --- hardware --------------------------------------------------------------------------------

POSITIVE = st.integers(min_value=1, max_value=10**6)
PROPERTY = st.one_of(
    POSITIVE.map(ProfileProperty.fixed),
    st.tuples(POSITIVE, POSITIVE).map(sorted).map(lambda b: ProfileProperty.range(b[0], b[1])),
    st.sets(POSITIVE, min_size=1, max_size=6).map(lambda v: ProfileProperty.enum(tuple(v))),
)
PROFILE = st.dictionaries(st.sampled_from(PROPERTIES), PROPERTY).map(
    lambda properties: HardwareProfile("p", properties)
)
OVERRIDES = st.dictionaries(
    st.sampled_from([*PROPERTIES, "gpu"]),
    st.none() | st.integers(min_value=-(10**9), max_value=10**9),
)


@FAST
@given(profile=PROFILE, overrides=OVERRIDES)
def test_hardware_overrides_follow_each_propertys_rule_or_name_every_impossible_field(
    profile: HardwareProfile, overrides: dict[str, int | None]
) -> None:
    """Any profile mixing fixed, range and enum properties, any overrides: the bad fields
    (a property the profile lacks, a non-positive value, an enum request above every value)
    are exactly the ones the error names; without any, each property follows its rule: fixed
    wins, a range clamps, an enum picks the smallest value at least the request."""
    given_ = {name: value for name, value in overrides.items() if value is not None}
    bad = {
        name
        for name, value in given_.items()
        if name not in profile.properties
        or value <= 0
        or (
            profile.properties[name].kind is PropertyKind.ENUM
            and value > profile.properties[name].last
        )
    }
    if bad:
        with pytest.raises(HardwareProfileError) as caught:
            profile.resolve(overrides)
        assert {error.field for error in caught.value.errors} == bad
        return
    granted = profile.resolve(overrides).as_dict()
    assert set(granted) == set(profile.properties)
    for name, prop in profile.properties.items():
        assert granted[name] == _expected(prop, given_.get(name))


def _expected(prop: ProfileProperty, requested: int | None) -> int:
    if requested is None or prop.kind is PropertyKind.FIXED:
        return prop.default
    if prop.kind is PropertyKind.RANGE:
        return min(max(requested, prop.first), prop.last)
    return min(value for value in prop.values if value >= requested)


# --- the state machine -----------------------------------------------------------------------


@given(
    state=st.sampled_from(InstanceState),
    operation=st.none() | st.sampled_from(Operation),
    action=st.sampled_from(Action),
)
def test_an_allowed_action_aims_where_the_lifecycle_can_go_and_a_refusal_lists_the_rest(
    state: InstanceState, operation: Operation | None, action: Action
) -> None:
    """An action allowed in a state aims at that state or one the lifecycle graph lets it
    reach, and reaching its target finishes its operation; a refused one lists exactly the
    allowed actions. Every state but the final one may be destroyed; the final one allows
    nothing."""
    allowed = allowed_actions(state, operation)
    if state in FINAL:
        assert allowed == ()
    elif operation is not Operation.DESTROYING:
        assert Action.DESTROY in allowed
    if action not in allowed:
        with pytest.raises(ActionNotAllowedError) as caught:
            check_action(action, state, operation)
        assert caught.value.allowed == tuple(str(a) for a in allowed)
        return
    effect = check_action(action, state, operation)
    assert effect == EFFECTS[action]
    assert effect.target == state or effect.target in TRANSITIONS[state]
    assert operation_done(effect.operation, effect.target) is True


# --- observations ----------------------------------------------------------------------------

ADDRESSES = st.lists(st.sampled_from(["203.0.113.1", "10.0.0.1", "2001:db8::1"]), max_size=2).map(
    tuple
)
SNAPSHOT = st.builds(
    Snapshot,
    state=st.sampled_from(InstanceState),
    raw_state=st.text(max_size=8),
    reason=st.sampled_from(["", *UnknownReason]),
    operation=st.none() | st.sampled_from(Operation),
    public_addresses=ADDRESSES,
    private_addresses=ADDRESSES,
    key_fingerprint=st.none() | st.sampled_from(["SHA256:a", "SHA256:b"]),
)
OBSERVATION = st.builds(
    Observation,
    uuid=st.uuids(),
    provider_id=st.text(min_size=1, max_size=8),
    state=st.sampled_from(InstanceState),
    raw_state=st.text(max_size=8),
    public_addresses=ADDRESSES,
    private_addresses=ADDRESSES,
    key_fingerprint=st.none() | st.sampled_from(["SHA256:a", "SHA256:b"]),
)


@FAST
@given(current=SNAPSHOT, seen=OBSERVATION)
def test_observing_the_same_listing_twice_changes_nothing_the_second_time(
    current: Snapshot, seen: Observation
) -> None:
    """After one observation the instance is in the observed state with the observed
    addresses; observing the same thing again yields the same snapshot and no change."""
    after, _ = observe(current, seen)
    assert after.state == seen.state
    assert (after.public_addresses, after.private_addresses) == (
        seen.public_addresses,
        seen.private_addresses,
    )
    again, changes = observe(after, seen)
    assert (again, changes) == (after, [])


@FAST
@given(current=SNAPSHOT, reason=st.sampled_from(UnknownReason))
def test_losing_sight_of_an_instance_or_seeing_it_gone_twice_changes_nothing_the_second_time(
    current: Snapshot, reason: UnknownReason
) -> None:
    """``unobservable`` and ``confirmed_gone`` are idempotent too: the second call of either
    returns the snapshot unchanged, with no change to record."""
    for judge in (lambda s: unobservable(s, reason), confirmed_gone):
        after, _ = judge(current)
        assert judge(after) == (after, [])


# --- providers' answers ----------------------------------------------------------------------

TEXT = st.text(max_size=20)
EC2_STATE_NAMES = st.sampled_from([*ec2.STATE_MAP, "rebooting", "Running", ""]) | TEXT
TAGS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "Key": st.sampled_from([TAG_UUID, "Name", "role"]) | TEXT,
            "Value": st.uuids().map(str) | TEXT,
        },
    ),
    max_size=4,
)
EC2_INSTANCE = st.fixed_dictionaries(
    {},
    optional={
        "InstanceId": TEXT,
        "State": st.fixed_dictionaries(
            {}, optional={"Name": EC2_STATE_NAMES, "Code": st.integers(0, 255)}
        ),
        "Tags": TAGS,
        "PublicIpAddress": TEXT,
        "PrivateIpAddress": TEXT,
        "NetworkInterfaces": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "Ipv6Addresses": st.lists(
                        st.fixed_dictionaries({}, optional={"Ipv6Address": TEXT}), max_size=2
                    )
                },
            ),
            max_size=2,
        ),
        "KeyName": TEXT,
        "Placement": st.fixed_dictionaries({}, optional={"AvailabilityZone": TEXT}),
        "ImageId": TEXT,
        "InstanceType": TEXT,
        "LaunchTime": st.datetimes(timezones=st.just(UTC)),
    },
)


@FAST
@given(raw=EC2_INSTANCE)
def test_any_describe_instances_entry_maps_to_a_known_state_without_crashing(
    raw: dict[str, Any],
) -> None:
    """A DescribeInstances entry with any subset of its fields, of the right types: the
    instance maps, its state is the table's for a known name and ``unknown`` for any other,
    and our UUID is read only from a tag that holds one."""
    instance = ec2.to_instance(raw)  # type: ignore[arg-type]
    name = raw.get("State", {}).get("Name", "")
    assert instance.state == ec2.STATE_MAP.get(name.lower(), InstanceState.UNKNOWN)
    assert instance.raw_state == (name or "unknown")
    tags = {tag["Key"]: tag.get("Value") for tag in raw.get("Tags", []) if "Key" in tag}
    if instance.uuid is not None:
        assert uuid.UUID(tags[TAG_UUID]) == instance.uuid


EC2_TYPE = st.fixed_dictionaries(
    {},
    optional={
        "InstanceType": TEXT,
        "MemoryInfo": st.fixed_dictionaries({}, optional={"SizeInMiB": st.integers(0, 10**7)}),
        "VCpuInfo": st.fixed_dictionaries({}, optional={"DefaultVCpus": st.integers(0, 512)}),
        "InstanceStorageInfo": st.fixed_dictionaries(
            {}, optional={"TotalSizeInGB": st.integers(0, 10**6)}
        ),
    },
)


@FAST
@given(raw=EC2_TYPE)
def test_any_instance_type_maps_to_a_profile_of_fixed_positive_properties(
    raw: dict[str, Any],
) -> None:
    """DescribeInstanceTypes entries with any subset of their fields: a profile whose every
    property is fixed and positive."""
    profile = ec2.to_profile(raw)  # type: ignore[arg-type]
    assert all(p.kind is PropertyKind.FIXED and p.default > 0 for p in profile.properties.values())


ANYTHING = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
LIBCLOUD_EXTRA = st.dictionaries(
    st.sampled_from(["metadata", "tags", "vcpus", "cpu", "cpus"]) | TEXT,
    ANYTHING
    | st.dictionaries(st.sampled_from([TAG_UUID, TAG_UUID_ALT, "items"]) | TEXT, ANYTHING)
    | st.fixed_dictionaries(
        {
            "items": st.lists(
                st.dictionaries(st.sampled_from(["key", "value"]), st.uuids().map(str) | TEXT)
            )
        }
    ),
    max_size=3,
)
NODE = st.builds(
    SimpleNamespace,
    state=st.none() | st.sampled_from([*libcloud.STATE_MAP, "migrating"]) | TEXT,
    name=st.none() | TEXT | st.uuids().map(lambda u: f"web{libcloud.NAME_MARK}{u}"),
    extra=LIBCLOUD_EXTRA | ANYTHING,
    public_ips=st.none() | st.lists(TEXT, max_size=2),
    private_ips=st.none() | st.lists(TEXT, max_size=2),
    image=st.none() | TEXT,
    size=st.none() | TEXT,
    created_at=st.none() | st.datetimes(),
)


@FAST
@given(node=NODE)
def test_any_libcloud_node_maps_to_a_known_state_without_crashing(node: SimpleNamespace) -> None:
    """A libcloud node with any state string (or none), any ``extra``, name and addresses:
    our UUID is found or not, without an error, and the state is the table's or ``unknown``."""
    found = libcloud.uuid_of(node)
    instance = libcloud.to_instance(node, "node-1", found)
    raw = str(node.state or "unknown")
    assert instance.state == libcloud.STATE_MAP.get(raw.lower(), InstanceState.UNKNOWN)
    assert instance.uuid == found


@FAST
@given(
    size=st.builds(
        SimpleNamespace, id=TEXT, ram=ANYTHING, disk=ANYTHING, extra=LIBCLOUD_EXTRA | ANYTHING
    )
)
def test_any_libcloud_size_maps_to_a_profile_of_fixed_positive_properties(
    size: SimpleNamespace,
) -> None:
    """Sizes whose RAM, disk and vCPUs are anything at all (None, text, negative, NaN):
    a profile holding only the positive integers among them, each fixed."""
    profile = libcloud.to_profile(size)
    assert all(p.kind is PropertyKind.FIXED and p.default > 0 for p in profile.properties.values())


# --- what the API refuses to store -----------------------------------------------------------


@FAST
@given(value=JSON)
def test_unstorable_names_exactly_the_nul_strings_and_non_finite_numbers(value: Any) -> None:
    """``unstorable`` (the API's guard for what no database here can store) finds a NUL or a
    non-finite number somewhere in a JSON-like value exactly when there is one, each error
    naming a path into the value."""
    errors = unstorable(value, "")
    assert bool(errors) == _holds_unstorable(value)
    assert all(error.field for error in errors)


def _holds_unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return any(_holds_unstorable(item) for item in value)
    if isinstance(value, dict):
        return any("\x00" in key or _holds_unstorable(item) for key, item in value.items())
    return False


def test_a_moment_pushed_past_the_calendar_by_its_time_zone_is_a_validation_error() -> None:
    """``UtcDatetime`` turns the ``OverflowError`` of converting year 1 or 9999 with an
    extreme offset into a validation error (it was a 500 on ``credentials_expire_at``)."""
    from pydantic import TypeAdapter
    from pydantic import ValidationError as PydanticError

    from cloudstate.domain.validation import UtcDatetime

    adapter = TypeAdapter(UtcDatetime)
    for text in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        with pytest.raises(PydanticError, match="out of range once converted to UTC"):
            adapter.validate_python(text)
    assert adapter.validate_python("2030-01-01T02:00:00+02:00") == datetime(2030, 1, 1, tzinfo=UTC)
