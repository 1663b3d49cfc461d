"""Launch orders and caller-input validation: every problem is reported, each at its dotted path."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from cloudstate.domain.orders import (
    MAX_INSTANCES_PER_ORDER,
    InstanceRequest,
    InstanceSpec,
    LaunchOrderRequest,
    OrderPolicy,
    resolve_order,
)
from cloudstate.domain.validation import MAX_LABELS, MAX_USER_DATA_BYTES, parse
from cloudstate.exceptions import FieldError, ValidationError

REQUIRED_MESSAGE = "required (give it on the instance or the order)"


def uid(n: int) -> str:
    return str(uuid.UUID(int=n))


def order(*instances: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A valid order: account, image and profile on the order; one instance unless given."""
    body: dict[str, Any] = {"account": "prod", "image": "ami-1", "hardware_profile": "m1.small"}
    body.update(fields)
    body["instances"] = list(instances) if instances else [{"uuid": uid(1)}]
    return body


def errors_of(data: Any) -> dict[str, str]:
    """The ``{path: message}`` of the ValidationError that ``resolve_order(data)`` raises."""
    with pytest.raises(ValidationError) as caught:
        resolve_order(data)
    paths = [error.field for error in caught.value.errors]
    assert len(paths) == len(set(paths)), f"one error per field, got {paths}"
    return {error.field: error.message for error in caught.value.errors}


def only_spec(data: dict[str, Any]) -> InstanceSpec:
    (spec,) = resolve_order(data).instances
    return spec


class TestMerging:
    def test_order_defaults_flow_into_every_instance(self) -> None:
        data = order(
            {"uuid": uid(1)},
            {"uuid": uid(2)},
            memory=2048,
            cpu=2,
            storage=40,
            keyname="ops",
            realm="eu-west-1a",
            user_data="#!/bin/sh\necho hi\n",
            labels={"team": "infra"},
        )
        for spec in resolve_order(data).instances:
            assert (spec.account, spec.image, spec.hardware_profile) == (
                "prod",
                "ami-1",
                "m1.small",
            )
            assert spec.overrides == {"memory": 2048, "cpu": 2, "storage": 40}
            assert (spec.keyname, spec.realm) == ("ops", "eu-west-1a")
            assert spec.user_data == "#!/bin/sh\necho hi\n"
            assert spec.labels == {"team": "infra"}

    def test_instance_values_override_the_order_defaults(self) -> None:
        own = {
            "uuid": uid(1),
            "account": "staging",
            "image": "ami-2",
            "hardware_profile": "m1.large",
            "memory": 512,
            "cpu": 8,
            "storage": 10,
            "keyname": "mine",
            "realm": "us-east-1b",
            "user_data": "own",
        }
        data = order(
            own, memory=2048, cpu=2, storage=40, keyname="ops", realm="eu-west-1a", user_data="x"
        )
        spec = only_spec(data)
        assert spec == InstanceSpec(
            uuid=uuid.UUID(uid(1)),
            name=f"cs-{uid(1)[:8]}",
            account="staging",
            image="ami-2",
            hardware_profile="m1.large",
            overrides={"memory": 512, "cpu": 8, "storage": 10},
            keyname="mine",
            realm="us-east-1b",
            user_data="own",
            labels={},
        )

    def test_only_the_given_overrides_are_kept(self) -> None:
        assert only_spec(order({"uuid": uid(1), "cpu": 4})).overrides == {"cpu": 4}
        assert only_spec(order()).overrides == {}

    def test_labels_merge_and_the_instance_wins_per_key(self) -> None:
        data = order(
            {"uuid": uid(1), "labels": {"env": "dev", "role": "web"}},
            labels={"team": "infra", "env": "prod"},
        )
        assert only_spec(data).labels == {"team": "infra", "env": "dev", "role": "web"}

    def test_an_instance_without_a_name_gets_one_from_its_uuid(self) -> None:
        u = "3f2a9c1e-0000-4000-8000-000000000000"
        assert only_spec(order({"uuid": u})).name == "cs-3f2a9c1e"

    def test_a_given_name_is_kept(self) -> None:
        assert only_spec(order({"uuid": uid(1), "name": "web-1"})).name == "web-1"

    def test_the_uuid_is_parsed(self) -> None:
        assert only_spec(order({"uuid": uid(7)})).uuid == uuid.UUID(int=7)

    def test_the_order_lists_its_accounts(self) -> None:
        data = order({"uuid": uid(1)}, {"uuid": uid(2), "account": "backup"}, {"uuid": uid(3)})
        assert resolve_order(data).accounts == {"prod", "backup"}

    def test_instances_keep_their_order(self) -> None:
        data = order(*({"uuid": uid(n)} for n in (3, 1, 2)))
        assert [s.uuid.int for s in resolve_order(data).instances] == [3, 1, 2]


