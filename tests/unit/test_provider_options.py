"""Provider account config is read by pydantic models with unknown keys forbidden (issue 19,
defect 8): every bad key is named at once, in the provider's own words, and nothing is coerced."""

from __future__ import annotations

import pytest

from cloudstate.exceptions import ValidationError
from cloudstate.providers.ec2.settings import Ec2Settings
from cloudstate.providers.ec2.settings import parse_settings as ec2
from cloudstate.providers.libcloud.settings import parse_settings as libcloud
from cloudstate.providers.options import Options


def refusals(parse: object, config: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        parse(config)  # type: ignore[operator]
    return {error.field: error.message for error in caught.value.errors}


def test_the_settings_are_pydantic_models_that_forbid_unknown_keys() -> None:
    """Both drivers' settings derive from ``Options``: extra="forbid", strict."""
    assert issubclass(Ec2Settings, Options)
    assert Ec2Settings.model_config["extra"] == "forbid"


def test_ec2_names_every_bad_key_at_once_in_its_own_words() -> None:
    """A blank region, a non-URL endpoint, a string page size, an empty image list and an
    unknown key are five errors, each naming its key; the unknown one lists the options."""
    found = refusals(
        ec2,
        {"region": " ", "endpoint_url": "ftp://x", "page_size": "50", "images": [], "colour": 1},
    )
    assert set(found) == {"region", "endpoint_url", "page_size", "images", "colour"}
    assert found["region"] == "required: the AWS region, e.g. us-east-1"
    assert found["endpoint_url"] == "must be an http(s) URL"
    assert found["page_size"] == "must be an integer, 5..1000"
    assert found["colour"].startswith("unknown ec2 option; options: region, endpoint_url")


def test_ec2_defaults_and_deduplication() -> None:
    """Only the region is needed; instance types given twice are kept once, in order."""
    settings = ec2({"region": "us-east-1", "instance_types": ["t3.micro", "t3.micro", "m5.large"]})
    assert settings.instance_types == ("t3.micro", "m5.large")
    assert settings.page_size == 1000
    assert settings.images == ()


@pytest.mark.parametrize("page_size", [True, "5", 0, 1001, 2.0])
def test_libcloud_page_size_is_an_integer_in_range_and_never_coerced(page_size: object) -> None:
    """``true``, ``"5"``, ``2.0`` and out-of-range numbers are refused naming page_size."""
    found = refusals(libcloud, {"driver": "dummy", "page_size": page_size})
    assert found == {"page_size": "must be an integer, 1..1000"}


def test_libcloud_names_the_drivers_and_keeps_numeric_ids_as_text() -> None:
    """An unknown driver lists the real ones; ``location: 3`` is the id "3"."""
    found = refusals(libcloud, {"driver": "nimbus-9000", "uuid_in": "dns", "extra": 1})
    assert set(found) == {"driver", "uuid_in", "extra"}
    assert "openstack" in found["driver"]
    assert found["uuid_in"] == "must be one of: metadata, tags, name"
    assert libcloud({"driver": "dummy", "location": 3}).location == "3"
