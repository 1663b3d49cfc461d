"""The ``ec2`` driver against a real EC2 API on loopback (moto's server), seen from both sides:
what the driver reports, and what EC2 itself then holds (read with a separate boto3 client).

A fault proxy in front of moto answers chosen actions with EC2 error documents, so error
translation is proven on what botocore really parses. The engine tests run cloudstate's own
loop (``burst``) and worker processes against the same server.
"""

from __future__ import annotations

import base64
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.core.authorization import enable_iam_authentication

from cloudstate.domain.states import Action, InstanceState
from cloudstate.embedded import CloudState
from cloudstate.engine.drivers import MeteredDriver
from cloudstate.engine.ratelimit import CallBudget
from cloudstate.exceptions import (
    ProviderAuthError,
    ProviderCapacityError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderThrottledError,
    ProviderUnavailableError,
    ValidationError,
)
from cloudstate.providers import registry
from cloudstate.providers.base import TAG_UUID, DriverContext, LaunchSpec, client_token
from cloudstate.providers.ec2 import DEFAULT_INSTANCE_TYPES, Ec2Driver
from moto_server import CREDENTIALS, REGION, FaultProxy, MotoEC2, shared_moto

PROFILE = "t3.micro"


@pytest.fixture
def moto() -> MotoEC2:
    server = shared_moto()
    server.reset()
    return server


@pytest.fixture
def image(moto: MotoEC2) -> str:
    return moto.register_image()


@pytest.fixture
def proxy(moto: MotoEC2) -> Iterator[FaultProxy]:
    made = FaultProxy(moto.url)
    yield made
    made.stop()


def make_driver(endpoint: str, tmp_path: Path, **config: Any) -> Ec2Driver:
    driver = registry.create_driver(
        "ec2",
        {"region": REGION, "endpoint_url": endpoint, **config},
        CREDENTIALS,
        DriverContext(home=tmp_path, account="aws"),
    )
    assert isinstance(driver, Ec2Driver)
    return driver


@pytest.fixture
def driver(proxy: FaultProxy, tmp_path: Path) -> Iterator[Ec2Driver]:
    made = make_driver(proxy.url, tmp_path)
    yield made
    made.close()


def spec(image: str, **changes: Any) -> LaunchSpec:
    fields: dict[str, Any] = {
        "uuid": uuid.uuid4(),
        "name": "web",
        "image": image,
        "hardware_profile": PROFILE,
        "labels": {"team": "infra"},
        **changes,
    }
    return LaunchSpec(**fields)


def described(moto: MotoEC2, provider_id: str) -> dict[str, Any]:
    reservations = moto.ec2.describe_instances(InstanceIds=[provider_id])["Reservations"]
    [instance] = [i for r in reservations for i in r["Instances"]]
    return instance


def moto_state(moto: MotoEC2, provider_id: str) -> str:
    return str(described(moto, provider_id)["State"]["Name"])


def instances_per_uuid(moto: MotoEC2) -> dict[str, int]:
    pages = moto.ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag-key", "Values": [TAG_UUID]}]
    )
    counts: dict[str, int] = {}
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                counts[tags[TAG_UUID]] = counts.get(tags[TAG_UUID], 0) + 1
    return counts


# configuration ------------------------------------------------------------------------------


def test_unknown_and_invalid_settings_are_validation_errors_naming_each_key(tmp_path):
    """Every bad config key is named at once, and a credential's value never appears."""
    with pytest.raises(ValidationError) as caught:
        registry.create_driver(
            "ec2",
            {"regoin": "us-east-1", "page_size": 2, "endpoint_url": "ftp://x"},
            CREDENTIALS,
            DriverContext(home=tmp_path),
        )
    assert {e.field for e in caught.value.errors} == {
        "regoin",
        "region",
        "page_size",
        "endpoint_url",
    }
    with pytest.raises(ValidationError) as caught:
        registry.create_driver(
            "ec2",
            {"region": REGION},
            {"access_key_id": "AKIASECRETISH", "secret_key": "hunter2-secret"},
            DriverContext(home=tmp_path),
        )
    assert {e.field for e in caught.value.errors} == {"secret_key", "secret_access_key"}
    assert "hunter2" not in str(caught.value)
    assert "AKIASECRETISH" not in str(caught.value)