class TestOrderIdAndPolicy:
    def test_an_order_id_is_generated_when_none_is_given(self) -> None:
        first, second = resolve_order(order()), resolve_order(order())
        assert first.id.version == 4
        assert first.id != second.id

    def test_a_given_order_id_is_kept(self) -> None:
        given = uuid.uuid4()
        assert resolve_order(order(id=str(given))).id == given

    def test_an_invalid_order_id_is_rejected(self) -> None:
        assert set(errors_of(order(id="order-1"))) == {"id"}

    def test_the_policy_defaults_to_partial(self) -> None:
        assert resolve_order(order()).policy is OrderPolicy.PARTIAL

    @pytest.mark.parametrize("policy", ["partial", "all_or_nothing"])
    def test_each_policy_is_accepted(self, policy: str) -> None:
        assert resolve_order(order(policy=policy)).policy == policy

    @pytest.mark.parametrize("policy", ["all-or-nothing", "ALL_OR_NOTHING", "", "best_effort", 1])
    def test_any_other_policy_is_rejected(self, policy: object) -> None:
        assert errors_of(order(policy=policy)) == {
            "policy": "Input should be 'partial' or 'all_or_nothing'"
        }


class TestRequiredFields:
    @pytest.mark.parametrize("field", ["account", "image", "hardware_profile"])
    def test_a_field_missing_on_both_instance_and_order_is_reported_at_the_instance(
        self, field: str
    ) -> None:
        data = order({"uuid": uid(1)}, {"uuid": uid(2)}, {"uuid": uid(3), field: "given"})
        del data[field]
        assert errors_of(data) == {
            "instances.0." + field: REQUIRED_MESSAGE,
            "instances.1." + field: REQUIRED_MESSAGE,
        }

    def test_an_instance_may_supply_what_the_order_lacks(self) -> None:
        data = {
            "instances": [
                {"uuid": uid(1), "account": "a", "image": "i", "hardware_profile": "h"},
                {"uuid": uid(2), "image": "i"},
            ]
        }
        assert errors_of(data) == {
            "instances.1.account": REQUIRED_MESSAGE,
            "instances.1.hardware_profile": REQUIRED_MESSAGE,
        }

    def test_an_instance_without_a_uuid_is_rejected(self) -> None:
        assert errors_of(order({"name": "web"})) == {"instances.0.uuid": "Field required"}


class TestUuids:
    def test_duplicate_uuids_are_rejected_naming_both_indexes(self) -> None:
        data = order({"uuid": uid(1)}, {"uuid": uid(2)}, {"uuid": uid(1)})
        assert errors_of(data) == {"instances.2.uuid": f"{uid(1)} repeats instances.0"}

    def test_the_same_uuid_spelled_differently_is_still_a_duplicate(self) -> None:
        data = order({"uuid": uid(10)}, {"uuid": uid(10).upper()})
        assert errors_of(data) == {"instances.1.uuid": f"{uid(10)} repeats instances.0"}

    def test_every_repeat_names_the_first_occurrence(self) -> None:
        data = order({"uuid": uid(1)}, {"uuid": uid(1)}, {"uuid": uid(1)})
        assert errors_of(data) == {
            "instances.1.uuid": f"{uid(1)} repeats instances.0",
            "instances.2.uuid": f"{uid(1)} repeats instances.0",
        }

    @pytest.mark.parametrize(
        "bad", ["", "not-a-uuid", "3f2a9c1e-0000-4000-8000-00000000000", "g" * 32, 42, None]
    )
    def test_an_invalid_uuid_is_rejected_at_its_path(self, bad: object) -> None:
        data = order({"uuid": uid(1)}, {"uuid": bad})
        assert set(errors_of(data)) == {"instances.1.uuid"}


class TestInstanceCount:
    def test_an_empty_instance_list_is_rejected(self) -> None:
        data = order()
        data["instances"] = []
        assert errors_of(data) == {
            "instances": "List should have at least 1 item after validation, not 0"
        }

    def test_missing_instances_are_rejected(self) -> None:
        data = order()
        del data["instances"]
        assert errors_of(data) == {"instances": "Field required"}

    def test_the_maximum_number_of_instances_is_accepted(self) -> None:
        data = order(*({"uuid": uid(n)} for n in range(MAX_INSTANCES_PER_ORDER)))
        assert MAX_INSTANCES_PER_ORDER == 1000
        assert len(resolve_order(data).instances) == 1000

    def test_more_than_the_maximum_is_rejected(self) -> None:
        data = order(*({"uuid": uid(n)} for n in range(MAX_INSTANCES_PER_ORDER + 1)))
        assert errors_of(data) == {
            "instances": "List should have at most 1000 items after validation, not 1001"
        }


