"""Bad input over real HTTP, on SQLite and on PostgreSQL: always a 4xx problem naming the field.

What ``test_api`` already shows for one operation (a body over 1 MiB, broken JSON, text/plain,
a negative ``after``) is shown here for every operation of the document that takes a body or
a page parameter; and what only PostgreSQL refuses to store (NUL characters, NaN in JSON, a
moment past the calendar) is a 422 naming the field on both databases, not a 500 on one.

Wrong content types are a 422 on ``body`` (not 415), like any other body that is not the JSON
object an operation takes: one rule, whatever is wrong with the body.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_server import LiveApi, live_api_on
from openapi_document import concrete, operations

from cloudstate.api.errors import MAX_BODY_BYTES
from cloudstate.domain.validation import MAX_USER_DATA_BYTES, NOT_FINITE_MESSAGE, NUL_MESSAGE

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
JSON_TYPE = {"Content-Type": "application/json"}
ORDER = {"account": "simulator", "image": "img-basic", "hardware_profile": "small"}
NAME_RULE = "must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    with live_api_on(request, tmp_path_factory, "bad-input") as live:
        yield live


@pytest.fixture(scope="module")
def admin(api: LiveApi) -> httpx.Client:
    return api.client(api.tokens.admin)


@pytest.fixture(scope="module")
def document(admin: httpx.Client) -> dict[str, Any]:
    found: dict[str, Any] = admin.get("/openapi.json").json()
    return found


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def errors(response: httpx.Response) -> dict[str, str]:
    """The ``{field: message}`` of a 422."""
    return {e["field"]: e["message"] for e in problem(response, 422)["errors"]}


def new_order(**fields: Any) -> dict[str, Any]:
    instance = {"uuid": str(uuid.uuid4()), **fields.pop("instance", {})}
    return {**ORDER, **fields, "instances": [instance]}


# --- bodies ----------------------------------------------------------------------------------


def test_every_operation_taking_a_body_refuses_one_over_the_limit_and_reads_one_at_it(
    admin: httpx.Client, document: dict[str, Any]
) -> None:
    """One byte over 1 MiB: 413 problem+json naming the limit, for every operation with a
    request body; exactly 1 MiB (a JSON object padded with spaces) is read and answered on
    its merits."""
    at_limit = b"{}" + b" " * (MAX_BODY_BYTES - 2)
    over = at_limit + b" "
    for method, template, operation in operations(document):
        if "requestBody" not in operation:
            continue
        path = concrete(template, operation)
        refused = admin.request(method, path, content=over, headers=JSON_TYPE)
        assert problem(refused, 413)["detail"] == f"the limit is {MAX_BODY_BYTES} bytes"
        read = admin.request(method, path, content=at_limit, headers=JSON_TYPE)
        assert read.status_code != 413, (method, template)
        assert read.status_code < 500, (method, template, read.text)


BROKEN = {
    b'{"uuids": [': "JSON decode error",
    b"\xff\xfe{}": "JSON decode error",  # not UTF-8
    b"[" * 100_000: "nested too deeply",
}
NOT_JSON = {
    "text/plain": "must be JSON, as Content-Type: application/json (not text/plain)",
    "application/x-www-form-urlencoded": (
        "must be JSON, as Content-Type: application/json (not application/x-www-form-urlencoded)"
    ),
    "application/xml": "must be JSON, as Content-Type: application/json (not application/xml)",
    "": "must be JSON, as Content-Type: application/json (none was given)",
}


def test_every_operation_taking_a_body_answers_a_malformed_one_with_a_422_on_body(
    admin: httpx.Client, document: dict[str, Any]
) -> None:
    """Truncated JSON, bytes that are not UTF-8 and nesting deeper than the parser goes, and a
    JSON object sent as text, a form, XML or with no content type: 422 with one error on
    ``body`` saying which, for every operation with a request body."""
    for method, template, operation in operations(document):
        if "requestBody" not in operation:
            continue
        path = concrete(template, operation)
        for content, message in BROKEN.items():
            response = admin.request(method, path, content=content, headers=JSON_TYPE)
            assert errors(response) == {"body": message}, (method, template, content[:10])
        for content_type, message in NOT_JSON.items():
            headers = {"Content-Type": content_type} if content_type else {}
            response = admin.request(method, path, content=b'{"a": 1}', headers=headers)
            assert errors(response) == {"body": message}, (method, template, content_type)


def test_json_flavours_python_accepts_and_json_does_not_are_422s_naming_the_field(
    admin: httpx.Client,
) -> None:
    """NaN and Infinity (which Python's parser takes, and neither JSON nor PostgreSQL's JSONB
    does): 422 naming the field, in a typed field and in an account's free-form config."""
    account = b'{"name": "nan", "provider": "simulator", "config": {"rate_limit": NaN}}'
    assert errors(admin.post("/v1/accounts", content=account, headers=JSON_TYPE)) == {
        "config.rate_limit": NOT_FINITE_MESSAGE
    }
    action = b'{"action": "stop", "wait": true, "timeout": Infinity}'
    path = f"/v1/instances/{uuid.uuid4()}/actions"
    assert errors(admin.post(path, content=action, headers=JSON_TYPE)) == {
        "timeout": NOT_FINITE_MESSAGE
    }
    assert admin.get("/v1/accounts/nan").status_code == 404


