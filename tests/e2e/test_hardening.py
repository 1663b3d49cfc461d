"""What an outside audit found loose, each shut over the live API: weak webhook secrets, webhook
URLs shown whole to tokens below admin, and a database file others could read."""

from __future__ import annotations

import base64
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_server import LiveApi

from cloudstate.embedded import CloudState
from cloudstate.exceptions import ValidationError
from cloudstate.service import accounts
from cloudstate.webhooks.signing import generate_secret

HOOK = "https://93.184.216.34/hook"
NOBODY = {"instances": [str(uuid.uuid4())]}
"""A filter no event matches: the tests' hooks are never called."""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("hardening")) as live:
        yield live


@pytest.mark.parametrize(
    "secret",
    ["whsec_AQ", "whsec_" + base64.b64encode(b"k" * 23).decode(), base64.b64encode(b"x").decode()],
)
def test_webhook_secrets_shorter_than_24_bytes_are_refused_on_create_and_rotation(
    api: LiveApi, secret: str
) -> None:
    """422 naming ``secret``, and nothing is stored; Standard Webhooks secrets are 24 to 64
    bytes, and a 1-byte HMAC key is guessable."""
    writer = api.client(api.tokens.write)
    before = len(writer.get("/v1/subscriptions").json())
    created = writer.post(
        "/v1/subscriptions", json={"url": HOOK, "secret": secret, "filters": NOBODY}
    )
    assert created.status_code == 422, created.text
    assert [e["field"] for e in created.json()["errors"]] == ["secret"]
    assert len(writer.get("/v1/subscriptions").json()) == before

    hook = writer.post("/v1/subscriptions", json={"url": HOOK, "filters": NOBODY}).json()
    rotated = writer.post(f"/v1/subscriptions/{hook['id']}/rotate-secret", json={"secret": secret})
    assert rotated.status_code == 422, rotated.text
    assert [e["field"] for e in rotated.json()["errors"]] == ["secret"]


def test_a_webhook_secret_of_24_bytes_is_accepted(api: LiveApi) -> None:
    writer = api.client(api.tokens.write)
    secret = "whsec_" + base64.b64encode(b"s" * 24).decode()
    created = writer.post(
        "/v1/subscriptions", json={"url": HOOK, "secret": secret, "filters": NOBODY}
    )
    assert created.status_code == 201, created.text
    unpadded = base64.b64encode(b"t" * 25).decode().rstrip("=")  # prefix and padding optional
    assert writer.post(
        "/v1/subscriptions", json={"url": HOOK, "secret": unpadded, "filters": NOBODY}
    ).is_success


def test_the_embedded_api_refuses_a_short_webhook_secret_too(tmp_path: Path) -> None:
    with CloudState(home=tmp_path / "home", simulator_fast=True) as cs:
        with pytest.raises(ValidationError) as caught:
            accounts.add_subscription(cs.store, "http", HOOK, secret="whsec_AQ")
        assert caught.value.errors[0].field == "secret"
        good = accounts.add_subscription(cs.store, "http", HOOK, secret=generate_secret(24))
        assert good.target == HOOK


def test_webhook_urls_with_credentials_are_redacted_below_admin(api: LiveApi) -> None:
    """A URL carrying a user, password, query token or fragment is shown whole to admin
    tokens only; read and write tokens see scheme, host, port and path, the rest redacted
    (list, get, and the writer's own create, update and rotate answers)."""
    token = "tok-" + uuid.uuid4().hex
    url = f"https://hookuser:pw-{token}@93.184.216.34:8443/in?token={token}#frag-{token}"
    admin, writer, reader = (
        api.client(t) for t in (api.tokens.admin, api.tokens.write, api.tokens.read)
    )
    created = writer.post("/v1/subscriptions", json={"url": url, "filters": NOBODY})
    assert created.status_code == 201, created.text
    path = f"/v1/subscriptions/{created.json()['id']}"
    redacted = "https://redacted@93.184.216.34:8443/in?redacted#redacted"
    below_admin = [
        created,
        reader.get(path),
        writer.get(path),
        writer.patch(path, json={"description": "x"}),
        writer.post(f"{path}/rotate-secret", json={"grace_seconds": 0}),
    ]
    for answer in below_admin:
        assert answer.status_code in (200, 201), answer.text
        assert answer.json()["url"] == redacted
        assert token not in answer.text
    listed = reader.get("/v1/subscriptions")
    assert token not in listed.text
    assert redacted in [s["url"] for s in listed.json()]
    assert admin.get(path).json()["url"] == url
    assert url in [s["url"] for s in admin.get("/v1/subscriptions").json()]
    plain = writer.post("/v1/subscriptions", json={"url": HOOK, "filters": NOBODY}).json()
    assert reader.get(f"/v1/subscriptions/{plain['id']}").json()["url"] == HOOK


