"""The ec2 driver's request buckets: which bucket an EC2 action draws from, how a bucket spaces
calls once its burst is spent, and how an account configures them."""

from __future__ import annotations

import threading
import time

import pytest

from cloudstate.exceptions import ValidationError
from cloudstate.providers.ec2.limits import (
    DEFAULT_BURSTS,
    DEFAULT_RATES,
    RequestBuckets,
    TokenBucket,
    classify,
)
from cloudstate.providers.ec2.settings import parse_settings


@pytest.mark.parametrize(
    ("operation", "bucket"),
    [
        ("RunInstances", "run_instances"),
        ("StartInstances", "mutating"),
        ("StopInstances", "mutating"),
        ("RebootInstances", "mutating"),
        ("TerminateInstances", "mutating"),
        ("CreateKeyPair", "mutating"),
        ("DeleteKeyPair", "mutating"),
        ("CreateTags", "mutating"),
        ("DescribeInstances", "describe"),
        ("DescribeInstanceTypes", "describe"),
        ("DescribeKeyPairs", "describe"),
        ("GetConsoleOutput", "describe"),
        ("ListImagesInRecycleBin", "describe"),
        ("SearchTransitGatewayRoutes", "describe"),
    ],
)
def test_each_ec2_action_draws_from_its_class_bucket(operation: str, bucket: str) -> None:
    """Reads (Describe/List/Get/Search) share one bucket, RunInstances has its own, and every
    other action is mutating, as EC2 counts them."""
    assert classify(operation) == bucket


def test_a_bucket_lets_its_burst_through_then_spaces_calls_at_its_rate() -> None:
    """At 20/s with a burst of 3: three calls at once, then six more take about 0.3 s."""
    bucket = TokenBucket(rate=20.0, burst=3.0)
    started = time.monotonic()
    for _ in range(3):
        bucket.acquire()
    burst_done = time.monotonic()
    for _ in range(6):
        bucket.acquire()
    finished = time.monotonic()

    assert burst_done - started < 0.05
    assert 0.28 <= finished - burst_done < 0.6


def test_threads_sharing_a_bucket_are_held_to_its_rate_together() -> None:
    """Four threads, three calls each, at 50/s with a burst of 1: the twelve calls together
    take at least eleven intervals (no thread slips past another's reservation)."""
    bucket = TokenBucket(rate=50.0, burst=1.0)

    def three() -> None:
        for _ in range(3):
            bucket.acquire()

    threads = [threading.Thread(target=three) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert 11 / 50 - 0.01 <= time.monotonic() - started < 0.6


def test_an_empty_bucket_does_not_hold_up_the_other_classes() -> None:
    """Reads spent: the next read waits, a mutating call and a RunInstances do not."""
    buckets = RequestBuckets(rates={"describe": 10.0}, bursts={"describe": 1.0})
    buckets.acquire("DescribeInstances")

    assert buckets.acquire("StopInstances") == 0.0
    assert buckets.acquire("RunInstances") == 0.0
    assert buckets.acquire("DescribeInstances") > 0.05


def test_unconfigured_buckets_follow_ec2s_published_rates() -> None:
    """Describe 20/s, mutating 5/s, RunInstances 2/s; a partial configuration keeps the rest."""
    buckets = RequestBuckets(rates={"mutating": 1.0})

    rates = {name: bucket.rate for name, bucket in buckets.buckets.items()}
    assert rates == {"describe": 20.0, "mutating": 1.0, "run_instances": 2.0}
    assert dict(DEFAULT_RATES) == {"describe": 20.0, "mutating": 5.0, "run_instances": 2.0}
    assert {name: b.burst for name, b in buckets.buckets.items()} == dict(DEFAULT_BURSTS)


def test_request_rates_and_bursts_in_the_account_config_reach_the_settings() -> None:
    """Given classes are taken as given (as floats), the others keep their defaults."""
    settings = parse_settings(
        {"region": "us-east-1", "request_rates": {"describe": 5}, "request_bursts": {"mutating": 2}}
    )

    assert settings.request_rates == {"describe": 5.0, "mutating": 5.0, "run_instances": 2.0}
    assert settings.request_bursts["mutating"] == 2.0
    assert settings.request_bursts["describe"] == DEFAULT_BURSTS["describe"]


def test_bad_request_rates_and_bursts_are_refused_naming_each_entry() -> None:
    """Zero, negative, non-numeric and boolean values, bursts below one call and unknown
    classes are each named ``option.class``; the unknown one says which classes exist."""
    with pytest.raises(ValidationError) as caught:
        parse_settings(
            {
                "region": "us-east-1",
                "request_rates": {
                    "describe": 0,
                    "mutating": -1,
                    "run_instances": "fast",
                    "runinstances": 2,
                },
                "request_bursts": {"describe": 0.5, "mutating": True},
            }
        )

    errors = {e.field: e.message for e in caught.value.errors}
    assert set(errors) == {
        "request_rates.describe",
        "request_rates.mutating",
        "request_rates.run_instances",
        "request_rates.runinstances",
        "request_bursts.describe",
        "request_bursts.mutating",
    }
    assert "describe, mutating, run_instances" in errors["request_rates.runinstances"]
    assert errors["request_rates.describe"] == "must be a positive number"
    assert errors["request_bursts.describe"] == "must be a number >= 1"


@pytest.mark.parametrize("value", [5, "describe=5", [], {}])
def test_request_rates_must_be_a_mapping_of_classes(value: object) -> None:
    """Anything but a non-empty mapping is refused as a whole, naming the option."""
    with pytest.raises(ValidationError) as caught:
        parse_settings({"region": "us-east-1", "request_rates": value})

    assert [e.field for e in caught.value.errors] == ["request_rates"]