# launching ----------------------------------------------------------------------------------


def test_a_launch_of_20_is_in_ec2_with_its_tags_user_data_and_key(driver, moto, image):
    """Twenty instances, one RunInstances each: all tagged with UUID, Name and labels, with
    their user data, and either the caller's key pair or a generated one whose private key
    comes back in the outcome."""
    moto.ec2.create_key_pair(KeyName="ops")
    specs = [
        spec(image, name=f"web-{n}", user_data=f"#!/bin/sh\necho {n}\n", keyname=keyname)
        for n, keyname in enumerate(["ops"] * 10 + [None] * 10)
    ]

    outcomes = driver.create_many(specs)

    assert [o.uuid for o in outcomes] == [s.uuid for s in specs]
    assert all(o.instance is not None for o in outcomes)
    assert instances_per_uuid(moto) == {str(s.uuid): 1 for s in specs}
    for n, (wanted, outcome) in enumerate(zip(specs, outcomes, strict=True)):
        raw = described(moto, outcome.instance.provider_id)
        tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
        assert tags == {TAG_UUID: str(wanted.uuid), "Name": f"web-{n}", "team": "infra"}
        user_data = moto.ec2.describe_instance_attribute(
            InstanceId=outcome.instance.provider_id, Attribute="userData"
        )["UserData"]["Value"]
        assert base64.b64decode(user_data).decode() == wanted.user_data
        assert raw["KeyName"] == (wanted.keyname or f"cs-{wanted.uuid}")
        if wanted.keyname is None:
            [pair] = moto.ec2.describe_key_pairs(KeyNames=[raw["KeyName"]])["KeyPairs"]
            assert outcome.instance.key_fingerprint == pair["KeyFingerprint"]
            assert "PRIVATE KEY" in outcome.instance.key_material
        else:
            assert outcome.instance.key_material is None


def test_a_retry_after_a_lost_answer_reuses_the_key_pair_and_says_its_key_is_unknown(
    driver, moto, image
):
    """The key pair an earlier attempt created is reused (no "already exists" failure); its
    private key cannot be had again, and the outcome says so."""
    wanted = spec(image)
    earlier = moto.ec2.create_key_pair(KeyName=f"cs-{wanted.uuid}")

    [outcome] = driver.create_many([wanted])

    assert outcome.instance is not None
    assert outcome.instance.key_material is None
    assert outcome.instance.key_fingerprint == earlier["KeyFingerprint"]
    assert "unknown" in outcome.instance.extra["key_material_note"]
    assert described(moto, outcome.instance.provider_id)["KeyName"] == f"cs-{wanted.uuid}"


def test_every_run_instances_carries_the_uuids_client_token(driver, moto, image):
    """EC2's own idempotency: the ClientToken is derived from the UUID (moto ignores it, so
    the launcher's look-up by tag is what the engine tests below prove)."""
    wanted = spec(image)
    [outcome] = driver.create_many([wanted])

    assert described(moto, outcome.instance.provider_id)["ClientToken"] == client_token(wanted.uuid)


def test_a_bad_ami_is_a_permanent_outcome_and_the_others_launch(driver, moto, image):
    """The bad AMI's outcome is a permanent error naming it; its generated key pair is removed;
    the instances around it are created."""
    specs = [spec(image), spec("ami-0123456789abcdef0"), spec(image)]

    outcomes = driver.create_many(specs)

    assert isinstance(outcomes[1].error, ProviderPermanentError)
    assert outcomes[1].error.code == "InvalidAMIID.NotFound"
    assert "ami-0123456789abcdef0" in outcomes[1].error.reason
    assert outcomes[0].instance is not None
    assert outcomes[2].instance is not None
    names = {p["KeyName"] for p in moto.ec2.describe_key_pairs()["KeyPairs"]}
    assert f"cs-{specs[1].uuid}" not in names
    assert sorted(instances_per_uuid(moto)) == sorted(str(s.uuid) for s in specs[::2])