def test_the_sqlite_database_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Created 0600 (it holds user data), like the key file; one created 0644 by an older
    version is tightened at the next start."""
    home = tmp_path / "home"
    with CloudState(home=home, simulator_fast=True) as cs:
        order = {"image": "img-basic", "hardware_profile": "small"}
        cs.launch(order, instances=[{"uuid": str(uuid.uuid4())}])
        files = sorted(home.glob("cloudstate.db*"))
        assert {f.name for f in files} >= {"cloudstate.db", "cloudstate.db-wal"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
    (home / "cloudstate.db").chmod(0o644)
    with CloudState(home=home, simulator_fast=True):
        assert stat.S_IMODE((home / "cloudstate.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("moment", [0, 1700000000, "0", "1700000000", "2030-01-01", 1.5])
def test_credentials_expire_at_must_be_an_rfc3339_date_time_string(
    api: LiveApi, moment: object
) -> None:
    """A number (or a string of one) was read as seconds since 1970 and put every instance of
    the account into ``unknown``/``credentials``; now it is a 422 naming the field, and the
    account is unchanged."""
    admin = api.client(api.tokens.admin)
    patched = admin.patch("/v1/accounts/simulator", json={"credentials_expire_at": moment})
    assert patched.status_code == 422, patched.text
    assert [e["field"] for e in patched.json()["errors"]] == ["credentials_expire_at"]
    assert "RFC 3339" in patched.json()["errors"][0]["message"]
    account = admin.get("/v1/accounts/simulator").json()
    assert (account["credentials_expire_at"], account["status"]) == (None, "ok")


def test_an_rfc3339_credentials_expiry_is_taken_in_utc(api: LiveApi) -> None:
    admin = api.client(api.tokens.admin)
    body = {"name": "dated-ok", "provider": "simulator", "config": {"fast": True}}
    created = admin.post("/v1/accounts", json={**body, "credentials": {"k": "v" * 8}})
    assert created.status_code == 201, created.text
    moment = "2031-01-01T12:00:00+02:00"
    patched = admin.patch("/v1/accounts/dated-ok", json={"credentials_expire_at": moment})
    assert patched.status_code == 200, patched.text
    assert patched.json()["credentials_expire_at"].startswith("2031-01-01T10:00:00")


def test_a_method_a_path_does_not_take_is_405_with_an_allow_header(api: LiveApi) -> None:
    """RFC 9110: a 405 lists the methods the resource supports."""
    admin = api.client(api.tokens.admin)
    for method, path, allowed in [
        ("PUT", "/v1/instances", {"GET"}),
        ("DELETE", "/v1/orders", {"GET", "POST"}),
        ("POST", "/healthz", {"GET"}),
    ]:
        answer = admin.request(method, path)
        assert answer.status_code == 405, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed


def test_the_openapi_document_declares_the_rules_the_api_enforces(api: LiveApi) -> None:
    """Names, account names, label keys and values, page cursors, webhook URL schemes, webhook
    secrets and date-times: each pattern the API enforces is in the schema, so generated
    clients and fuzzers do not find them by trial."""
    document = api.client().get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    def prop(schema: str, name: str) -> dict[str, object]:
        found = schemas[schema]["properties"][name]
        options = found.get("anyOf", [found])
        return next(o for o in options if o.get("type") != "null")

    assert prop("AccountCreate", "name")["pattern"] == "^[a-z0-9][a-z0-9_-]{0,62}$"
    assert prop("TokenCreate", "name")["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
    labels = prop("SubscriptionFilterIn", "labels")
    assert labels["propertyNames"]["pattern"].startswith("^[a-z0-9]")  # type: ignore[index]
    assert labels["additionalProperties"]["maxLength"] == 255  # type: ignore[index]
    assert str(prop("SubscriptionCreate", "url")["pattern"]).startswith("^[Hh][Tt][Tt][Pp]")
    assert "pattern" in prop("SubscriptionCreate", "secret")
    assert "pattern" in prop("AccountUpdate", "credentials_expire_at")
    parameters = document["paths"]["/v1/instances"]["get"]["parameters"]
    cursor = next(p for p in parameters if p["name"] == "cursor")
    cursor_schema = next(o for o in cursor["schema"]["anyOf"] if o.get("type") == "string")
    assert cursor_schema["pattern"] == "^([A-Za-z0-9_-]{22}(==)?)?$"


def test_a_cursor_this_api_did_not_issue_is_a_422_on_cursor(api: LiveApi) -> None:
    reader = api.client(api.tokens.read)
    bad = reader.get("/v1/instances", params={"cursor": "not a cursor!"})
    assert bad.status_code == 422, bad.text
    assert [e["field"] for e in bad.json()["errors"]] == ["cursor"]
    assert reader.get("/v1/instances", params={"cursor": ""}).status_code == 200