class TestUserData:
    @pytest.mark.parametrize(
        "user_data",
        [
            "",
            "a" * 16384,
            "é" * 8192,  # two bytes each: exactly 16 KiB
            "😀" * 4096,  # four bytes each: exactly 16 KiB
        ],
    )
    def test_user_data_up_to_16_kib_of_utf8_is_accepted(self, user_data: str) -> None:
        assert MAX_USER_DATA_BYTES == 16384
        assert only_spec(order({"uuid": uid(1), "user_data": user_data})).user_data == user_data

    @pytest.mark.parametrize(
        ("user_data", "size"),
        [
            ("a" * 16385, 16385),
            ("é" * 8192 + "a", 16385),  # only 8193 characters, but 16385 bytes
            ("😀" * 4097, 16388),
        ],
    )
    def test_user_data_over_16_kib_is_rejected_counting_bytes(
        self, user_data: str, size: int
    ) -> None:
        message = f"is {size} bytes; the limit is 16384 bytes (16 KiB)"
        assert errors_of(order({"uuid": uid(1), "user_data": user_data})) == {
            "instances.0.user_data": message
        }
        assert errors_of(order(user_data=user_data)) == {"user_data": message}


NAME_MESSAGE = (
    "must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
)


class TestNames:
    @pytest.mark.parametrize("name", ["a", "7", "web-1", "Web.Server_2", "x" * 63])
    def test_good_names_are_accepted(self, name: str) -> None:
        assert only_spec(order({"uuid": uid(1), "name": name})).name == name

    @pytest.mark.parametrize(
        "name",
        [
            "",
            "x" * 64,
            "-web",
            ".web",
            "_web",
            "wéb",
            "ünïcode",
            "服务器",
            "web server",
            " web",
            "web\n",
            "web/1",
        ],
    )
    def test_bad_names_are_rejected(self, name: str) -> None:
        assert errors_of(order({"uuid": uid(1)}, {"uuid": uid(2), "name": name})) == {
            "instances.1.name": NAME_MESSAGE
        }


LABEL_KEY_MESSAGE = (
    "must be 1-63 characters of lower-case letters, digits, '.', '_', '/' or '-', "
    "starting and ending with a letter or digit"
)


class TestLabels:
    @pytest.mark.parametrize(
        "labels",
        [
            {},
            {"app": "web", "k8s.io/name": "api", "tier_1": "", "a-b.c": "x y z"},
            {"a" * 63: "v" * 255},
            {f"k{n}": str(n) for n in range(MAX_LABELS)},
        ],
    )
    def test_good_labels_are_accepted(self, labels: dict[str, str]) -> None:
        assert only_spec(order({"uuid": uid(1), "labels": labels})).labels == labels

    @pytest.mark.parametrize(
        "key", ["", "App", "APP", "-app", "app-", "app.", "a b", "a" * 64, "é", "a:b", "a\n"]
    )
    def test_bad_label_keys_are_rejected(self, key: str) -> None:
        assert errors_of(order({"uuid": uid(1), "labels": {"ok": "1", key: "v"}})) == {
            "instances.0.labels": f"label key {key!r} {LABEL_KEY_MESSAGE}"
        }

    def test_more_than_64_labels_are_rejected(self) -> None:
        labels = {f"k{n}": "v" for n in range(MAX_LABELS + 1)}
        assert errors_of(order(labels=labels)) == {"labels": "at most 64 labels, got 65"}

    @pytest.mark.parametrize("value", ["v" * 256, "line\nbreak", "tab\there", "nul\x00", "\x7f"])
    def test_long_or_non_printable_label_values_are_rejected(self, value: str) -> None:
        assert errors_of(order(labels={"note": value})) == {
            "labels": "label 'note' value must be printable and at most 255 characters"
        }

    def test_non_string_label_values_are_rejected(self) -> None:
        assert set(errors_of(order(labels={"count": 3}))) == {"labels.count"}