def test_nul_characters_are_a_422_naming_the_field_wherever_they_come(
    admin: httpx.Client,
) -> None:
    """A NUL in a body field (at any depth), a path id or a query parameter: 422 naming it,
    and nothing stored. (PostgreSQL stores NUL nowhere: each of these was a 500 there.)"""
    hook = {"url": "https://93.184.216.34/h", "filters": {"instances": [str(uuid.uuid4())]}}
    cases = [
        (
            "POST",
            "/v1/orders",
            new_order(instance={"user_data": "a\x00b"}),
            "instances.0.user_data",
        ),
        ("POST", "/v1/orders", new_order(image="img\x00"), "image"),
        ("POST", "/v1/subscriptions", {**hook, "description": "\x00"}, "description"),
        ("POST", "/v1/subscriptions", {**hook, "url": "https://93.184.216.34/\x00"}, "url"),
        ("PATCH", "/v1/accounts/simulator", {"config": {"fast": "\x00"}}, "config.fast"),
        ("POST", "/v1/tokens", {"name": "t", "scopes": ["read\x00"]}, "scopes.0"),
        ("GET", "/v1/accounts/a%00b", None, "name"),
        ("DELETE", "/v1/tokens/a%00b", None, "name"),
        ("GET", "/v1/instances?account=a%00b", None, "account"),
        ("GET", "/v1/instances?label=a%00=b", None, "label"),
        ("GET", "/v1/realms?account=%00", None, "account"),
        ("GET", "/v1/events?account=%00", None, "account"),
    ]
    for method, path, body, field in cases:
        response = admin.request(method, path, json=body)
        assert errors(response) == {field: NUL_MESSAGE}, (method, path)
    assert admin.get("/v1/accounts/simulator").json()["config"].get("fast") != "\x00"


def test_a_moment_its_time_zone_pushes_past_the_calendar_is_a_422_naming_it(
    admin: httpx.Client,
) -> None:
    """``credentials_expire_at`` in year 1 at +14:00 or in 9999 at -14:00 has no UTC moment:
    422 naming it, on create and on update (it was a 500 when stored)."""
    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        body = {"name": "dated", "provider": "simulator", "credentials_expire_at": moment}
        created = admin.post("/v1/accounts", json=body)
        assert set(errors(created)) == {"credentials_expire_at"}
        patch = {"credentials": {"k": "v"}, "credentials_expire_at": moment}
        patched = admin.patch("/v1/accounts/simulator", json=patch)
        assert set(errors(patched)) == {"credentials_expire_at"}


# --- user data and names ---------------------------------------------------------------------