def test_an_instance_type_not_offered_is_refused_without_calling_ec2(driver, moto, image):
    """Only the account's ``instance_types`` (default: a small common set) can be launched."""
    [outcome] = driver.create_many([spec(image, hardware_profile="p5.48xlarge")])

    assert isinstance(outcome.error, ProviderPermanentError)
    assert "p5.48xlarge" in str(outcome.error)
    assert instances_per_uuid(moto) == {}


# acting and listing -------------------------------------------------------------------------


def test_stop_start_reboot_and_destroy_reach_ec2_and_show_in_listings(driver, moto, image):
    """Each action lands in EC2; the listing maps its states; destroy also deletes the
    generated key pair."""
    wanted = spec(image)
    [outcome] = driver.create_many([wanted])
    provider_id = outcome.instance.provider_id

    def listed() -> InstanceState:
        [instance] = driver.list_page(uuids=[wanted.uuid]).instances
        return instance.state

    assert listed() is InstanceState.RUNNING
    driver.act(provider_id, Action.STOP)
    assert moto_state(moto, provider_id) == "stopped"
    assert listed() is InstanceState.STOPPED
    driver.act(provider_id, Action.START)
    assert listed() is InstanceState.RUNNING
    driver.act(provider_id, Action.REBOOT)
    assert listed() is InstanceState.RUNNING
    driver.act(provider_id, Action.DESTROY)
    assert moto_state(moto, provider_id) == "terminated"
    assert listed() is InstanceState.TERMINATED
    assert moto.ec2.describe_key_pairs()["KeyPairs"] == []


def test_a_listed_instance_carries_addresses_zone_image_type_and_raw_state(driver, image):
    """What the reconciler needs from one ``DescribeInstances`` page."""
    wanted = spec(image, realm="us-east-1b")
    driver.create_many([wanted])

    [instance] = driver.list_page(uuids=[wanted.uuid]).instances

    assert instance.uuid == wanted.uuid
    assert instance.raw_state == "running"
    assert instance.realm == "us-east-1b"
    assert instance.image == image
    assert instance.hardware_profile == PROFILE
    assert instance.public_addresses
    assert instance.private_addresses
    assert instance.launched_at is not None


def test_instances_without_our_tag_are_not_listed(driver, moto, image):
    """Somebody else's instances in the same account are none of cloudstate's business."""
    moto.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    wanted = spec(image)
    driver.create_many([wanted])

    assert [i.uuid for i in driver.list_page().instances] == [wanted.uuid]


def test_the_catalogue_offers_zones_own_images_and_the_configured_types(moto, image, tmp_path):
    """Zones from EC2, the account's own AMIs, and fixed memory/cpu per instance type (plus
    instance storage where the type has it)."""
    driver = make_driver(moto.url, tmp_path, instance_types=["t3.micro", "m5d.large"])
    try:
        realms = driver.list_realms()
        images = driver.list_images()
        profiles = {p.id: p for p in driver.list_hardware_profiles()}
    finally:
        driver.close()

    assert "us-east-1a" in {r.name for r in realms}
    assert all(r.available for r in realms)
    assert [i.id for i in images] == [image]
    assert set(profiles) == {"t3.micro", "m5d.large"}
    assert profiles["t3.micro"].resolve().as_dict() == {"memory": 1024, "cpu": 2}
    assert profiles["m5d.large"].resolve().as_dict() == {"memory": 8192, "cpu": 2, "storage": 75}


def test_the_default_instance_types_are_all_known_to_ec2(moto, tmp_path):
    """The default catalogue names real instance types (moto carries EC2's list)."""
    driver = make_driver(moto.url, tmp_path)
    try:
        assert [p.id for p in driver.list_hardware_profiles()] == list(DEFAULT_INSTANCE_TYPES)
    finally:
        driver.close()