class TestOtherFields:
    @pytest.mark.parametrize("field", ["memory", "cpu", "storage"])
    @pytest.mark.parametrize("value", [0, -1])
    def test_non_positive_hardware_overrides_are_rejected(self, field: str, value: int) -> None:
        message = "Input should be greater than 0"
        assert errors_of(order({"uuid": uid(1), field: value})) == {f"instances.0.{field}": message}
        assert errors_of(order(**{field: value})) == {field: message}

    @pytest.mark.parametrize("account", ["", "Prod", "prod eu", "-prod", "é", "p" * 64])
    def test_bad_account_names_are_rejected(self, account: str) -> None:
        assert set(errors_of(order(account=account))) == {"account"}

    @pytest.mark.parametrize("account", ["prod", "prod-eu_1", "0", "p" * 63])
    def test_good_account_names_are_accepted(self, account: str) -> None:
        assert only_spec(order(account=account)).account == account

    @pytest.mark.parametrize("field", ["image", "hardware_profile", "keyname", "realm"])
    def test_resource_ids_must_be_1_to_255_characters(self, field: str) -> None:
        assert getattr(only_spec(order({"uuid": uid(1), field: "x" * 255})), field) == "x" * 255
        assert set(errors_of(order({"uuid": uid(1), field: ""}))) == {f"instances.0.{field}"}
        assert set(errors_of(order({"uuid": uid(1), field: "x" * 256}))) == {f"instances.0.{field}"}

    def test_unknown_order_fields_are_rejected(self) -> None:
        assert errors_of(order(flavour="big")) == {"flavour": "Extra inputs are not permitted"}

    def test_unknown_instance_fields_are_rejected(self) -> None:
        data = order({"uuid": uid(1), "ami": "ami-1"})
        assert errors_of(data) == {"instances.0.ami": "Extra inputs are not permitted"}

    @pytest.mark.parametrize("body", [None, [], "order", 3])
    def test_a_body_that_is_not_an_object_is_rejected(self, body: object) -> None:
        assert set(errors_of(body)) == {"body"}


class TestManyErrorsAtOnce:
    def test_every_invalid_field_is_listed_not_just_the_first(self) -> None:
        data = order(
            {"uuid": "nope", "name": "-bad"},
            {"uuid": uid(2), "user_data": "x" * 16385, "cpu": 0},
            {"uuid": uid(3), "labels": {"Bad": "v"}, "colour": "blue"},
            policy="sometimes",
            id="not-a-uuid",
            account="Prod",
        )
        assert set(errors_of(data)) == {
            "policy",
            "id",
            "account",
            "instances.0.uuid",
            "instances.0.name",
            "instances.1.user_data",
            "instances.1.cpu",
            "instances.2.labels",
            "instances.2.colour",
        }

    def test_every_missing_field_and_repeat_is_listed(self) -> None:
        data = {"instances": [{"uuid": uid(1)}, {"uuid": uid(1), "account": "a", "image": "i"}]}
        assert errors_of(data) == {
            "instances.0.account": REQUIRED_MESSAGE,
            "instances.0.image": REQUIRED_MESSAGE,
            "instances.0.hardware_profile": REQUIRED_MESSAGE,
            "instances.1.uuid": f"{uid(1)} repeats instances.0",
            "instances.1.hardware_profile": REQUIRED_MESSAGE,
        }

    def test_the_message_names_every_field(self) -> None:
        with pytest.raises(ValidationError) as caught:
            resolve_order(order({"uuid": "x", "memory": 0}))
        message = str(caught.value)
        assert "instances.0.uuid: " in message
        assert "instances.0.memory: Input should be greater than 0" in message


class TestParse:
    def test_parse_returns_the_model(self) -> None:
        request = parse(InstanceRequest, {"uuid": uid(5), "name": "db", "memory": 1024})
        assert isinstance(request, InstanceRequest)
        assert (request.uuid, request.name, request.memory) == (uuid.UUID(int=5), "db", 1024)
        assert request.labels == {}

    def test_parse_passes_an_existing_model_through(self) -> None:
        request = InstanceRequest(uuid=uuid.UUID(int=5))
        assert parse(InstanceRequest, request) is request

    def test_resolve_order_accepts_a_parsed_request(self) -> None:
        request = parse(LaunchOrderRequest, order())
        assert resolve_order(request).instances[0].account == "prod"

    def test_parse_reports_every_field_with_dotted_paths_and_our_messages(self) -> None:
        with pytest.raises(ValidationError) as caught:
            parse(LaunchOrderRequest, {"instances": [{"uuid": uid(1), "labels": {"x": 1}}, {}]})
        assert caught.value.errors == [
            FieldError("instances.0.labels.x", "Input should be a valid string"),
            FieldError("instances.1.uuid", "Field required"),
        ]

    def test_custom_check_messages_lose_pydantics_prefix(self) -> None:
        with pytest.raises(ValidationError) as caught:
            parse(InstanceRequest, {"uuid": uid(1), "name": "-x"})
        assert caught.value.errors == [FieldError("name", NAME_MESSAGE)]

    def test_pydantics_error_does_not_leak_as_the_cause(self) -> None:
        """Only cloudstate's tree escapes; the pydantic error is not chained on."""
        with pytest.raises(ValidationError) as caught:
            parse(InstanceRequest, {})
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__ is True


def test_parse_errors_and_missing_fields_are_reported_together() -> None:
    data = order({"uuid": uid(1), "memory": 0}, {"uuid": uid(1)})
    del data["image"]
    assert set(errors_of(data)) == {
        "instances.0.memory",
        "instances.0.image",
        "instances.1.uuid",
        "instances.1.image",
    }