def test_user_data_is_limited_to_16_kib_counted_in_bytes(admin: httpx.Client) -> None:
    """Exactly 16 KiB of user data is accepted; one byte more, on the instance or the order,
    is a 422 naming that field; 16 KiB + 2 bytes of two-byte characters is over too."""
    exact = admin.post("/v1/orders", json=new_order(instance={"user_data": "x" * 16384}))
    assert exact.status_code == 202, exact.text
    over = "x" * (MAX_USER_DATA_BYTES + 1)
    refused = errors(admin.post("/v1/orders", json=new_order(instance={"user_data": over})))
    assert refused == {"instances.0.user_data": "is 16385 bytes; the limit is 16384 bytes (16 KiB)"}
    assert set(errors(admin.post("/v1/orders", json=new_order(user_data=over)))) == {"user_data"}
    wide = "é" * (MAX_USER_DATA_BYTES // 2 + 1)
    assert set(errors(admin.post("/v1/orders", json=new_order(user_data=wide)))) == {"user_data"}


FULL_WIDTH = "\uff57\uff45\uff42"  # "web" in full-width letters
UNICODE_NAMES = ["wéb-1", "ünï", "网站", "web\u200b1", "١٢٣", FULL_WIDTH, "web-1\u0301", "😀"]


def test_unicode_names_are_refused_by_the_name_rules_and_unicode_text_is_kept(
    admin: httpx.Client,
) -> None:
    """Names (instances, tokens, accounts) are ASCII letters, digits, '.', '_' and '-': any
    other character, accented, CJK, Arabic digits, full-width, zero-width or emoji, is a 422
    naming the field. Free text (label values, a description) keeps unicode as given, and a
    unicode name in a path names nothing (404)."""
    for name in UNICODE_NAMES:
        order = errors(admin.post("/v1/orders", json=new_order(instance={"name": name})))
        assert order["instances.0.name"].startswith(NAME_RULE), name
        token = admin.post("/v1/tokens", json={"name": name, "scopes": ["read"]})
        assert set(errors(token)) == {"name"}, name
        account = admin.post("/v1/accounts", json={"name": name, "provider": "simulator"})
        assert set(errors(account)) == {"name"}, name
        assert problem(admin.get(f"/v1/accounts/{name}"), 404)["title"] == "Not found"
        assert problem(admin.delete(f"/v1/tokens/{name}"), 404)["title"] == "Not found"
    labels = {"role": "wéb ☃ 网站 😀", "note": f"١٢٣ {FULL_WIDTH}"}
    created = admin.post("/v1/orders", json=new_order(labels=labels, instance={"name": "web-1"}))
    assert created.status_code == 202, created.text
    instance = created.json()["instances"][0]["uuid"]
    assert admin.get(f"/v1/instances/{instance}").json()["labels"] == labels
    described = admin.post(
        "/v1/subscriptions",
        json={
            "url": "https://93.184.216.34/h",
            "description": "crochets « » et 😀",
            "filters": {"instances": [instance]},
        },
    )
    assert described.status_code == 201, described.text
    read = admin.get(f"/v1/subscriptions/{described.json()['id']}").json()
    assert read["description"] == "crochets « » et 😀"


# --- page parameters and numbers -------------------------------------------------------------

OUT_OF_RANGE = {"limit": ["0", "-1", "1001", str(10**30), "abc", "1.5", ""], "after": ["-1"]}
OUT_OF_RANGE["after"] += [str(2**63), str(10**30), "abc", "1.5", "1e3"]
LARGEST = {"limit": 1000, "after": 2**63 - 1}


def test_every_page_parameter_out_of_range_or_not_a_number_is_a_422_naming_it(
    admin: httpx.Client, document: dict[str, Any]
) -> None:
    """For every operation of the document that takes ``limit`` or ``after``: zero or
    negative, over the maximum, enormous, or not an integer at all, is a 422 naming that
    parameter; the largest allowed values are answered."""
    checked = set()
    for method, template, operation in operations(document):
        taken = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        path = concrete(template, operation)
        for name in taken & set(OUT_OF_RANGE):
            checked.add((method, template, name))
            for value in OUT_OF_RANGE[name]:
                response = admin.request(method, path, params={name: value})
                assert set(errors(response)) == {name}, (method, template, name, value)
        largest = {k: v for k, v in LARGEST.items() if k in taken}
        if largest and "{" not in template and not template.endswith("/stream"):
            response = admin.request(method, path, params=largest)
            assert response.status_code == 200, (method, template, response.text)
    assert {t for _, t, _ in checked} >= {"/v1/orders", "/v1/instances", "/v1/events"}


def test_enormous_and_negative_numbers_in_bodies_are_422s_naming_them_or_are_clamped(
    admin: httpx.Client,
) -> None:
    """Bounded numbers beyond their bounds, either way, are a 422 naming the field (in an
    order, an action, a replay, a rotation, a delivery id); a hardware override is not
    bounded but ruled by the profile: on a range it is clamped, and what is stored is what
    the profile grants."""
    enormous, negative = 10**30, -(10**30)
    order_fields = ["launch_timeout", "credentials_ttl", "max_attempts", "memory", "cpu"]
    for value in (enormous, negative, 0):
        for field in order_fields:
            if field in ("memory", "cpu") and value == enormous:
                continue  # checked below: the profile decides
            response = admin.post("/v1/orders", json=new_order(**{field: value}))
            assert field in errors(response), (field, value)
        action = {"action": "stop", "wait": True, "timeout": value}
        path = f"/v1/instances/{uuid.uuid4()}/actions"
        assert set(errors(admin.post(path, json=action))) == {"timeout"}
        replay = {"after": value if value < 0 else 2**63, "limit": value}
        subscription = f"/v1/subscriptions/{uuid.uuid4()}"
        assert set(errors(admin.post(f"{subscription}/replay", json=replay))) == {"after", "limit"}
        grace = {"grace_seconds": value}
        if value:
            assert set(errors(admin.post(f"{subscription}/rotate-secret", json=grace))) == {
                "grace_seconds"
            }
    for delivery in (-1, 0, 2**63):
        assert set(errors(admin.post(f"/v1/deliveries/{delivery}/retry"))) == {"delivery_id"}
    clamped = admin.post("/v1/orders", json=new_order(hardware_profile="medium", memory=enormous))
    assert clamped.status_code == 202, clamped.text
    assert clamped.json()["instances"][0]["hardware"]["memory"] == 8192