# error translation --------------------------------------------------------------------------


def test_throttling_is_raised_when_the_first_run_instances_is_throttled(driver, proxy, image):
    """Nothing was created, so the whole call failed: the engine backs off and halves its
    budget (``MeteredDriver``)."""
    proxy.throttle(actions=["RunInstances"])
    metered = MeteredDriver(driver, "aws", CallBudget(rate=100.0, burst=10.0))

    with pytest.raises(ProviderThrottledError) as caught:
        metered.create_many([spec(image, keyname="ops"), spec(image, keyname="ops")])

    assert caught.value.retryable
    assert caught.value.code == "RequestLimitExceeded"
    assert proxy.failed == ["RunInstances"]  # the batch stopped at the first refusal
    assert metered.budget.rate is not None
    assert metered.budget.rate < 100.0


def test_throttling_mid_batch_keeps_the_created_and_marks_the_rest_retryable(
    driver, proxy, moto, image
):
    """Two created, then throttled: those two are outcomes, the rest retryable errors, and no
    further RunInstances is sent."""
    proxy.throttle(actions=["RunInstances"], after=2)
    specs = [spec(image, keyname="ops") for _ in range(5)]

    outcomes = driver.create_many(specs)

    assert [o.instance is not None for o in outcomes] == [True, True, False, False, False]
    assert all(isinstance(o.error, ProviderThrottledError) for o in outcomes[2:])
    assert proxy.failed == ["RunInstances"]
    assert len(instances_per_uuid(moto)) == 2


def test_a_throttled_launch_drops_its_new_key_pair_so_the_retry_gets_a_private_key(
    driver, proxy, moto, image
):
    """A throttled RunInstances created nothing: the generated key pair is deleted again, and
    the retry creates a fresh one whose private key it returns."""
    wanted = spec(image)
    proxy.throttle(actions=["RunInstances"])
    with pytest.raises(ProviderThrottledError):
        driver.create_many([wanted])
    assert moto.ec2.describe_key_pairs()["KeyPairs"] == []

    proxy.pass_through()
    [outcome] = driver.create_many([wanted])

    assert "PRIVATE KEY" in outcome.instance.key_material


def test_looking_up_more_uuids_than_one_filter_holds_still_finds_them(driver, image):
    """Past EC2's 200 values per filter, the listing filters by tag key and picks here."""
    wanted = spec(image)
    driver.create_many([wanted, spec(image)])
    uuids = [uuid.uuid4() for _ in range(250)] + [wanted.uuid]

    assert [i.uuid for i in driver.list_page(uuids=uuids).instances] == [wanted.uuid]


# request buckets -----------------------------------------------------------------------------


def test_the_describe_bucket_spaces_listings_at_the_configured_rate(moto, proxy, tmp_path):
    """``request_rates`` describe 10/s with a burst of 2: two listings go at once, the other
    eight a tenth of a second apart."""
    moto.ec2.describe_instances()  # moto's first listing after a reset is slow: not here
    driver = make_driver(
        proxy.url, tmp_path, request_rates={"describe": 10}, request_bursts={"describe": 2}
    )
    try:
        for _ in range(10):
            driver.list_page()
    finally:
        driver.close()

    arrivals = proxy.calls["DescribeInstances"]
    assert len(arrivals) == 10
    # Eight calls past the burst need eight tokens at 10/s: at least 0.8 s of sending. What
    # arrives is checked with a little slack (a call delayed on a loaded machine arrives late,
    # its successor on time), and never bunched: no two past the burst closer than 40 ms.
    assert arrivals[-1] - arrivals[0] >= 0.75
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(arrivals[2:]))


def test_every_call_of_a_launch_waits_for_its_class_token(proxy, image, tmp_path):
    """The hook covers the calls around RunInstances too: at 10/s with bursts of 1, the
    generated key pairs (mutating) and the RunInstances each arrive a tenth of a second
    apart."""
    driver = make_driver(
        proxy.url,
        tmp_path,
        request_rates={"mutating": 10, "run_instances": 10},
        request_bursts={"mutating": 1, "run_instances": 1},
    )
    try:
        outcomes = driver.create_many([spec(image) for _ in range(3)])
    finally:
        driver.close()

    assert all(o.instance is not None for o in outcomes)
    for action in ("CreateKeyPair", "RunInstances"):
        arrivals = proxy.calls[action]
        assert len(arrivals) == 3
        assert arrivals[-1] - arrivals[0] >= 0.18, action  # two tokens at 10/s, some slack
        assert all(b - a >= 0.04 for a, b in itertools.pairwise(arrivals)), action


def test_a_throttled_listing_is_throttling(driver, proxy):
    proxy.throttle(actions=["DescribeInstances"])

    with pytest.raises(ProviderThrottledError):
        driver.list_page()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("InsufficientInstanceCapacity", 500, ProviderCapacityError),
        ("VcpuLimitExceeded", 400, ProviderCapacityError),
        ("InvalidParameterValue", 400, ProviderPermanentError),
        ("AuthFailure", 401, ProviderAuthError),
        ("InternalError", 500, ProviderUnavailableError),
        ("Unavailable", 503, ProviderUnavailableError),
        ("SomethingNew", 503, ProviderUnavailableError),
        ("SomethingElseNew", 400, ProviderPermanentError),
    ],
)
def test_ec2_error_codes_become_cloudstate_errors(driver, proxy, image, code, status, expected):
    """The error code decides (capacity in a 500 is still capacity); an unlisted code is
    permanent in a 4xx and retryable in a 5xx."""
    proxy.fail(code, status=status, actions=["RunInstances"], after=1)

    [_, outcome] = driver.create_many([spec(image, keyname="ops"), spec(image, keyname="ops")])

    assert type(outcome.error) is expected
    assert outcome.error.code == code


@pytest.mark.parametrize("action", [Action.STOP, Action.START])
def test_an_action_in_the_wrong_state_is_permanent(driver, proxy, image, action):
    """``IncorrectInstanceState`` (injected: moto does not check states) is not retryable."""
    [outcome] = driver.create_many([spec(image)])
    proxy.fail("IncorrectInstanceState", actions=["StopInstances", "StartInstances"])

    with pytest.raises(ProviderPermanentError) as caught:
        driver.act(outcome.instance.provider_id, action)
    assert caught.value.code == "IncorrectInstanceState"


def test_a_malformed_instance_id_is_not_found(driver):
    with pytest.raises(ProviderNotFoundError):
        driver.act("not-an-instance", Action.STOP)


def test_credentials_ec2_rejects_are_an_auth_error(driver):
    """With moto's IAM checks on, the dummy access key is unknown to it, as a revoked key is."""
    with enable_iam_authentication(), pytest.raises(ProviderAuthError) as caught:
        driver.list_realms()
    assert not caught.value.retryable


def test_an_unreachable_endpoint_is_unavailable_and_retryable(driver, proxy, image):
    proxy.stop()

    with pytest.raises(ProviderUnavailableError) as caught:
        driver.create_many([spec(image)])
    assert caught.value.retryable


# the engine on EC2 --------------------------------------------------------------------------


def _launch(cs: CloudState, image: str, count: int) -> list[uuid.UUID]:
    uuids = [uuid.uuid4() for _ in range(count)]
    cs.launch(
        account="aws",
        image=image,
        hardware_profile=PROFILE,
        instances=[{"uuid": str(u)} for u in uuids],
    )
    return uuids


def _add_account(cs: CloudState, endpoint: str) -> None:
    cs.add_account(
        "aws",
        "ec2",
        config={"region": REGION, "endpoint_url": endpoint, "instance_types": [PROFILE]},
        credentials=CREDENTIALS,
    )


def test_the_engine_launches_on_ec2_once_per_uuid_and_sees_them_running(moto, image, tmp_path):
    """Five instances through cloudstate's own loop: running in cloudstate and in EC2, with
    exactly one EC2 instance per UUID."""
    with CloudState(
        home=tmp_path / "home", default_account=False, simulator_fast=True,
        pending_grace_seconds=0.5,
    ) as cs:  # fmt: skip
        _add_account(cs, moto.url)
        uuids = _launch(cs, image, 5)

        assert cs.burst(timeout=30)

        views = [cs.get(u) for u in uuids]
    assert {str(view.state) for view in views} == {"running"}
    assert all(view.key_fingerprint for view in views)
    per_uuid = instances_per_uuid(moto)
    assert per_uuid == {str(u): 1 for u in uuids}
    assert {moto_state(moto, view.provider_id) for view in views} == {"running"}


CRASH_ENVIRONMENT = {
    "CLOUDSTATE_PENDING_GRACE_SECONDS": "0.5",
    "CLOUDSTATE_LAUNCH_LEASE_SECONDS": "1",
    "CLOUDSTATE_RECONCILE_FAST_INTERVAL": "0.2",
    "CLOUDSTATE_LOG_LEVEL": "WARNING",
}


def _worker(home: Path, failpoint: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CRASH_ENVIRONMENT, "CLOUDSTATE_HOME": str(home)}
    env.pop("CLOUDSTATE_FAILPOINTS", None)
    if failpoint:
        env["CLOUDSTATE_FAILPOINTS"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "cloudstate", "worker", "--burst", "--timeout", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_a_worker_killed_after_run_instances_creates_no_second_instance(moto, image, tmp_path):
    """Killed after EC2 created the instances but before cloudstate recorded them, then
    restarted: moto ignores ClientToken, so only the launcher's look-up by the UUID tag stands
    between the restart and a duplicate, and there is exactly one instance per UUID."""
    home = tmp_path / "home"
    with CloudState(home=home, default_account=False) as cs:
        _add_account(cs, moto.url)
        uuids = _launch(cs, image, 4)

    crashed = _worker(home, "launch.after_create")
    assert crashed.returncode == -9, crashed.stderr
    assert instances_per_uuid(moto) == {str(u): 1 for u in uuids}

    finished = _worker(home, None)
    assert finished.returncode == 0, finished.stderr

    assert instances_per_uuid(moto) == {str(u): 1 for u in uuids}
    with CloudState(home=home, default_account=False) as cs:
        assert {str(cs.get(u).state) for u in uuids} == {"running"}


@pytest.mark.slow
def test_the_engine_retries_throttled_launches_ever_more_slowly_once_per_uuid(
    moto, proxy, image, tmp_path
):
    """EC2 throttles the first three RunInstances: cloudstate's own loop retries each time
    (looking its instances up first) and each time later, the account's call budget, unlimited
    before, is left finite, and there is one running instance per UUID in the end.

    Slow (about 15 s): the retries wait out the launcher's backoff and the throttled budget.
    """
    proxy.throttle(actions=["RunInstances"], times=3)
    with CloudState(
        home=tmp_path / "home", default_account=False, simulator_fast=True,
        pending_grace_seconds=0.5,
    ) as cs:  # fmt: skip
        _add_account(cs, proxy.url)
        _, metered = cs.engine.pool.by_name("aws")
        assert isinstance(metered, MeteredDriver)
        assert metered.budget.rate is None  # never throttled: unlimited
        uuids = _launch(cs, image, 6)

        assert cs.burst(timeout=60)

        views = [cs.get(u) for u in uuids]
    assert proxy.failed == ["RunInstances"] * 3
    attempts = proxy.calls["RunInstances"]
    assert len(attempts) == 3 + 6  # three refused, then one per instance
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts[:4])]
    assert min(gaps) >= 0.5  # the first retry's shortest backoff
    assert gaps[0] < gaps[-1]
    assert metered.budget.rate is not None
    assert metered.budget.rate < 2.0
    assert {str(view.state) for view in views} == {"running"}
    assert instances_per_uuid(moto) == {str(u): 1 for u in uuids}
